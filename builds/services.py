"""Builds services: push a version, publish it, read manifests, keep storage and database agreeing.

A push stages the build next to the game's trees, hashing every file while it copies it (memory
stays bounded whatever the build size), refuses a build identical to an existing version, then in
one transaction records the Version and its files; the depot symlink is switched to the new tree
only after the commit. A push that dies before the commit leaves a staging folder that the next
push sweeps away, and nothing visible changed.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import shutil
import stat
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from builds import objectstore, storage
from builds.jobs import ensure_job
from builds.launch import replace_options
from builds.locks import BackupInProgress, push_lock
from builds.models import FileEntry, Job, Version
from builds.signals import version_pushed, version_ready
from catalog.models import Game
from catalog.platforms import PlatformError, platform_or_default
from mistcore import safetar
from mistcore.errors import ArchiveError, MistCoreError
from mistcore.fsutil import atomic_write, copy_stream, fsync_dir, sha256_bytes
from mistcore.launch import LAUNCH_FILE, LaunchConfigError, check_against, parse_launch_file
from mistcore.launch import LaunchOption as LaunchOptionData
from mistcore.manifest import FileRecord, Manifest, PathSet, validate_relpath, validate_version_name
from mistcore.platforms import PLATFORMS

logger = logging.getLogger("mist.builds")

# A pushed archive is the admin's own file, but still bounded: a zip bomb must not fill the NAS.
MAX_BUILD_MEMBERS = 1_000_000
# The ceiling on one build's expanded size lives in settings (MIST_MAX_BUILD_BYTES, 256 GiB by default);
# a push is also measured against the storage disk's free space before its first byte is written.

Progress = Callable[[int], None]


class BuildError(Exception):
    """A push or version change refused for a reason the admin can fix; the message says which."""


class PushBlocked(BuildError):
    """A push that cannot run right now (a backup holds the push lock): retry later."""


@dataclass
class PushResult:
    version: Version
    queued: list[Job] = field(default_factory=list)


# --- Reading a build (directory, zip, tar, tar.gz, tar.zst) ---------------------------------

Member = tuple[str, IO[bytes], bool]  # path, reader, executable


def _iter_directory(root: Path) -> Iterator[Member]:
    def walk(folder: Path, prefix: str) -> Iterator[Member]:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                raise BuildError(f"{rel}: symbolic links are not allowed in a build")
            if stat.S_ISDIR(st.st_mode):
                yield from walk(Path(entry.path), rel + "/")
            elif stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    # A hard link may share its inode with a file outside the build.
                    raise BuildError(f"{rel}: hard links are not allowed in a build")
                with open(entry.path, "rb") as fh:
                    yield rel, fh, bool(st.st_mode & stat.S_IXUSR)
            else:
                raise BuildError(f"{rel}: device files, fifos and sockets are not allowed in a build")

    yield from walk(root, "")


def _iter_zip(path: Path) -> Iterator[Member]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            mode = info.external_attr >> 16
            if info.is_dir():
                continue
            if stat.S_ISLNK(mode):
                raise BuildError(f"{info.filename}: symbolic links are not allowed in a build")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # zips made on Windows carry no type bits
                raise BuildError(f"{info.filename}: only regular files are allowed in a build")
            with zf.open(info) as fh:
                yield info.filename, fh, bool(mode & stat.S_IXUSR)


def _iter_tar_archive(path: Path, *, max_total_bytes: int | None = None) -> Iterator[Member]:
    limits = {"max_members": MAX_BUILD_MEMBERS, "max_total_bytes": max_total_bytes or settings.MIST_MAX_BUILD_BYTES}
    name = path.name.lower()
    if name.endswith((".tar.zst", ".tzst")):
        members = safetar.iter_tar_zst(path, **limits)
    elif name.endswith(".tar"):
        members = safetar.iter_tar(path, **limits)
    else:  # .tar.gz / .tgz
        members = safetar.iter_tar_fileobj(gzip.open(path, "rb"), **limits)  # type: ignore[arg-type]
    for rel, _size, reader in members:
        yield rel, cast(IO[bytes], reader), bool(reader.executable)  # MemberReader reads like a binary file


def iter_build(source: Path) -> Iterator[Member]:
    """Every file of a build, whatever its packaging, as (path, reader, executable)."""
    if source.is_dir():
        return _iter_directory(source)
    name = source.name.lower()
    if name.endswith(".zip"):
        return _iter_zip(source)
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst")):
        return _iter_tar_archive(source)
    raise BuildError(f"{source}: a build is a directory, a .zip or a .tar(.gz/.zst) file")


def expanded_size(source: Path, *, limit: int) -> int:
    """The bytes a build takes once copied, read from headers only (nothing is written); over `limit` stops early.

    A zip is measured from its central directory; a tar (plain, gz, zst) by walking its headers, which
    decompresses but never writes, and stops as soon as the running total passes `limit` (a bomb costs at
    most `limit` bytes of decoding, not its claimed size).
    """
    if source.is_dir():
        total = 0
        for dirpath, _dirs, files in os.walk(source):
            for f in files:
                total += os.lstat(os.path.join(dirpath, f)).st_size
        return total
    name = source.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(source) as zf:
                return sum(info.file_size for info in zf.infolist())
        total = 0
        for _rel, reader, _x in _iter_tar_archive(source, max_total_bytes=limit + 1):
            total += cast(safetar.MemberReader, reader).size  # unread member bytes are skipped, never written
        return total
    except ArchiveError as exc:
        if "over its limit" in str(exc):
            return limit + 1
        raise BuildError(f"cannot read the build: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise BuildError(f"cannot read the build: {exc}") from None


def check_build_fits(*, source: Path, dest: Path) -> int:
    """Refuse, before anything is written, a build over MIST_MAX_BUILD_BYTES or larger than the free disk."""
    ceiling = settings.MIST_MAX_BUILD_BYTES
    probe = dest
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free - settings.MIST_MIN_FREE_BYTES
    size = expanded_size(source, limit=min(ceiling, max(free, 0)))
    if size > ceiling:
        raise BuildError(f"{source.name}: the build expands to more than MIST_MAX_BUILD_BYTES ({ceiling} bytes); refused")
    if size > free:
        raise BuildError(
            f"{source.name}: the build expands to more than the storage disk's free space "
            f"({max(free, 0)} bytes after keeping MIST_MIN_FREE_BYTES={settings.MIST_MIN_FREE_BYTES}); "
            "free some space or raise the disk, nothing was written"
        )
    return size


def _stage_build(*, source: Path, tree: Path, version: str, progress: Progress | None) -> Manifest:
    """Copy a build into `tree`, hashing while copying; validate every path on the way."""
    seen = PathSet(error=BuildError)
    records = []
    check_build_fits(source=source, dest=tree.parent)
    tree.mkdir(parents=True)
    try:
        for rel, reader, executable in iter_build(source):
            try:
                rel = validate_relpath(rel)
            except MistCoreError as exc:
                raise BuildError(str(exc)) from None
            seen.add(rel)
            target = tree.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
                size, sha = copy_stream(reader, out, progress=progress)
            if executable:
                os.chmod(target, 0o755)
            records.append(FileRecord(path=rel, size=size, sha256=sha, executable=executable))
    except BuildError:
        raise
    except OSError as exc:
        if exc.errno == 28:
            raise BuildError(f"the storage disk is full while copying the build ({exc})") from exc
        raise BuildError(f"cannot read the build: {exc}") from exc
    except Exception as exc:
        # A corrupt archive surfaces as whatever its decoder raises (zlib, lzma, struct, unsupported
        # zip methods...): all of them mean the same thing to the admin.
        logger.warning("unreadable build", exc_info=True, extra={"source": str(source)})
        raise BuildError(f"cannot read the build: {exc.__class__.__name__}: {exc}") from exc
    if not records:
        raise BuildError(f"{source}: the build is empty (no files)")
    # One sync for the whole tree (an fsync per file cost most of the push time), before the
    # database commit makes the version exist.
    os.sync()
    return Manifest(version=version, files=tuple(records))


def _adopt_staged(source: Path, staging: Path, manifest: Manifest, name: str) -> Manifest | None:
    """Move a tree already checked against `manifest` to `staging`; None when it is on another filesystem
    (then it is copied and hashed like any build)."""
    if manifest.version != name:
        raise BuildError(f"the staged manifest is for version {manifest.version!r}, not {name!r}")
    try:
        os.rename(source, staging)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return None
        raise BuildError(f"cannot move the assembled build into place: {exc}") from exc
    os.sync()  # as _stage_build: the files are on disk before the database commit makes the version exist
    return manifest


# --- Pushing ----------------------------------------------------------------------------------


def sweep_staging(*, game: Game, platform: str) -> list[str]:
    """Remove what dead pushes of the platform's builds left behind, and point its depot at the latest."""
    removed = []
    trees = storage.trees_dir(game.slug, platform)
    if trees.is_dir():
        known = set(game.versions.filter(platform=platform).values_list("name", flat=True))
        for entry in trees.iterdir():
            if entry.name.startswith(".staging-") or (entry.is_dir() and entry.name not in known):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    latest = latest_version(game=game, platform=platform)
    if latest is not None and storage.tree_dir(game.slug, platform, latest.name).is_dir():
        point_depot(game=game, version=latest)
    return removed


def point_depot(*, game: Game, version: Version) -> None:
    """Atomically switch the platform's `depot` to the given version's tree (a symlink swap is one rename)."""
    depot = storage.depot_dir(game.slug, version.platform)
    target = Path("trees") / version.name
    if depot.is_symlink() and Path(os.readlink(depot)) == target:
        return
    tmp = depot.with_name(f".depot-{uuid.uuid4().hex}")
    os.symlink(target, tmp)
    os.replace(tmp, depot)
    fsync_dir(depot.parent)


def latest_version(*, game: Game, platform: str) -> Version | None:
    """The newest build of the game for a platform (whatever its status)."""
    return game.versions.filter(platform=platform).order_by("-seq").first()


def game_platforms(*, game: Game) -> list[str]:
    """The platforms the game has builds for, in PLATFORMS order."""
    present = set(game.versions.values_list("platform", flat=True).distinct())
    return [p for p in PLATFORMS if p in present]


def push_version(
    *,
    game: Game,
    name: str,
    source: Path,
    notes: str = "",
    user: Any = None,
    publish: bool = True,
    progress: Progress | None = None,
    platform: str | None = None,
    staged: Manifest | None = None,
) -> PushResult:
    """Push a build as the newest version of the game for a platform (default MIST_DEFAULT_PLATFORM).

    With `staged`, `source` is a tree on the storage disk that the caller built and checked against that
    manifest (a remote push's assembled tree, see builds.partial): it is moved into place, not copied."""
    try:
        validate_version_name(name)
        platform = platform_or_default(platform)
    except (MistCoreError, PlatformError) as exc:
        raise BuildError(str(exc)) from None
    source = Path(source)
    if not source.exists():
        raise BuildError(f"{source}: no such file or directory")
    if game.versions.filter(name=name, platform=platform).exists():
        raise BuildError(
            f"the {platform} build of version {name!r} of {game.slug} already exists: a version holds one build per platform"
        )
    try:
        with push_lock():
            return _push_locked(
                game=game, name=name, source=source, notes=notes, user=user, publish=publish, progress=progress,
                platform=platform, staged=staged,
            )
    except BackupInProgress as exc:
        raise PushBlocked(str(exc)) from None


def _push_locked(
    *, game: Game, name: str, source: Path, notes: str, user: Any, publish: bool, progress: Progress | None,
    platform: str, staged: Manifest | None = None,
) -> PushResult:
    sweep_staging(game=game, platform=platform)

    builds = game.versions.filter(platform=platform)
    trees = storage.trees_dir(game.slug, platform)
    trees.mkdir(parents=True, exist_ok=True)
    staging = trees / f".staging-{uuid.uuid4().hex}"
    try:
        manifest = _adopt_staged(source, staging, staged, name) if staged is not None else None
        if manifest is None:
            manifest = _stage_build(source=source, tree=staging, version=name, progress=progress)
        content_hash = manifest.content_hash()
        same = builds.filter(content_hash=content_hash).first()
        if same is not None:
            raise BuildError(
                f"this build is identical to version {same.name!r} of {game.slug} ({platform}): nothing to push"
            )
        launch = _launch_file_options(staging, manifest)  # refused before anything is stored
        manifest_bytes = manifest.to_json()
        manifest_file = storage.manifest_path(game.slug, platform, name)
        manifest_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(manifest_file) as fh:
            fh.write(manifest_bytes)
        os.rename(staging, storage.tree_dir(game.slug, platform, name))
        with transaction.atomic():
            locked = Game.objects.select_for_update().get(pk=game.pk)
            if locked.versions.filter(name=name, platform=platform).exists():
                raise BuildError(f"the {platform} build of version {name!r} of {game.slug} was pushed concurrently")
            parent = latest_version(game=locked, platform=platform)
            seq = (locked.versions.filter(platform=platform).aggregate(m=Max("seq"))["m"] or 0) + 1
            version = Version.objects.create(
                game=locked,
                name=name,
                platform=platform,
                seq=seq,
                parent=parent,
                status=Version.Status.PENDING,
                published=publish,
                notes=notes,
                file_count=len(manifest.files),
                total_size=manifest.total_size,
                content_hash=content_hash,
                manifest_sha256=sha256_bytes(manifest_bytes),
                pushed_by=user if getattr(user, "pk", None) else None,
            )
            FileEntry.objects.bulk_create(
                [
                    FileEntry(version=version, path=r.path, size=r.size, sha256=r.sha256, executable=r.executable)
                    for r in manifest.files
                ],
                batch_size=2000,
            )
            if launch is not None:
                replace_options(game=locked, platform=platform, options=launch)
            queued = queue_processing(version=version, user=user)
        # After the commit: a crash between the commit and this rename is mended by sweep_staging.
        point_depot(game=locked, version=version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        try:
            recorded = builds.filter(name=name).exists()
        except Exception:  # noqa: BLE001  the database is gone: we cannot tell whether the commit landed. Keep
            recorded = True  # the files (and the push's own error); the next push's sweep_staging removes them
        # if no row names them, and the version's first worker job points the depot if one does.
        if not recorded:
            shutil.rmtree(storage.tree_dir(game.slug, platform, name), ignore_errors=True)
            storage.manifest_path(game.slug, platform, name).unlink(missing_ok=True)
        raise
    logger.info(
        "version pushed",
        extra={"game": game.slug, "version": name, "platform": platform, "files": version.file_count, "bytes": version.total_size},
    )
    return PushResult(version=version, queued=queued)


def _launch_file_options(tree: Path, manifest: Manifest) -> list[LaunchOptionData] | None:
    """The options of the build's `mist-launch.json`, checked against its files; None if it has none."""
    if LAUNCH_FILE not in manifest.by_path():
        return None
    try:
        options = parse_launch_file((tree / LAUNCH_FILE).read_bytes())
        for option in options:
            check_against(option, manifest)
    except LaunchConfigError as exc:
        raise BuildError(f"{exc} (fix {LAUNCH_FILE} at the build's root, or remove it)") from None
    return options


def queue_processing(*, version: Version, user: Any = None) -> list[Job]:
    """The jobs that make a pushed version ready: the base archive, or a direct delta (deltas app)."""
    if version.parent_id is None:
        job, _ = ensure_job(
            kind=Job.Kind.PROCESS_VERSION,
            key=f"base:{version.pk}",
            task="builds.tasks.process_base_version",
            game=version.game,
            version=version,
            requested_by=user,
        )
        return [job]
    jobs: list[Job] = []
    for _receiver, response in version_pushed.send(sender=Version, version=version, user=user):
        jobs.extend(response or [])
    if not jobs:
        raise BuildError("no worker job was queued for this version (is the deltas app installed?)")
    return jobs


def make_base_archive(*, version: Version) -> dict[str, Any]:
    """Write the immutable base archive of a game's first version (never rewritten once there)."""
    path = storage.base_archive_path(version.game.slug, version.platform, version.name)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tree = storage.tree_dir(version.game.slug, version.platform, version.name)
        if not tree.is_dir():
            raise BuildError(f"the tree of {version} is missing from the storage; cannot make its base archive")
        paths = list(version.files.values_list("path", flat=True))
        safetar.pack_tar_zst(root=tree, paths=paths, dst=path, level=19, threads=2)
    publish_manifest(version=version)
    objectstore.publish(path)  # MIST_STORAGE=s3: the base of every chain replay, in the bucket
    return {"base_archive": str(path.relative_to(storage.storage_root())), "size": path.stat().st_size}


def publish_manifest(*, version: Version) -> None:
    """MIST_STORAGE=s3: the version's manifest file in the bucket (rebuilt from the database if it is gone)."""
    if not objectstore.enabled():
        return
    path = storage.manifest_path(version.game.slug, version.platform, version.name)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as fh:
            fh.write(read_manifest(version=version).to_json())
    objectstore.publish(path, sha256=version.manifest_sha256 or None)


def mark_processing(*, version: Version) -> None:
    """The worker starts on a pushed version. Also mend a push that committed but died before pointing the
    depot at its tree (the database connection lost right at the commit): the worker's first job for the
    newest version points the depot at it, so the depot never lags behind the latest row for long."""
    Version.objects.filter(pk=version.pk, status=Version.Status.PENDING).update(status=Version.Status.PROCESSING)
    latest = latest_version(game=version.game, platform=version.platform)
    if latest is not None and latest.pk == version.pk and storage.tree_dir(
        version.game.slug, version.platform, version.name
    ).is_dir():
        point_depot(game=version.game, version=version)


def mark_ready(*, version: Version) -> None:
    """The version's worker jobs are done: it becomes visible (if published) and is announced."""
    with transaction.atomic():
        updated = Version.objects.filter(pk=version.pk).exclude(status=Version.Status.READY).update(
            status=Version.Status.READY, ready_at=timezone.now(), error=""
        )
        if updated:
            version.refresh_from_db()
            if version.published and version.published_at is None:
                Version.objects.filter(pk=version.pk).update(published_at=timezone.now())
                _queue_announce(version=version)
            transaction.on_commit(lambda: version_ready.send(sender=Version, version=version))


def mark_failed(*, version: Version, error: str) -> None:
    Version.objects.filter(pk=version.pk).update(status=Version.Status.FAILED, error=error[:5000])


def publish_version(*, version: Version, published: bool) -> Version:
    """Publish or unpublish a version; the first publication of a ready version is announced."""
    with transaction.atomic():
        version = Version.objects.select_for_update().get(pk=version.pk)
        version.published = published
        fields = ["published"]
        if published and version.status == Version.Status.READY and version.published_at is None:
            version.published_at = timezone.now()
            fields.append("published_at")
            _queue_announce(version=version)
        version.save(update_fields=fields)
    return version


def _queue_announce(*, version: Version) -> None:
    ensure_job(
        kind=Job.Kind.ANNOUNCE,
        key=f"announce:{version.pk}",
        task="builds.tasks.announce_version",
        game=version.game,
        version=version,
    )


def read_manifest(*, version: Version) -> Manifest:
    """The version's manifest as recorded in the database (the source the disk copy must match)."""
    files = version.files.order_by("path").values_list("path", "size", "sha256", "executable")
    return Manifest(
        version=version.name,
        files=tuple(FileRecord(path=p, size=s, sha256=h, executable=x) for p, s, h, x in files),
    )


def version_tree(*, version: Version) -> Path | None:
    """The version's files on the storage, when its tree is kept there (the latest, or pending deltas)."""
    tree = storage.tree_dir(version.game.slug, version.platform, version.name)
    return tree if tree.is_dir() else None
