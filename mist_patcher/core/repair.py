"""Verify an install against its manifest, and repair what is wrong (block-level where it pays)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.errors import IntegrityFailure
from mist_patcher.core.heal import HealReport, heal_into_stage
from mist_patcher.core.progress import ProgressCallback, ignore_progress
from mist_patcher.core.recovery import recover_install
from mist_patcher.core.staging import ChangeSet, SwitchIn
from mist_patcher.core.state import InstallRecord
from mist_patcher.core.verify import VerifyReport, verify_tree
from mistcore.journal import JOURNAL_NAME
from mistcore.manifest import Manifest


def verify_game(
    ctx: PatcherContext,
    *,
    slug: str,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
) -> VerifyReport:
    """Hash every file of the installed version (multi-threaded); changes nothing."""
    with ctx.state.lock(slug):
        record = ctx.state.require(slug)
        recover_install(ctx, record)
        record = ctx.state.require(slug)
        manifest = ctx.state.manifest(slug)
        report = verify_tree(
            record.folder, manifest, threads=ctx.settings.verify_threads, progress=progress, control=control
        )
        report.extra = [p for p in report.extra if p != JOURNAL_NAME]
        return report


@dataclass
class RepairResult:
    """What repair found and how it fixed it."""

    slug: str
    version: str
    before: VerifyReport
    block_level: list[str] = field(default_factory=list)
    whole: list[str] = field(default_factory=list)
    modes_fixed: list[str] = field(default_factory=list)
    downloaded: int = 0
    uploaded: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def repaired(self) -> list[str]:
        return sorted(self.block_level + self.whole)

    def to_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "version": self.version,
            "dry_run": self.dry_run,
            "found": self.before.to_dict(),
            "repaired_block_level": sorted(self.block_level),
            "repaired_whole": sorted(self.whole),
            "modes_fixed": sorted(self.modes_fixed),
            "downloaded_bytes": self.downloaded,
            "uploaded_bytes": self.uploaded,
            "seconds": round(self.seconds, 3),
            "notes": self.notes,
        }


def heal_damaged(
    ctx: PatcherContext,
    record: InstallRecord,
    manifest: Manifest,
    damaged: list[str],
    *,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
    note: Callable[[str], None] | None = None,
) -> HealReport:
    """Replace damaged files of the installed version in one journaled switch-in (lock held by the caller)."""
    with SwitchIn(ctx, record, target=manifest, changes=ChangeSet(written=damaged, removed=[])) as switch:
        healed = heal_into_stage(
            ctx, slug=record.slug, manifest=manifest, paths=damaged, source_root=record.folder,
            stage_dir=switch.stage_dir, progress=progress, control=control, note=note,
        )
        switch.commit(old_manifest=None, keep_rollback=False)
    after = verify_tree(record.folder, manifest, paths=damaged, find_extra=False, control=control)
    if not after.healthy:
        raise IntegrityFailure(f"{record.slug}: still damaged after repair: {', '.join(after.damaged[:5])}")
    return healed


def repair_game(
    ctx: PatcherContext,
    *,
    slug: str,
    dry_run: bool = False,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
    note: Callable[[str], None] | None = None,
) -> RepairResult:
    """Verify, then heal every damaged file through one journaled switch-in; never the whole game."""
    started = time.monotonic()
    with ctx.state.lock(slug):
        record = ctx.state.require(slug)
        recover_install(ctx, record)
        record = ctx.state.require(slug)
        manifest = ctx.state.manifest(slug)
        before = verify_tree(
            record.folder, manifest, threads=ctx.settings.verify_threads, progress=progress, control=control
        )
        before.extra = [p for p in before.extra if p != JOURNAL_NAME]
        result = RepairResult(slug=slug, version=record.version, before=before, dry_run=dry_run)
        if dry_run:
            return result
        records = manifest.by_path()
        for rel in before.wrong_mode:
            # Only the executable bit is off: no bytes need to travel.
            os.chmod(record.folder.joinpath(*rel.split("/")), 0o755 if records[rel].executable else 0o644)
            result.modes_fixed.append(rel)
        damaged = before.damaged
        if damaged:
            healed = heal_damaged(ctx, record, manifest, damaged, progress=progress, control=control, note=note)
            result.block_level, result.whole = healed.block_level, healed.whole
            result.downloaded, result.uploaded, result.notes = healed.downloaded, healed.uploaded, healed.notes
        result.seconds = time.monotonic() - started
        return result
