"""Undo the last update: from its kept reverse patch (the replaced files), else the server's cheapest route back
(a jump delta between exactly the two versions, made on demand; the chain, indirect or full where cheaper)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.errors import IntegrityFailure, PatcherError
from mist_patcher.core.heal import heal_into_stage
from mist_patcher.core.progress import ProgressCallback, ProgressMeter, ignore_progress
from mist_patcher.core.recovery import recover_install
from mist_patcher.core.staging import ChangeSet, SwitchIn, load_rollback, remove_tree, rollback_folder
from mist_patcher.core.update import update_game
from mist_patcher.core.verify import verify_tree
from mistcore.fsutil import link_or_copy


@dataclass
class RollbackResult:
    slug: str
    from_version: str
    to_version: str
    source: str  # "kept" (local reverse patch), else the server's route: "jump", "direct", "indirect" or "full"
    restored: int = 0
    downloaded: int = 0
    fetched: list[str] = field(default_factory=list)
    seconds: float = 0.0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "source": self.source,
            "restored_files": self.restored,
            "downloaded_bytes": self.downloaded,
            "fetched": self.fetched,
            "seconds": round(self.seconds, 3),
            "dry_run": self.dry_run,
        }


def rollback_game(
    ctx: PatcherContext,
    *,
    slug: str,
    dry_run: bool = False,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
    note: Callable[[str], None] | None = None,
) -> RollbackResult:
    """Go back to the version before the last update, without a full download."""
    started = time.monotonic()
    with ctx.state.lock(slug):
        record = ctx.state.require(slug)
        recover_install(ctx, record)
        record = ctx.state.require(slug)
        kept = load_rollback(ctx, record)
        if kept is not None:
            info, old_manifest, files = kept
            result = RollbackResult(slug, record.version, old_manifest.version, "kept", dry_run=dry_run)
            if dry_run:
                return result
            current = ctx.state.manifest(slug)
            changes = ChangeSet.between(current, old_manifest)
            with SwitchIn(ctx, record, target=old_manifest, changes=changes) as switch:
                stage = switch.stage_dir
                stage.mkdir(parents=True, exist_ok=True)
                meter = ProgressMeter(progress, phase="restore", total=len(changes.written), message=old_manifest.version)
                for rel in changes.written:
                    control.checkpoint()
                    src = files.joinpath(*rel.split("/"))
                    if src.is_file():
                        dst = stage.joinpath(*rel.split("/"))
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        link_or_copy(src, dst)
                        result.restored += 1
                    meter.advance(1)
                meter.finish()
                # Kept files the user had modified before the update, or not kept at all: heal them.
                report = verify_tree(stage, old_manifest, paths=changes.written, find_extra=False,
                                     progress=progress, control=control)
                bad = report.damaged + report.wrong_mode
                if bad:
                    healed = heal_into_stage(ctx, slug=slug, manifest=old_manifest, paths=bad,
                                             source_root=record.folder, stage_dir=stage, progress=progress,
                                             control=control, note=note)
                    result.downloaded, result.fetched = healed.downloaded, healed.block_level + healed.whole
                    result.restored -= len([p for p in bad if files.joinpath(*p.split("/")).is_file()])
                    if verify_tree(stage, old_manifest, paths=bad, find_extra=False).damaged:
                        raise IntegrityFailure(f"{slug}: could not rebuild version {old_manifest.version}")
                switch.commit(old_manifest=None, keep_rollback=False)
            remove_tree(rollback_folder(ctx, slug))
            result.seconds = time.monotonic() - started
            return result
        if not record.previous_version:
            raise PatcherError(f"{slug}: there is no earlier version to roll back to")
        target_version = record.previous_version
    # Nothing kept (over the size cap, or already used): an update back to that version, by the route the server's
    # planner finds cheapest (for an older version, a jump delta made on demand: patch size, not an indirect update).
    if note:
        note(f"no kept reverse patch for {slug}; updating back to {target_version} by the server's cheapest route")
    updated = update_game(ctx, slug=slug, version=target_version, dry_run=dry_run,
                          progress=progress, control=control, note=note)
    return RollbackResult(slug, updated.from_version, updated.to_version, updated.route, downloaded=updated.downloaded,
                          fetched=updated.fetched_whole, seconds=time.monotonic() - started, dry_run=dry_run)
