"""Run first by every command: finish or roll back whatever a killed patcher left half done."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.errors import InstallBusy, PatcherError
from mist_patcher.core.staging import finish_switch, remove_tree, stage_dir_for, work_dir_for
from mist_patcher.core.state import InstallRecord
from mistcore import journal
from mistcore.errors import MistCoreError


@dataclass
class Recovery:
    """What recovery did for one game: clean, rolled_back, rolled_forward, busy or failed."""

    slug: str
    outcome: str
    version: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"slug": self.slug, "outcome": self.outcome, "version": self.version, "detail": self.detail}


def _leftover_temp_folders(install: Path) -> list[Path]:
    # mistcore.fsutil.atomic_dir's temp siblings (an extraction that was killed) and unpacked
    # indirect bundles beside the stage.
    name = glob.escape(install.name)
    found: list[Path] = []
    for pattern in (f".{name}.tmp-*", f".{name}.mist-stage.bundle-*", f".{name}.mist-stage.tmp-*"):
        found.extend(Path(p) for p in glob.glob(str(install.parent / pattern)))
    return found


def recover_install(ctx: PatcherContext, record: InstallRecord) -> Recovery:
    """Bring one install back to exactly one version; call with the game's lock held."""
    install = record.folder
    outcome = "clean"
    detail = ""
    pending = ctx.state.pending_manifest(record.slug)
    found = journal.read_journal(install_root=install) if install.is_dir() else None
    if found is not None:
        outcome = journal.recover(install_root=install)
        if outcome == "rolled_forward":
            if pending is None or pending.version != found.target_version:
                # The files are the target version but its manifest was lost: fetch it again.
                pending = ctx.api.manifest(record.slug, found.target_version, platform=record.platform or None)
            finish_switch(ctx, record, pending)
            detail = f"finished the switch to {found.target_version}"
        else:
            detail = f"discarded the unfinished update to {found.target_version}; {record.version} is intact"
            if record.switching_to:
                record.switching_to = ""
                ctx.state.save(record)
    elif record.switching_to:
        # The journal is gone but the switch was under way: it finished (the journal is deleted
        # last), only the record was not updated yet.
        target = pending if pending is not None and pending.version == record.switching_to else None
        if target is None:
            target = ctx.api.manifest(record.slug, record.switching_to, platform=record.platform or None)
        finish_switch(ctx, record, target)
        outcome = "rolled_forward"
        detail = f"recorded the finished switch to {target.version}"
    # No journal (or it is gone now): stages, scratch space and pending manifests are leftovers.
    ctx.state.drop_pending_manifest(record.slug)
    for leftover in [stage_dir_for(install), work_dir_for(install), *_leftover_temp_folders(install)]:
        if leftover.exists():
            remove_tree(leftover)
            if outcome == "clean":
                outcome = "cleaned"
                detail = f"removed leftover {leftover.name}"
    return Recovery(record.slug, outcome, record.version, detail)


def recover_all(ctx: PatcherContext) -> list[Recovery]:
    """Recover every installed game not being worked on by another patcher right now."""
    results = []
    for record in ctx.state.all():
        try:
            with ctx.state.lock(record.slug):
                fresh = ctx.state.get(record.slug) or record
                results.append(recover_install(ctx, fresh))
        except InstallBusy:
            results.append(Recovery(record.slug, "busy", record.version, "another patcher is working on it"))
        except (MistCoreError, OSError, PatcherError) as exc:
            results.append(Recovery(record.slug, "failed", record.version, str(exc)))
    return results
