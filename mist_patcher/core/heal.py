"""Write correct copies of chosen files into a stage: block-level through the server's indirect
update (librsync signatures up, rdiff deltas down) where that pays, whole files otherwise.

Used by repair (damaged files of the installed version), by update (the indirect route) and by
every after-apply check that finds a file still wrong.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.errors import Cancelled, DiskFullError, PatcherError
from mist_patcher.core.progress import ProgressCallback, ProgressMeter, ignore_progress
from mistcore.delta import similar_bases
from mistcore.errors import MistCoreError
from mistcore.fsutil import sha256_file
from mistcore.indirect import apply_indirect_to_stage, signature_set
from mistcore.manifest import FileRecord, Manifest

# Below this size a whole file costs about as much as a signature round trip: fetch it whole.
WHOLE_FILE_BELOW = 64 * 1024


@dataclass
class HealReport:
    """How each file got its correct copy, and the bytes that crossed the wire for it."""

    block_level: list[str] = field(default_factory=list)
    whole: list[str] = field(default_factory=list)
    downloaded: int = 0
    uploaded: int = 0
    notes: list[str] = field(default_factory=list)


def staged_ok(stage_dir: Path, record: FileRecord) -> bool:
    """True if the stage holds ``record``'s exact content."""
    path = stage_dir.joinpath(*record.path.split("/"))
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size != record.size:
            return False
        return sha256_file(path) == record.sha256
    except OSError:
        return False


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(src, dst)
        os.unlink(src)


def fetch_whole(
    ctx: PatcherContext,
    *,
    slug: str,
    version: str,
    record: FileRecord,
    stage_dir: Path,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
) -> int:
    """Download one file of a version (``/dl/file/...``) into the stage; return the bytes fetched."""
    # Named by content under the state folder, so an interrupted fetch resumes on the next run.
    cache = ctx.state.downloads_dir / "files" / slug / record.sha256
    result = ctx.downloader.fetch(
        ctx.api.file_url(slug, version, record.path, platform=ctx.state.platform_of(slug)),
        cache,
        expected_size=record.size,
        expected_sha256=record.sha256,
        progress=progress,
        control=control,
        message=record.path,
    )
    dst = stage_dir.joinpath(*record.path.split("/"))
    _move(cache, dst)
    os.chmod(dst, 0o755 if record.executable else 0o644)
    return result.transferred


def heal_into_stage(
    ctx: PatcherContext,
    *,
    slug: str,
    manifest: Manifest,
    paths: list[str],
    source_root: Path,
    stage_dir: Path,
    block_level: bool = True,
    whole_below: int = WHOLE_FILE_BELOW,
    missing_via_indirect: bool = False,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
    note: Callable[[str], None] | None = None,
) -> HealReport:
    """Put a verified copy of each of ``paths`` (files of ``manifest``) into ``stage_dir``."""
    report = HealReport()
    records = manifest.by_path()
    wanted = [records[p] for p in sorted(set(paths))]
    stage_dir.mkdir(parents=True, exist_ok=True)

    def local(rec: FileRecord) -> Path:
        return source_root.joinpath(*rec.path.split("/"))

    indirect: list[FileRecord] = []
    if block_level:
        for rec in wanted:
            path = local(rec)
            present = path.is_file() and not path.is_symlink()
            if present and rec.size >= whole_below and path.stat().st_size > 0:
                indirect.append(rec)
            elif not present and missing_via_indirect:
                indirect.append(rec)
    if indirect:
        try:
            report.downloaded += _indirect(
                ctx, slug=slug, manifest=manifest, records=indirect, source_root=source_root,
                stage_dir=stage_dir, report=report, progress=progress, control=control,
            )
        except (Cancelled, DiskFullError):
            raise
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise
            _note(report, note, f"block-level repair failed ({exc}); fetching those files whole")
        except (MistCoreError, PatcherError) as exc:
            # A local file that changed under us, a failed job...: whole files still fix everything.
            _note(report, note, f"block-level transfer failed ({exc}); fetching those files whole")
        for rec in indirect:
            if staged_ok(stage_dir, rec):
                report.block_level.append(rec.path)
    for rec in wanted:
        if rec.path in report.block_level:
            continue
        report.downloaded += fetch_whole(
            ctx, slug=slug, version=manifest.version, record=rec, stage_dir=stage_dir,
            progress=progress, control=control,
        )
        report.whole.append(rec.path)
    return report


def _note(report: HealReport, note: Callable[[str], None] | None, message: str) -> None:
    report.notes.append(message)
    if note is not None:
        note(message)


def _similar_local(ctx: PatcherContext, slug: str, records: list[FileRecord], source_root: Path) -> dict[str, str]:
    try:
        installed = ctx.state.manifest(slug)
    except (PatcherError, MistCoreError, OSError):
        return {}
    missing = [r for r in records if not source_root.joinpath(*r.path.split("/")).exists()]
    found = similar_bases(installed, missing)
    return {path: basis for path, basis in found.items() if source_root.joinpath(*basis.split("/")).is_file()}


def _indirect(
    ctx: PatcherContext,
    *,
    slug: str,
    manifest: Manifest,
    records: list[FileRecord],
    source_root: Path,
    stage_dir: Path,
    report: HealReport,
    progress: ProgressCallback,
    control: Control,
) -> int:
    paths = [r.path for r in records]
    work = ctx.state.downloads_dir / "signatures"
    work.mkdir(parents=True, exist_ok=True)
    sig_tar = work / f"{slug}-{manifest.version}.sigs.tar"
    local_bytes = sum(source_root.joinpath(*p.split("/")).stat().st_size
                      for p in paths if source_root.joinpath(*p.split("/")).is_file())
    meter = ProgressMeter(progress, phase="signatures", total=local_bytes, message=f"{len(paths)} file(s)")
    meter.report()
    control.checkpoint()
    # Files missing here (a library renamed with a new build hash, a moved file) are diffed against a similar
    # local file instead of coming whole.
    bases = _similar_local(ctx, slug, records, source_root)
    signature_set(root=source_root, paths=paths, out_tar=sig_tar, bases=bases)
    meter.finish()
    try:
        report.uploaded += sig_tar.stat().st_size
        answer = ctx.api.request_indirect(
            slug, to_version=manifest.version, signatures=sig_tar, paths=paths, platform=ctx.state.platform_of(slug)
        )
    finally:
        sig_tar.unlink(missing_ok=True)
    server = ProgressMeter(progress, phase="server", total=100, message="the server is computing deltas")
    server.report()

    def on_job(job: dict) -> None:
        fraction = float(job.get("progress") or 0.0)
        server.done = int(100 * min(1.0, fraction if fraction <= 1 else fraction / 100))
        server.report(f"server job {job.get('status')}")

    result = ctx.api.wait_job(answer["job_url"], control=control, on_update=on_job)
    server.finish()
    bundle = ctx.state.downloads_dir / f"indirect-{slug}-{result['sha256'][:16]}.tar.zst"
    fetched = ctx.downloader.fetch(
        result["url"], bundle, expected_size=result.get("size"), expected_sha256=result.get("sha256"),
        progress=progress, control=control, message="indirect update",
    )
    try:
        apply_meter = ProgressMeter(progress, phase="patch", total=sum(r.size for r in records), message="rdiff")
        apply_meter.report()
        apply_indirect_to_stage(
            bundle=bundle, install_root=source_root, stage_dir=stage_dir,
            max_total_bytes=sum(r.size for r in records) + fetched.size + (16 << 20), bases=bases,
        )
        apply_meter.finish()
    finally:
        bundle.unlink(missing_ok=True)
    return fetched.transferred
