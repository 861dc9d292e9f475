"""Hash every installed file against the manifest, on several threads, with progress."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.progress import ProgressCallback, ProgressMeter, ignore_progress
from mistcore.manifest import FileRecord, Manifest

CHUNK = 1 << 20
POSIX_MODES = os.name == "posix"


@dataclass
class VerifyReport:
    """Which files of a manifest are right, changed, missing or have the wrong executable bit."""

    version: str
    checked: int = 0
    bytes_hashed: int = 0
    modified: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    wrong_mode: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def damaged(self) -> list[str]:
        """Files whose content must be fetched again (modified or missing)."""
        return sorted(self.modified + self.missing)

    @property
    def healthy(self) -> bool:
        return not (self.modified or self.missing or self.wrong_mode)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "healthy": self.healthy,
            "checked": self.checked,
            "bytes_hashed": self.bytes_hashed,
            "modified": sorted(self.modified),
            "missing": sorted(self.missing),
            "wrong_mode": sorted(self.wrong_mode),
            "extra": sorted(self.extra),
        }


def default_threads() -> int:
    # Hashing is I/O bound on spinning disks and CPU bound on SSDs; a few threads cover both.
    return max(2, min(8, (os.cpu_count() or 2)))


def _check_one(
    record: FileRecord, path: Path, meter: ProgressMeter, control: Control
) -> tuple[str, str]:
    """Return (path, verdict): ok, missing, modified, mode."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        meter.advance(record.size)
        return record.path, "missing"
    except NotADirectoryError:
        meter.advance(record.size)
        return record.path, "missing"
    if not stat.S_ISREG(st.st_mode):
        meter.advance(record.size)
        return record.path, "modified"
    if st.st_size != record.size:
        # Different size: no need to read it to know it is wrong.
        meter.advance(record.size)
        return record.path, "modified"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            control.checkpoint()
            digest.update(chunk)
            meter.advance(len(chunk))
    if digest.hexdigest() != record.sha256:
        return record.path, "modified"
    if POSIX_MODES and bool(st.st_mode & stat.S_IXUSR) != record.executable:
        return record.path, "mode"
    return record.path, "ok"


def verify_tree(
    root: Path,
    manifest: Manifest,
    *,
    locate: Callable[[str], Path] | None = None,
    threads: int = 0,
    progress: ProgressCallback = ignore_progress,
    control: Control = NEVER_CANCELLED,
    find_extra: bool = True,
    paths: list[str] | None = None,
) -> VerifyReport:
    """Check the files of ``manifest`` under ``root`` (or wherever ``locate`` says each one is)."""
    root = Path(root)
    locate = locate or (lambda rel: root.joinpath(*rel.split("/")))
    wanted = None if paths is None else set(paths)
    records = manifest.files if wanted is None else tuple(r for r in manifest.files if r.path in wanted)
    report = VerifyReport(version=manifest.version)
    meter = ProgressMeter(progress, phase="verify", total=sum(r.size for r in records), message=manifest.version)
    meter.report()
    buckets = {"missing": report.missing, "modified": report.modified, "mode": report.wrong_mode}
    with ThreadPoolExecutor(max_workers=threads or default_threads(), thread_name_prefix="verify") as pool:
        # Biggest first: the pool finishes together instead of one thread hashing the last big file alone.
        ordered = sorted(records, key=lambda r: -r.size)
        futures = [pool.submit(_check_one, r, locate(r.path), meter, control) for r in ordered]
        try:
            for future in futures:
                rel, verdict = future.result()
                report.checked += 1
                if verdict in buckets:
                    buckets[verdict].append(rel)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    report.bytes_hashed = meter.done
    for bucket in buckets.values():
        bucket.sort()
    if find_extra and paths is None and root.is_dir():
        known = {r.path for r in manifest.files}
        report.extra = sorted(p for p in walk_files(root) if p not in known)
    meter.finish()
    return report


def walk_files(root: Path) -> list[str]:
    """Relative POSIX paths of every file under ``root`` (links and special files included)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        out.extend(prefix + name for name in filenames)
        out.extend(prefix + d for d in dirnames if (Path(dirpath) / d).is_symlink())
    return out
