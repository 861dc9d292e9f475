"""Safe extraction of downloaded ``.tar.zst`` archives, with progress and cancel.

The member checks are ``mistcore.safetar``'s (``iter_tar_zst``: no absolute paths, no ``..``,
no links, no devices, size caps) and files are created by ``write_member`` (never following
links, never overwriting); this loop only adds progress, cancel and the atomic folder swap of
``extract_tar_zst``.
"""

from __future__ import annotations

from pathlib import Path

from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.progress import ProgressCallback, ProgressMeter, ignore_progress
from mistcore.errors import ArchiveError
from mistcore.fsutil import atomic_dir
from mistcore.manifest import Manifest
from mistcore.safetar import iter_tar_zst, write_member


def extract_archive(
    *,
    src: Path,
    dest: Path,
    manifest: Manifest,
    only: set[str] | None = None,
    into_stage: bool = False,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
) -> list[str]:
    """Extract a version's archive; it must hold exactly the manifest's files.

    By default ``dest`` must not exist and appears atomically when complete. With ``into_stage``
    the files go straight into an existing journal stage (which is discarded whole on failure),
    and ``only`` limits them to the paths the update changes.
    """
    dest = Path(dest)
    if into_stage:
        return _extract(src, dest, manifest, only, progress, control)
    if dest.exists() or dest.is_symlink():
        raise FileExistsError(f"{dest} already exists")
    with atomic_dir(dest) as tmp:
        names = _extract(src, tmp, manifest, only, progress, control)
    return names


def _extract(
    src: Path, dest: Path, manifest: Manifest, only: set[str] | None, progress: ProgressCallback, control: Control
) -> list[str]:
    expected = manifest.by_path()
    names: list[str] = []
    seen: set[str] = set()
    total = manifest.total_size if only is None else sum(expected[p].size for p in only if p in expected)
    meter = ProgressMeter(progress, phase="extract", total=total, message=manifest.version)
    meter.report()
    for name, size, member in iter_tar_zst(
        Path(src),
        max_members=2 * len(expected) + 1000,  # folder entries count as members too
        max_total_bytes=manifest.total_size,
    ):
        control.checkpoint()
        record = expected.get(name)
        if record is None:
            raise ArchiveError(f"{name!r}: the archive holds a file that is not in version {manifest.version}")
        if size != record.size:
            raise ArchiveError(f"{name!r}: {size} bytes in the archive, {record.size} in the manifest")
        seen.add(name)
        if only is not None and name not in only:
            continue  # unchanged by this update: the installed copy stays (tarfile skips the bytes)
        write_member(dest, name, member, size=size, executable=record.executable)  # type: ignore[arg-type]
        names.append(name)
        meter.advance(size)
    missing = set(expected) - seen
    if missing:
        raise ArchiveError(f"the archive lacks {len(missing)} file(s) of the version, e.g. {sorted(missing)[0]!r}")
    meter.finish()
    return names
