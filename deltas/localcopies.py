"""The storage disk as a bounded cache of the bucket (MIST_STORAGE=s3 with MIST_S3_LOCAL_BYTES).

With object storage every immutable artifact is in the bucket, so the local copies of the big ones (base
archives, direct delta bundles and their unpacked folders) are only a cache: chain replay fetches a base
archive or a bundle the disk lacks, verified, and unpacks the folder again (deltas.services). This module
drops local copies, oldest version first, until they take at most the budget. A copy goes only after the
bucket's object was checked (size and sha256 against the database, or against the local file for a base
archive), and the newest build of each platform keeps its copies (the next update's and the next push's).

The version trees (the depot, cached trees) stay under the cache budget as before; manifests stay (small).
Without a budget (the default, 0) nothing is dropped: the disk keeps a full copy.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from builds import objectstore, storage
from builds.models import Job, Version
from deltas.models import DirectDelta
from mistcore.fsutil import sha256_file

logger = logging.getLogger("mist.storage")


@dataclass(frozen=True)
class LocalCopy:
    what: str
    file: Path  # the artifact the bucket holds
    folder: Path | None  # its unpacked delta folder, dropped with it (rebuilt from the bundle)
    size: int  # bytes on the local disk (file and folder)
    sha256: str  # recorded; "" for a base archive (the local file is hashed to compare)
    recorded_size: int | None


@dataclass
class TrimReport:
    budget: int
    before: int = 0
    after: int = 0
    dropped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # over budget but not dropped, with the reason

    @property
    def freed(self) -> int:
        return self.before - self.after


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name), follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def local_copies() -> list[LocalCopy]:
    """The droppable local copies that exist, oldest version first (the newest build of a platform excluded)."""
    newest: dict[tuple[int, str], int] = {}
    for game_id, platform, seq in Version.objects.values_list("game_id", "platform", "seq"):
        newest[(game_id, platform)] = max(seq, newest.get((game_id, platform), 0))
    copies: list[tuple[int, LocalCopy]] = []
    bases = Version.objects.filter(parent__isnull=True, status=Version.Status.READY).select_related("game")
    for version in bases:
        if version.seq == newest[(version.game_id, version.platform)]:
            continue
        path = storage.base_archive_path(version.game.slug, version.platform, version.name)
        if path.is_file():
            copies.append((version.seq, LocalCopy(f"base archive {version.game.slug} {version.name} [{version.platform}]",
                                                  path, None, path.stat().st_size, "", None)))
    deltas = DirectDelta.objects.filter(status=DirectDelta.Status.READY).select_related(
        "from_version", "to_version", "to_version__game")
    for delta in deltas:
        to = delta.to_version
        if to.seq == newest[(to.game_id, to.platform)]:
            continue
        slug = to.game.slug
        bundle = storage.delta_bundle_path(slug, to.platform, delta.from_version.name, to.name)
        folder = storage.delta_dir(slug, to.platform, delta.from_version.name, to.name)
        size = (bundle.stat().st_size if bundle.is_file() else 0) + (_folder_bytes(folder) if folder.is_dir() else 0)
        if size:
            copies.append((to.seq, LocalCopy(f"delta {slug} {delta.from_version.name} -> {to.name} [{to.platform}]",
                                             bundle, folder, size, delta.bundle_sha256, delta.bundle_size)))
    copies.sort(key=lambda item: item[0])
    return [copy for _seq, copy in copies]


def _bucket_problem(copy: LocalCopy) -> str:
    """Why the bucket's object cannot stand in for the local copy ("" when it can)."""
    info = objectstore.head(objectstore.key_for(copy.file))
    if info is None:
        return "not in the bucket (`manage.py storage_sync` uploads it)"
    if copy.recorded_size is not None:
        if info.size != copy.recorded_size or info.sha256 != copy.sha256:
            return "the bucket's object differs from the recorded size or sha256"
        return ""
    if not copy.file.is_file():
        return "no local file to compare with"
    if info.size != copy.file.stat().st_size or info.sha256 != sha256_file(copy.file):
        return "the bucket's object differs from the local file"
    return ""


def _drop(copy: LocalCopy) -> None:
    if copy.folder is not None and copy.folder.is_dir():
        # Renamed first (under a name the delta job's leftover sweep also removes), so a half-removed folder
        # never looks like a finished one.
        trash = copy.folder.with_name(f".{copy.folder.name}.trash.tmp-{secrets.token_hex(4)}")
        os.rename(copy.folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    copy.file.unlink(missing_ok=True)


def trim_local_copies(*, budget: int | None = None, dry_run: bool = False) -> TrimReport:
    """Drop local copies the bucket holds, oldest first, until they take at most `budget` bytes
    (MIST_S3_LOCAL_BYTES by default; 0 there means no budget, 0 passed here drops every copy it may).
    Nothing happens on the filesystem backend."""
    unbounded = budget is None and int(settings.MIST_S3_LOCAL_BYTES) <= 0
    budget = max(0, int(settings.MIST_S3_LOCAL_BYTES if budget is None else budget))
    report = TrimReport(budget=budget)
    if not objectstore.enabled():
        return report
    copies = local_copies()
    report.before = report.after = sum(c.size for c in copies)
    if unbounded:
        return report
    for copy in copies:
        if report.after <= budget:
            break
        problem = _bucket_problem(copy)
        if problem:
            report.kept.append(f"{copy.what}: {problem}")
            continue
        if not dry_run:
            _drop(copy)
        report.after -= copy.size
        report.dropped.append(copy.what)
    if report.dropped and not dry_run:
        logger.info("local copies dropped", extra={"dropped": len(report.dropped), "freed": report.freed,
                                                    "budget": budget})
    return report


def trim_after_job(job: Job) -> None:
    """After a worker job wrote new artifacts: trim to MIST_S3_LOCAL_BYTES when no other job runs (a chain
    replay may be reading a copy). A failure here never fails the job."""
    if not objectstore.enabled() or int(settings.MIST_S3_LOCAL_BYTES) <= 0:
        return
    if Job.objects.filter(status=Job.Status.RUNNING).exclude(pk=job.pk).exists():
        return
    try:
        trim_local_copies()
    except Exception:  # noqa: BLE001 - the bucket or the disk misbehaving is logged, the job's work stands
        logger.exception("could not trim the local copies")
