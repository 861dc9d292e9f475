"""Downloads services: full archives, which file an artifact URL means, signed URLs, records.

Every artifact a user can download is named by (kind, slug, version, ref):

    archive   slug, platform, version                cache/archives/<slug>/<platform>/<version>.tar.zst (FullArchive)
    direct    slug, platform, ref="<from>__<to>"     storage/games/<slug>/<platform>/deltas/<from>__<to>.tar.zst
    indirect  ref="<job uuid>"                       cache/indirect/<job>.tar.zst (the Job's result)
    file      slug, platform, version, ref="<path>"  one file of a version: its tree or reconstructed copy

The platform is part of every artifact's identity (None means MIST_DEFAULT_PLATFORM): a build of
one platform never resolves to another platform's files.

`resolve_artifact` applies the access rules once for every kind: a game the user may not see is
a 404 like a missing game, and versions that are not ready+published are 404 for friends.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import Http404
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from builds import cache, objectstore, storage
from builds.access import visible_game, visible_version, visible_versions
from builds.jobs import JobFailed, ensure_job, retry_job
from builds.models import CacheEntry, FileEntry, Job, Version
from catalog.models import Game
from catalog.platforms import PlatformError, platform_or_default
from deltas import services as deltas_services
from deltas.models import DirectDelta
from downloads.models import DownloadRecord, FullArchive
from downloads.ranges import RangeDecision
from mistcore import safetar
from mistcore.errors import MistCoreError
from mistcore.manifest import validate_relpath

logger = logging.getLogger("mist.downloads")

KINDS = ("archive", "direct", "indirect", "file")
ARCHIVE_TASK = "downloads.tasks.build_archive"
# zstd level for full archives: built once per version and downloaded by every friend, so a
# better ratio is worth worker time; 2 threads is what this 2-core box can give one job.
ARCHIVE_LEVEL = 10
ARCHIVE_THREADS = 2
_SIGNATURE_SALT = "mist.downloads.signed-url"


class ArtifactPathError(Exception):
    """A file path parameter that is not a safe relative path (traversal, absolute, backslash)."""


class ArtifactMissing(Exception):
    """The database names an artifact whose file is not on disk (or not the recorded size)."""


class SignedURLError(Exception):
    """A signed download URL that is malformed, tampered with, expired or no longer valid."""


@dataclass(frozen=True)
class Artifact:
    """One downloadable file, after access checks: where it is and what the client can verify."""

    kind: str
    key: str  # what DownloadRecord.artifact says, e.g. "archive:game/1.0"
    game_slug: str
    path: Path  # absolute
    root: str  # "storage" or "cache": which internal nginx location serves it
    relpath: str  # relative to that root
    size: int
    sha256: str
    filename: str
    content_type: str
    cache_key: str | None = None  # the CacheEntry to touch when serving
    platform: str = ""  # whose build the bytes belong to

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


# --- Which file an artifact URL means ---------------------------------------------------------


def _located(path: Path) -> tuple[str, str]:
    """('storage' | 'cache', path relative to that root) for a path under one of the roots."""
    for name, root in (("cache", storage.cache_root()), ("storage", storage.storage_root())):
        try:
            return name, path.relative_to(root).as_posix()
        except ValueError:
            continue
    raise ArtifactMissing(f"{path} is outside the storage and cache roots")


def _archive_file(archive: FullArchive) -> Path:
    return storage.cache_root() / archive.relpath


def _evicted(archive: FullArchive) -> bool:
    """The cache let this archive go (entry and file gone); a file lost under its entry is not that."""
    return not _archive_file(archive).exists() and not CacheEntry.objects.filter(relpath=archive.relpath).exists()


def _archive_artifact(user: Any, slug: str, version_name: str, platform: str) -> Artifact:
    game = visible_game(user, slug)
    version = visible_version(user, game, version_name, platform)
    archive = FullArchive.objects.filter(version=version).first()
    if archive is None or _evicted(archive):
        # No row, or a row whose cache entry and file were evicted: not an error, just not built.
        raise Http404("Archive not built: POST to the version's archive API to build it.")
    path = _archive_file(archive)
    return Artifact(
        kind="archive",
        key=f"archive:{slug}/{version.name}",
        platform=platform,
        game_slug=slug,
        path=path,
        root="cache",
        relpath=archive.relpath,
        size=archive.size,
        sha256=archive.sha256,
        filename=f"{slug}-{version.name}-{platform}.tar.zst",
        content_type="application/zstd",
        cache_key=f"archive:{version.pk}",
    )


def _direct_artifact(user: Any, slug: str, pair: str, platform: str) -> Artifact:
    game = visible_game(user, slug)
    # Version names never contain "__" (mistcore.manifest.validate_version_name): one split.
    from_name, sep, to_name = pair.partition("__")
    if not sep or not from_name or not to_name:
        raise Http404("No such update.")
    # What the bundle delivers is the target version: it must be visible to the user.
    to_version = visible_version(user, game, to_name, platform)
    delta = (
        DirectDelta.objects.filter(
            from_version__game=game, from_version__platform=platform, from_version__name=from_name,
            to_version=to_version,
            status=DirectDelta.Status.READY,
        )
        .exclude(bundle_sha256="")
        .first()
    )
    if delta is None:
        return _jump_artifact(game, from_name, to_version, pair, platform)
    path = storage.delta_bundle_path(slug, platform, from_name, to_name)
    return _bundle_artifact(slug=slug, pair=pair, platform=platform, path=path, size=delta.bundle_size,
                            sha256=delta.bundle_sha256)


def _bundle_artifact(*, slug: str, pair: str, platform: str, path: Path, size: int, sha256: str,
                     cache_key: str | None = None) -> Artifact:
    """A delta bundle (push-time direct in storage, or a jump in the cache) at /dl/direct/<slug>/<platform>/<pair>."""
    root, relpath = _located(path)
    return Artifact(
        kind="direct",
        key=f"direct:{slug}/{pair}",
        platform=platform,
        game_slug=slug,
        path=path,
        root=root,
        relpath=relpath,
        size=size,
        sha256=sha256,
        filename=f"{slug}-{pair}-{platform}.tar.zst",
        content_type="application/zstd",
        cache_key=cache_key,
    )


def _indirect_artifact(user: Any, job_id: str) -> Artifact:
    job = Job.objects.select_related("game", "version").filter(pk=job_id, kind=Job.Kind.INDIRECT).first()
    if job is None or job.game is None or job.version is None:
        raise Http404("No such update.")
    game = visible_game(user, job.game.slug)
    if not visible_versions(user, game).filter(pk=job.version_id).exists():
        raise Http404("No such update.")
    if job.status != Job.Status.DONE:
        raise Http404(f"The update bundle is not ready (job {job.status}).")
    result = job.result or {}
    try:
        relpath = validate_relpath(str(result.get("path", "")))
        size = int(result["size"])
        sha256 = str(result["sha256"])
    except (MistCoreError, KeyError, TypeError, ValueError):
        raise ArtifactMissing(f"indirect job {job.pk} has no bundle in its result") from None
    return Artifact(
        kind="indirect",
        key=f"indirect:{job.pk}",
        platform=job.version.platform,
        game_slug=game.slug,
        path=storage.cache_root() / relpath,
        root="cache",
        relpath=relpath,
        size=size,
        sha256=sha256,
        filename=f"{game.slug}-{job.version.name}-update-{str(job.pk)[:8]}.tar.zst",
        content_type="application/zstd",
        cache_key=f"indirect:{job.pk}",
    )


def _file_artifact(user: Any, slug: str, version_name: str, relpath: str, platform: str) -> Artifact:
    try:
        validate_relpath(relpath)
    except MistCoreError as exc:
        raise ArtifactPathError(f"invalid file path: {exc}") from None
    game = visible_game(user, slug)
    version = visible_version(user, game, version_name, platform)
    entry = FileEntry.objects.filter(version=version, path=relpath).first()
    if entry is None:
        raise Http404("No such file in this version.")
    try:
        # The latest version's tree is on the storage; older ones come from the cache or are
        # rebuilt by chain replay (then cached), all inside reconstruct_version.
        tree = deltas_services.reconstruct_version(version=version)
    except (deltas_services.DeltaError, MistCoreError, OSError) as exc:
        raise ArtifactMissing(f"the files of {slug} {version.name} are not available: {exc}") from None
    path = storage.file_in_tree(Path(tree), relpath)
    root, rel = _located(path)
    return Artifact(
        kind="file",
        key=f"file:{slug}/{version.name}/{relpath}"[:500],
        platform=platform,
        game_slug=slug,
        path=path,
        root=root,
        relpath=rel,
        size=entry.size,
        sha256=entry.sha256,
        filename=relpath.rsplit("/", 1)[-1],
        content_type="application/octet-stream",
        cache_key=f"version:{version.pk}" if root == "cache" else None,
    )


def _jump_artifact(game: Any, from_name: str, to_version: Version, pair: str, platform: str) -> Artifact:
    """A jump delta (deltas.JumpDelta) under the same /dl/direct/ URL: it is a direct delta between two
    versions that are not parent and child, kept in the cache."""
    from_version = game.versions.filter(name=from_name, platform=platform).first()
    jump = None if from_version is None else deltas_services.ready_jump(from_version=from_version, to_version=to_version)
    if jump is None:
        raise Http404("No such update.")
    path = storage.jump_bundle_path(game.slug, platform, from_name, to_version.name)
    return _bundle_artifact(slug=game.slug, pair=pair, platform=platform, path=path, size=jump.bundle_size,
                            sha256=jump.bundle_sha256, cache_key=jump.cache_key)


def resolve_artifact(
    *, user: Any, kind: str, slug: str | None = None, version: str | None = None, ref: str | None = None,
    platform: str | None = None,
) -> Artifact:
    """The artifact a download URL names, if `user` may have it; Http404 otherwise."""
    try:
        platform = platform_or_default(platform)
    except PlatformError:
        raise Http404("No such platform.") from None
    if kind == "archive" and slug and version:
        return _archive_artifact(user, slug, version, platform)
    if kind == "direct" and slug and ref:
        return _direct_artifact(user, slug, ref, platform)
    if kind == "indirect" and ref:
        return _indirect_artifact(user, ref)
    if kind == "file" and slug and version and ref is not None:
        return _file_artifact(user, slug, version, ref, platform)
    raise Http404("No such artifact.")


def touch_artifact(*, artifact: Artifact) -> None:
    """Mark the artifact's cache entry as just used, so LRU eviction takes others first."""
    if artifact.cache_key:
        cache.touch(key=artifact.cache_key)


# --- Signed URLs --------------------------------------------------------------------------------


def artifact_url(*, kind: str, slug: str | None, version: str | None, ref: str | None, platform: str | None) -> str:
    """The /dl/ path of an artifact (with its platform segment)."""
    platform = platform_or_default(platform)
    if kind == "archive":
        return reverse("downloads:archive", kwargs={"slug": slug, "platform": platform, "version": version})
    if kind == "direct":
        return reverse("downloads:direct", kwargs={"slug": slug, "platform": platform, "pair": ref})
    if kind == "indirect":
        return reverse("downloads:indirect", kwargs={"job_id": ref})
    if kind == "file":
        return reverse(
            "downloads:file", kwargs={"slug": slug, "platform": platform, "version": version, "path": ref}
        )
    raise ValueError(f"unknown artifact kind {kind!r}; expected one of {', '.join(KINDS)}")


def _signature(
    *, user_id: int, expires: int, kind: str, slug: str | None, version: str | None, ref: str | None, platform: str
) -> str:
    # Bound to the artifact's identity (not the URL's spelling, which percent-encoding can vary).
    message = "\n".join([str(user_id), str(expires), kind, slug or "", version or "", str(ref or ""), platform])
    return salted_hmac(_SIGNATURE_SALT, message, algorithm="sha256").hexdigest()


def signed_download_url(
    *,
    user: Any,
    kind: str,
    slug: str | None = None,
    version: str | None = None,
    ref: str | None = None,
    ttl: int | None = None,
    platform: str | None = None,
) -> str:
    """A download URL that works without cookies or tokens for `user` until it expires."""
    path = artifact_url(kind=kind, slug=slug, version=version, ref=ref, platform=platform)
    expires = int(time.time()) + int(settings.MIST_SIGNED_URL_TTL if ttl is None else ttl)
    sig = _signature(
        user_id=user.pk, expires=expires, kind=kind, slug=slug, version=version, ref=ref,
        platform=platform_or_default(platform),
    )
    query = urlencode({"u": user.pk, "exp": expires, "sig": sig})
    base = settings.MIST_PUBLIC_URL.rstrip("/") if settings.MIST_PUBLIC_URL else ""
    return f"{base}{path}?{query}"


def user_for_signed_url(
    *, params: Any, kind: str, slug: str | None = None, version: str | None = None, ref: str | None = None,
    platform: str | None = None,
) -> Any:
    """The user a signed URL was issued to, if its signature is right and it is still valid."""
    user_text, exp_text, sig = params.get("u", ""), params.get("exp", ""), params.get("sig", "")
    if not (user_text.isascii() and user_text.isdigit() and exp_text.isascii() and exp_text.isdigit()):
        raise SignedURLError("malformed download link: u and exp must be numbers")
    if len(user_text) > 18 or len(exp_text) > 18:
        raise SignedURLError("malformed download link")
    try:
        platform = platform_or_default(platform)
    except PlatformError as exc:
        raise SignedURLError(str(exc)) from None
    expected = _signature(
        user_id=int(user_text), expires=int(exp_text), kind=kind, slug=slug, version=version, ref=ref,
        platform=platform,
    )
    if not constant_time_compare(expected, sig):
        raise SignedURLError("invalid download link signature")
    if int(exp_text) < time.time():
        raise SignedURLError("download link expired")
    user = get_user_model().objects.filter(pk=int(user_text)).first()
    if user is None or not user.is_active:
        raise SignedURLError("download link is no longer valid")
    return user


# --- Download records ----------------------------------------------------------------------------


def start_download(
    *, user: Any, artifact: Artifact, decision: RangeDecision, via_accel: bool, client: str = ""
) -> DownloadRecord:
    """Record that a response started serving bytes of an artifact."""
    requested = max(0, decision.length)
    record = DownloadRecord.objects.create(
        user=user if getattr(user, "pk", None) else None,
        kind=artifact.kind,
        artifact=artifact.key[:500],
        game_slug=artifact.game_slug[:64],
        platform=artifact.platform,
        size=artifact.size,
        range_start=decision.start,
        bytes_requested=requested,
        via_accel=via_accel,
        client=client[:200],
    )
    if via_accel:
        # nginx sends the bytes: what it was asked to send is all we can know.
        finish_download(record=record, bytes_served=requested)
    return record


def finish_download(*, record: DownloadRecord, bytes_served: int) -> None:
    """Record how many bytes a response handed out and whether the client now has the whole file."""
    reached_end = record.range_start + record.bytes_requested >= record.size
    completed = bytes_served >= record.bytes_requested and reached_end
    DownloadRecord.objects.filter(pk=record.pk).update(
        bytes_served=bytes_served, completed=completed, finished_at=timezone.now()
    )


# --- Full archives ----------------------------------------------------------------------------------


def _latest_ready(game: Game, platform: str) -> Version | None:
    return game.versions.filter(platform=platform, status=Version.Status.READY).order_by("-seq").first()


def _usable_archive(version: Version) -> FullArchive | None:
    archive = FullArchive.objects.filter(version=version).first()
    if archive is None:
        return None
    try:
        if _archive_file(archive).stat().st_size == archive.size:
            return archive
    except OSError:
        pass
    return None


def archive_result(*, archive: FullArchive) -> dict[str, Any]:
    """What the API says about a ready archive."""
    version = archive.version
    url = artifact_url(
        kind="archive", slug=version.game.slug, version=version.name, ref=None, platform=version.platform
    )
    return {"url": url, "size": archive.size, "sha256": archive.sha256}


def build_archive(*, version: Version) -> FullArchive:
    """Pack the version's files into cache/archives/<slug>/<platform>/<version>.tar.zst and record it."""
    game = version.game
    try:
        tree = Path(deltas_services.reconstruct_version(version=version))
    except deltas_services.DeltaError as exc:
        raise JobFailed(f"cannot get the files of {version}: {exc}") from None
    entries = list(version.files.order_by("path").values_list("path", "size"))
    for relpath, size in entries:
        # A tree that no longer matches the version (the storage changed under us) must not be
        # archived under this version's name: cheap size check here, sha256 verified by the patcher.
        try:
            actual = storage.file_in_tree(tree, relpath).stat().st_size
        except OSError:
            raise JobFailed(f"{version}: {relpath} is missing from its files on disk") from None
        if actual != size:
            raise JobFailed(f"{version}: {relpath} is {actual} bytes on disk, {size} in the database")
    dst = storage.archive_path(game.slug, version.platform, version.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    # The half-written temp file of an attempt that was killed (the job row makes this one the only live one).
    for leftover in dst.parent.glob(f".{dst.name}.tmp-*"):
        leftover.unlink(missing_ok=True)
    size, sha256 = safetar.pack_tar_zst(
        root=tree, paths=[p for p, _ in entries], dst=dst, level=ARCHIVE_LEVEL, threads=ARCHIVE_THREADS
    )
    objectstore.publish(dst, sha256=sha256, size=size)  # MIST_STORAGE=s3: downloads are presigned URLs of this
    latest = _latest_ready(game, version.platform)
    pinned = latest is not None and latest.pk == version.pk
    key = f"archive:{version.pk}"
    # The cache entry first, then the row: a FullArchive row without an entry means "evicted".
    entry = cache.register(key=key, path=dst, size=size, sha256=sha256, pinned=pinned)
    with transaction.atomic():
        archive, _ = FullArchive.objects.update_or_create(
            version=version, defaults={"relpath": entry.relpath, "size": size, "sha256": sha256}
        )
        if pinned:
            # Only the latest version's archive (of each platform) is kept whatever the budget.
            others = [
                f"archive:{pk}"
                for pk in game.versions.filter(platform=version.platform).exclude(pk=version.pk).values_list("pk", flat=True)
            ]
            CacheEntry.objects.filter(key__in=others, pinned=True).update(pinned=False)
    forget_evicted_archives()
    logger.info(
        "archive built",
        extra={"game": game.slug, "platform": version.platform, "version": version.name, "bytes": size, "pinned": pinned},
    )
    return archive


def _queue_archive(*, version: Version, user: Any = None) -> Job:
    job, created = ensure_job(
        kind=Job.Kind.ARCHIVE,
        key=f"archive:{version.pk}",
        task=ARCHIVE_TASK,
        game=version.game,
        version=version,
        requested_by=user,
        retry_failed=True,
    )
    if not created and job.status == Job.Status.DONE:
        # Built once, evicted since: build it again.
        job = retry_job(job)
    return job


def request_archive(*, version: Version, user: Any) -> tuple[FullArchive | None, Job | None]:
    """The version's archive if it is ready, else the job building it (queued if need be)."""
    archive = _usable_archive(version)
    if archive is not None:
        return archive, None
    # A row whose file is gone was evicted or lost: it no longer describes anything.
    FullArchive.objects.filter(version=version).delete()
    job = _queue_archive(version=version, user=user)
    archive = _usable_archive(version)  # the job may have finished between the two looks
    if archive is not None and job.status == Job.Status.DONE:
        return archive, None
    return None, job


def archive_status(*, version: Version) -> tuple[FullArchive | None, Job | None]:
    """Like request_archive, without starting any work: (archive, None), (None, active job) or (None, None)."""
    archive = _usable_archive(version)
    if archive is not None:
        return archive, None
    job = Job.objects.active().filter(key=f"archive:{version.pk}").first()
    return None, job


def on_version_ready(*, version: Version) -> Job | None:
    """A version became ready: if it is the game's latest, queue its (pinned) full archive."""
    version = Version.objects.select_related("game").get(pk=version.pk)
    if version.status != Version.Status.READY:
        return None
    latest = _latest_ready(version.game, version.platform)
    if latest is None or latest.pk != version.pk:
        return None  # an older version finishing late: archives of old versions are made on request
    if _usable_archive(version) is not None:
        return None
    return _queue_archive(version=version)


def version_ready_receiver(sender: Any, version: Version, **kwargs: Any) -> None:
    """builds.signals.version_ready receiver: never let an archive problem break the sender."""
    try:
        on_version_ready(version=version)
    except Exception:
        logger.exception("could not queue the archive of a ready version", extra={"version": version.pk})


def forget_evicted_archives() -> int:
    """Delete FullArchive rows whose cache entry and file were evicted; return how many."""
    orphans = FullArchive.objects.exclude(relpath__in=CacheEntry.objects.values("relpath"))
    gone = [a.pk for a in orphans if _evicted(a)]
    deleted, _ = FullArchive.objects.filter(pk__in=gone).delete()
    return deleted


def enforce_cache_budget(*, budget: int | None = None) -> list[str]:
    """Evict least-recently-used unpinned cache entries until the cache fits MIST_CACHE_BUDGET_BYTES."""
    evicted = cache.enforce_budget(budget=budget)
    forget_evicted_archives()
    return evicted


# --- Jobs as the API shows them -------------------------------------------------------------------


def job_as_dict(*, job: Job) -> dict[str, Any]:
    """A job for the API: status, progress, error and a result without server paths."""
    result = {k: v for k, v in (job.result or {}).items() if k not in ("path", "upload_dir")}
    if job.status == Job.Status.DONE:
        if job.kind == Job.Kind.INDIRECT and "url" not in result:
            result["url"] = reverse("downloads:indirect", kwargs={"job_id": job.pk})
    return {
        "id": str(job.pk),
        "kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "error": job.error,
        "result": result,
    }


def visible_job(*, user: Any, job_id: Any) -> Job:
    """A job whose game the user may see (jobs of no game: admins only); Http404 otherwise."""
    try:
        job_uuid = uuid.UUID(str(job_id))
    except ValueError:
        raise Http404("No such job.") from None
    job = Job.objects.select_related("game").filter(pk=job_uuid).first()
    if job is None:
        raise Http404("No such job.")
    if job.game_id is None:
        if not getattr(user, "is_staff", False):
            raise Http404("No such job.")
        return job
    if not Game.objects.visible_to(user).filter(pk=job.game_id).exists():
        raise Http404("No such job.")
    return job


__all__ = [
    "Artifact",
    "ArtifactMissing",
    "ArtifactPathError",
    "SignedURLError",
    "archive_result",
    "artifact_url",
    "archive_status",
    "build_archive",
    "enforce_cache_budget",
    "finish_download",
    "job_as_dict",
    "on_version_ready",
    "request_archive",
    "resolve_artifact",
    "signed_download_url",
    "start_download",
    "touch_artifact",
    "user_for_signed_url",
    "version_ready_receiver",
    "visible_job",
]
