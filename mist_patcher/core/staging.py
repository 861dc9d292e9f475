"""Staged, journaled changes of an install: every update, repair and rollback goes through here.

New files are written into a stage folder next to the install (same filesystem, so the
switch-in is a rename per file), under a ``mistcore.journal`` journal. The target manifest is
saved in the state folder *before* the journal starts, so whichever way recovery goes after a
crash (discard the stage, or finish the switch-in), the install record can follow it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.disk import free_bytes, is_disk_full
from mist_patcher.core.errors import DiskFullError
from mist_patcher.core.state import InstallRecord
from mistcore import journal
from mistcore.errors import MistCoreError
from mistcore.fsutil import _rmtree, atomic_write, link_or_copy
from mistcore.manifest import Manifest, diff_manifests

ROLLBACK_INFO = "rollback.json"


FAULT_ENV = "MIST_PATCHER_FAULT"


def fault_point(name: str) -> None:
    """Crash-test hook: SIGKILL this process at the named point when MIST_PATCHER_FAULT names it.

    The end-to-end tests use it to kill the patcher at the exact moments a random kill would
    rarely hit (just before and just after the switch-in); unset, it does nothing.
    """
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def stage_dir_for(install: Path) -> Path:
    """The stage folder of an install: a hidden sibling, on the same filesystem."""
    install = Path(install).absolute()
    return install.parent / f".{install.name}.mist-stage"


def work_dir_for(install: Path) -> Path:
    """Scratch space next to an install (unpacked bundles, intermediate versions of a chain)."""
    install = Path(install).absolute()
    return install.parent / f".{install.name}.mist-work"


def remove_tree(path: Path) -> None:
    if path.exists() or path.is_symlink():
        _rmtree(path)


@dataclass
class ChangeSet:
    """Which paths a switch-in writes and removes to turn ``old`` into ``target``."""

    written: list[str]
    removed: list[str]

    @classmethod
    def between(cls, old: Manifest, target: Manifest) -> ChangeSet:
        diff = diff_manifests(old, target)
        return cls(written=sorted(diff.added + diff.changed), removed=sorted(diff.removed))


class SwitchIn:
    """Context manager around one staged change; call ``commit`` inside it, anything else discards.

    On ENOSPC (or any error) while staging, the stage is discarded and the install is untouched;
    a full disk becomes ``DiskFullError("not enough disk space: need X, have Y")``.
    """

    def __init__(
        self,
        ctx: PatcherContext,
        record: InstallRecord,
        *,
        target: Manifest,
        changes: ChangeSet,
        stage_dir: Path | None = None,
        need_bytes: int = 0,
    ) -> None:
        self.ctx = ctx
        self.record = record
        self.target = target
        self.changes = changes
        self.install = record.folder
        self.stage_dir = Path(stage_dir) if stage_dir is not None else stage_dir_for(self.install)
        self.need_bytes = need_bytes
        self.committed = False

    def __enter__(self) -> SwitchIn:
        remove_tree(self.stage_dir)
        self.ctx.state.save_pending_manifest(self.record.slug, self.target)
        journal.begin(
            install_root=self.install,
            stage_dir=self.stage_dir,
            target_version=self.target.version,
            written=self.changes.written,
            removed=self.changes.removed,
            executable=[r.path for r in self.target.files if r.executable],
        )
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.committed or exc is None:
            if not self.committed and exc is None:
                self._abandon()
            return
        self._abandon()
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(
                need=self.need_bytes or self.target.total_size,
                have=free_bytes(self.install.parent),
                where=str(self.install.parent),
            ) from exc

    def _abandon(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            journal.discard(install_root=self.install)
        remove_tree(self.stage_dir)
        self.ctx.state.drop_pending_manifest(self.record.slug)

    def commit(self, *, old_manifest: Manifest | None, keep_rollback: bool = True) -> InstallRecord:
        """Switch the staged files in and record the new version (keeping the replaced files if asked)."""
        if keep_rollback and old_manifest is not None and old_manifest.version != self.target.version:
            save_rollback(self.ctx, self.record, old=old_manifest, target=self.target, changes=self.changes)
        fault_point("before-commit")
        # Recorded before the journal starts committing: the journal is deleted at the end of the
        # commit, so after a crash right then, this is what tells recovery the switch happened.
        self.record.switching_to = self.target.version
        self.ctx.state.save(self.record)
        journal.commit(install_root=self.install)
        self.committed = True
        fault_point("after-commit")
        return finish_switch(self.ctx, self.record, self.target)


def finish_switch(ctx: PatcherContext, record: InstallRecord, target: Manifest) -> InstallRecord:
    """After the files are in place: record the new version and its manifest, drop the pending one."""
    if record.version != target.version:
        record.previous_version = record.version
    record.version = target.version
    record.complete = True
    record.switching_to = ""
    ctx.state.save(record, target)
    ctx.state.drop_pending_manifest(record.slug)
    return record


def rollback_folder(ctx: PatcherContext, slug: str) -> Path:
    return ctx.state.rollback_dir / slug


def save_rollback(
    ctx: PatcherContext, record: InstallRecord, *, old: Manifest, target: Manifest, changes: ChangeSet
) -> bool:
    """Keep the files an update is about to replace (hardlinks when possible), within the size cap.

    Only the last update is kept. Over the cap nothing is kept and ``rollback`` falls back to an
    indirect update from the server.
    """
    folder = rollback_folder(ctx, record.slug)
    old_map = old.by_path()
    replaced = [p for p in changes.written + changes.removed if p in old_map]
    size = sum(old_map[p].size for p in replaced)
    remove_tree(folder)
    if size > ctx.settings.rollback_cap:
        return False
    tmp = folder.with_name(f".{folder.name}.tmp-{secrets.token_hex(6)}")
    try:
        files = tmp / "files"
        files.mkdir(parents=True)
        for rel in replaced:
            src = record.folder.joinpath(*rel.split("/"))
            if not src.is_file():
                continue  # already missing locally: rollback will fetch it
            dst = files.joinpath(*rel.split("/"))
            dst.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(src, dst)
        (tmp / "manifest.json").write_bytes(old.to_json())
        info = {
            "from_version": old.version,
            "to_version": target.version,
            "restore": sorted(replaced),
            "remove": sorted(p for p in changes.written if p not in old_map),
            "size": size,
        }
        with atomic_write(tmp / ROLLBACK_INFO, "w") as f:
            json.dump(info, f, indent=2)
        os.rename(tmp, folder)
    except BaseException:
        remove_tree(tmp)
        raise
    return True


def load_rollback(ctx: PatcherContext, record: InstallRecord) -> tuple[dict, Manifest, Path] | None:
    """The kept reverse patch of the last update, if it undoes exactly the installed version."""
    folder = rollback_folder(ctx, record.slug)
    try:
        info = json.loads((folder / ROLLBACK_INFO).read_text(encoding="utf-8"))
        manifest = Manifest.from_json((folder / "manifest.json").read_bytes())
    except (OSError, ValueError, MistCoreError):
        return None
    if info.get("to_version") != record.version or manifest.version != info.get("from_version"):
        return None
    return info, manifest, folder / "files"
