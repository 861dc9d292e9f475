"""Deltas services: direct deltas after a push, chain replay of historical versions, indirect
(librsync) updates, and the update planner.

The engines and formats are mistcore's, shared with the patcher; this module decides which trees
to diff, where results live, and records them in the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from builds import cache, objectstore, storage
from builds import services as builds_services
from builds.jobs import JobFailed, ensure_job, job_payload
from builds.locks import BackupInProgress, push_lock
from builds.manifest_cache import cached_manifest
from builds.models import CacheEntry, FileEntry, Job, Version
from catalog.models import Game
from deltas import plan_cache
from deltas.models import DirectDelta, JumpDelta
from mistcore import delta as mdelta
from mistcore import indirect as mindirect
from mistcore import safetar
from mistcore.errors import MistCoreError
from mistcore.fsutil import atomic_dir, clone_tree, sha256_file
from mistcore.journal import JOURNAL_NAME
from mistcore.manifest import Manifest, diff_manifests

logger = logging.getLogger("mist.deltas")


class DeltaError(Exception):
    """A delta request refused for a reason the caller can fix; the message says which."""


# --- Direct deltas -----------------------------------------------------------------------------


def queue_direct_delta(*, to_version: Version, user: Any = None, retry_failed: bool = False) -> Job:
    """Queue the job making the direct delta from the version's parent to it."""
    if to_version.parent_id is None:
        raise DeltaError(f"{to_version} is the base version: it has no direct delta")
    job, _ = ensure_job(
        kind=Job.Kind.DIRECT_DELTA,
        key=f"direct:{to_version.parent_id}:{to_version.pk}",
        task="deltas.tasks.make_direct_delta",
        game=to_version.game,
        version=to_version,
        requested_by=user,
        retry_failed=retry_failed,
    )
    return job


def regenerate_direct_delta(*, to_version: Version, user: Any = None) -> Job:
    """Admin action: make the version's direct delta again (after a failure or a storage repair)."""
    job = Job.objects.filter(key=f"direct:{to_version.parent_id}:{to_version.pk}").first()
    if job is not None and job.is_finished:
        job.delete()
    return queue_direct_delta(to_version=to_version, user=user)


def on_version_pushed(sender: Any, version: Version, user: Any = None, **kwargs: Any) -> list[Job]:
    """builds.signals.version_pushed receiver: a non-base version needs its direct delta."""
    return [queue_direct_delta(to_version=version, user=user)]


def make_direct_delta(*, to_version: Version) -> DirectDelta:
    """Write deltas/<parent>__<version>/ and its bundle, record them, and mark the version ready."""
    parent = to_version.parent
    if parent is None:
        raise DeltaError(f"{to_version} has no parent")
    game = to_version.game
    builds_services.mark_processing(version=to_version)
    new_root = builds_services.version_tree(version=to_version)
    if new_root is None:
        new_root = reconstruct_version(version=to_version)
    old_root = builds_services.version_tree(version=parent) or reconstruct_version(version=parent)
    old_manifest = builds_services.read_manifest(version=parent)
    new_manifest = builds_services.read_manifest(version=to_version)

    out_dir = storage.delta_dir(game.slug, to_version.platform, parent.name, to_version.name)
    bundle = storage.delta_bundle_path(game.slug, to_version.platform, parent.name, to_version.name)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Temp folders and files of an attempt killed mid-way (see mistcore.fsutil's naming).
    for leftover in out_dir.parent.glob(f".{out_dir.name}*.tmp-*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    if out_dir.exists():
        # A previous attempt finished the folder but died before recording it: check and reuse.
        manifest = mdelta.DeltaManifest.from_json((out_dir / mdelta.MANIFEST_NAME).read_bytes())
        if manifest.to_content_hash != new_manifest.content_hash() or manifest.from_content_hash != old_manifest.content_hash():
            shutil.rmtree(out_dir)
    if not out_dir.exists():
        manifest = mdelta.build_direct_delta(
            old_root=old_root,
            old_manifest=old_manifest,
            new_root=new_root,
            new_manifest=new_manifest,
            out_dir=out_dir,
            hdiff_max_bytes=settings.MIST_HDIFF_MAX_BYTES,
            workers=2,
        )
    bundle_size, bundle_sha = mdelta.bundle_delta(delta_dir=out_dir, dst=bundle)
    manifest_sha = sha256_file(out_dir / mdelta.MANIFEST_NAME)
    # MIST_STORAGE=s3: the bundle (the delta folder is rebuilt from it where it is missing) and the manifest.
    objectstore.publish(bundle, sha256=bundle_sha, size=bundle_size)
    builds_services.publish_manifest(version=to_version)
    counts: dict[str, int] = {}
    for op in manifest.ops:
        counts[op.op] = counts.get(op.op, 0) + 1
    report = efficiency_report(manifest=manifest)
    with transaction.atomic():
        delta, _ = DirectDelta.objects.update_or_create(
            from_version=parent,
            to_version=to_version,
            defaults={
                "status": DirectDelta.Status.READY,
                "error": "",
                "download_size": manifest.download_size,
                "bundle_size": bundle_size,
                "bundle_sha256": bundle_sha,
                "manifest_sha256": manifest_sha,
                "op_counts": counts,
                "report": report,
                "ready_at": timezone.now(),
            },
        )
        Version.objects.filter(pk=to_version.pk).update(update_size=bundle_size)
        builds_services.mark_ready(version=to_version)
    _retire_tree(version=parent)
    logger.info(
        "direct delta made",
        extra={"game": game.slug, "platform": to_version.platform, "from": parent.name, "to": to_version.name,
               "bundle_bytes": bundle_size},
    )
    return delta


def efficiency_report(*, manifest: mdelta.DeltaManifest) -> list[dict[str, Any]]:
    """Per file: what travels against the file's size, flagging files that barely diff."""
    rows = []
    for op in manifest.ops:
        if op.op not in ("patch", "add"):
            continue
        size = op.target_size or 0
        blob = op.blob_size or 0
        ratio = blob / size if size else 0.0
        hint = ""
        if size >= 64 * 1024 and ratio > 0.8:
            hint = (
                "the update of this file is nearly as large as the file: it is probably compressed, "
                "encrypted or repacked as a whole (pack files, .pak/.zip/.bundle); ship such content "
                "uncompressed or with stable ordering so deltas can find matches"
            )
        rows.append(
            {"path": op.path, "op": op.op, "engine": op.engine, "size": size, "patch_size": blob,
             "ratio": round(ratio, 4), "hint": hint}
        )
    rows.sort(key=lambda r: -int(r["patch_size"] or 0))
    return rows


def _retire_tree(*, version: Version) -> None:
    """A version's tree leaves the storage once it is neither the latest nor needed for a delta.

    It moves into the cache as that version's reconstructed copy when both are on one disk
    (a rename), and is simply removed otherwise: chain replay can rebuild it.
    """
    game = version.game
    latest = builds_services.latest_version(game=game, platform=version.platform)
    if latest is None or latest.pk == version.pk:
        return
    if version.children.exclude(status=Version.Status.READY).exists():
        return  # a child's direct delta still needs it
    tree = storage.tree_dir(game.slug, version.platform, version.name)
    if not tree.is_dir():
        return
    try:
        with push_lock():
            _move_tree_to_cache(version=version, tree=tree)
    except BackupInProgress:
        pass  # keep the tree: the next delta or push retires it


def _move_tree_to_cache(*, version: Version, tree: Path) -> None:
    game = version.game
    target = storage.cached_version_dir(game.slug, version.platform, version.name)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tree, target)
        except OSError:
            shutil.rmtree(tree, ignore_errors=True)
            return
        cache.register(key=f"version:{version.pk}", path=target, size=version.total_size)
    else:
        shutil.rmtree(tree, ignore_errors=True)


# --- Chain replay -------------------------------------------------------------------------------


@contextlib.contextmanager
def _reconstruction_lock(version: Version) -> Iterator[None]:
    """One reconstruction per version at a time, across workers and hosts.

    PostgreSQL: a session advisory lock (released by the server if the worker dies). The embedded
    SQLite demo runs one host, where a lock file in the cache does the same job.
    """
    if connection.vendor == "postgresql":
        key = zlib.crc32(f"mist-reconstruct:{version.pk}".encode())
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [key])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
    else:
        lock_path = storage.work_dir() / f"reconstruct-{version.pk}.lock"
        with open(lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _cached_tree(version: Version) -> Path | None:
    tree = builds_services.version_tree(version=version)
    if tree is not None:
        return tree
    cached = storage.cached_version_dir(version.game.slug, version.platform, version.name)
    if cached.is_dir():
        cache.touch(key=f"version:{version.pk}")
        return cached
    return None


def reconstruct_version(*, version: Version) -> Path:
    """A folder with the version's files: the storage tree, the cache, or rebuilt by chain replay.

    Chain replay starts from the nearest version at or below this one whose files are at hand
    (a kept tree, a cached copy, or the immutable base archive) and applies the direct deltas
    forward, each file verified against its sha256 as it is written, and the result once more in
    full before it is cached.
    """
    found = _cached_tree(version)
    if found is not None:
        return found
    with _reconstruction_lock(version):
        found = _cached_tree(version)  # another worker may have built it while we waited
        if found is not None:
            return found
        return _replay(version)


def _replay(version: Version) -> Path:
    game = version.game
    chain: list[Version] = []
    start: Version | None = version
    start_tree: Path | None = None
    while start is not None:
        start_tree = _cached_tree(start) if start.pk != version.pk else None
        if start_tree is not None:
            break
        chain.append(start)
        if start.parent_id is None:
            break
        start = start.parent
    chain.reverse()  # oldest first; chain[0] is the base when no tree was found
    target = storage.cached_version_dir(game.slug, version.platform, version.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Half-replayed folders of an attempt that was killed (we hold the version's reconstruction lock).
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    work = storage.work_dir() / f"replay-{uuid.uuid4().hex}"
    try:
        with atomic_dir(target, replace=True) as tmp:
            tmp.rmdir()
            if start_tree is not None:
                clone_tree(start_tree, tmp)  # hardlinks: replaced files get new inodes, originals stay
                steps = chain
            else:
                base = chain[0]
                archive = storage.base_archive_path(game.slug, base.platform, base.name)
                if not objectstore.ensure_local(archive):  # s3: fetched from the bucket if the disk lacks it
                    raise DeltaError(f"the base archive of {game.slug} ({archive.name}) is missing")
                safetar.extract_tar_zst(src=archive, dest=tmp, max_total_bytes=base.total_size)
                _verify_tree(tmp, builds_services.read_manifest(version=base))
                steps = chain[1:]
            for step in steps:
                delta_dir = storage.delta_dir(game.slug, step.platform, step.parent.name, step.name)
                if not (delta_dir / mdelta.MANIFEST_NAME).is_file():
                    _delta_dir_from_bundle(step)  # s3: unpacked from the bucket's bundle if the disk lacks it
                if not (delta_dir / mdelta.MANIFEST_NAME).is_file():
                    raise DeltaError(f"the direct delta {step.parent.name} -> {step.name} is missing")
                step_work = work / step.name
                step_work.mkdir(parents=True)
                mdelta.apply_delta_dir(delta_dir=delta_dir, install_root=tmp, work_dir=step_work)
            _verify_tree(tmp, builds_services.read_manifest(version=version))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cache.register(key=f"version:{version.pk}", path=target, size=version.total_size)
    logger.info("version reconstructed", extra={"game": game.slug, "version": version.name, "steps": len(chain)})
    return target


def _delta_dir_from_bundle(step: Version) -> None:
    """Rebuild a missing delta folder from its bundle (MIST_STORAGE=s3: fetched from the bucket, verified)."""
    delta = DirectDelta.objects.filter(from_version=step.parent, to_version=step, status=DirectDelta.Status.READY).first()
    if delta is None or step.parent is None:
        return
    slug, platform = step.game.slug, step.platform
    bundle = storage.delta_bundle_path(slug, platform, step.parent.name, step.name)
    if not objectstore.ensure_local(bundle, sha256=delta.bundle_sha256, size=delta.bundle_size):
        return
    folder = storage.delta_dir(slug, platform, step.parent.name, step.name)
    with atomic_dir(folder, replace=True) as tmp:
        tmp.rmdir()
        mdelta.unpack_bundle(src=bundle, dest=tmp, max_total_bytes=2 * delta.bundle_size + step.total_size + (64 << 20))
    if delta.manifest_sha256 and sha256_file(folder / mdelta.MANIFEST_NAME) != delta.manifest_sha256:
        shutil.rmtree(folder, ignore_errors=True)
        raise DeltaError(f"the direct delta {step.parent.name} -> {step.name} from its bundle has another manifest")


def _verify_tree(root: Path, manifest: Manifest) -> None:
    expected = manifest.by_path()
    present = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel == JOURNAL_NAME:
                continue
            present.add(rel)
            record = expected.get(rel)
            if record is None:
                raise DeltaError(f"chain replay of {manifest.version}: unexpected file {rel}")
            path = Path(dirpath, name)
            if path.stat().st_size != record.size or sha256_file(path) != record.sha256:
                raise DeltaError(f"chain replay of {manifest.version}: {rel} does not match its sha256")
    missing = set(expected) - present
    if missing:
        raise DeltaError(f"chain replay of {manifest.version}: {sorted(missing)[0]} is missing")


# --- Indirect updates ---------------------------------------------------------------------------


def request_indirect_update(
    *, game: Game, to_version: Version, signatures_upload: Any, paths: list[str], user: Any,
    engines: list[str] | None = None,
) -> Job:
    """Validate a signature upload now (bad input is a 400, not a failed job) and queue the job."""
    manifest = builds_services.read_manifest(version=to_version)
    known = manifest.by_path()
    if not paths:
        raise DeltaError("paths: list at least one file")
    if len(paths) > len(known):
        raise DeltaError("paths: more paths than the version has files")
    for path in paths:
        if path not in known:
            raise DeltaError(f"paths: {path!r} is not a file of version {to_version.name}")
    job_id = uuid.uuid4()
    upload_dir = storage.work_dir() / f"indirect-{job_id}"
    upload_dir.mkdir(parents=True)
    try:
        tar_path = upload_dir / "signatures.tar"
        limit = settings.MIST_MAX_SIGNATURE_UPLOAD_BYTES
        written = 0
        with open(tar_path, "wb") as out:
            for chunk in signatures_upload.chunks():
                written += len(chunk)
                if written > limit:
                    raise DeltaError(f"signatures: upload larger than {limit} bytes")
                out.write(chunk)
        sigs_dir = upload_dir / "sigs"
        try:
            signatures = mindirect.read_signature_set(
                src=tar_path, dest_dir=sigs_dir, allowed_paths=set(paths), max_bytes=limit
            )
        except MistCoreError as exc:
            raise DeltaError(f"signatures: {exc}") from None
        tar_path.unlink()
        job, _ = ensure_job(
            kind=Job.Kind.INDIRECT,
            key=f"indirect:{job_id}",
            task="deltas.tasks.make_indirect_bundle",
            game=game,
            version=to_version,
            requested_by=user,
            params={
                "paths": paths,
                "upload_dir": str(upload_dir),
                "signatures": {path: sig.name for path, sig in signatures.items()},
                # The client applies the direct deltas' engines: files whose exact basis the server has
                # (by sha256, in any version on disk) get those instead of librsync.
                "known_bases": bool(engines) and mindirect.KNOWN_BASIS_ENGINES <= set(engines or ()),
            },
        )
    except BaseException:
        shutil.rmtree(upload_dir, ignore_errors=True)
        raise
    return job


def make_indirect_bundle(*, job: Job) -> dict[str, Any]:
    """The worker half of an indirect update: rdiff deltas of the requested files, packed."""
    version = job.version
    upload_dir = Path(job.params["upload_dir"])
    sigs_dir = upload_dir / "sigs"
    if not sigs_dir.is_dir():
        raise JobFailed("the signature upload of this request is gone; ask for a new update plan")
    paths = list(job.params["paths"])
    signatures = {path: sigs_dir / name for path, name in job.params["signatures"].items()}
    basis_info = json.loads((sigs_dir / mindirect.SIGNATURES_JSON).read_bytes())["files"] if signatures else {}
    target_root = reconstruct_version(version=version)
    out = storage.indirect_bundle_path(str(job.pk))
    out.parent.mkdir(parents=True, exist_ok=True)
    known = known_bases(version=version, basis_info=basis_info) if job.params.get("known_bases") else {}
    manifest = mindirect.build_indirect_bundle(
        signatures=signatures,
        basis_info=basis_info,
        target_root=target_root,
        target_manifest=builds_services.read_manifest(version=version),
        paths=paths,
        out=out,
        known_bases=known,
        hdiff_max_bytes=settings.MIST_HDIFF_MAX_BYTES,
    )
    size = out.stat().st_size
    sha = sha256_file(out)
    objectstore.publish(out, sha256=sha, size=size)
    cache.register(key=f"indirect:{job.pk}", path=out, size=size, sha256=sha)
    shutil.rmtree(upload_dir, ignore_errors=True)
    return {
        "path": str(out.relative_to(storage.cache_root())),
        "url": f"/dl/indirect/{job.pk}",
        "size": size,
        "sha256": sha,
        "files": len(manifest.ops) if hasattr(manifest, "ops") else len(paths),
    }


def known_bases(*, version: Version, basis_info: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """For the client's files whose content some version of this game and platform has (same sha256), that
    file in a version tree on this disk: the indirect bundle diffs against it with the direct engines."""
    wanted = {str(info["sha256"]) for info in basis_info.values()}
    if not wanted:
        return {}
    where: dict[str, Path] = {}
    trees: dict[int, Path | None] = {}
    rows = FileEntry.objects.filter(version__game=version.game, version__platform=version.platform,
                                    sha256__in=wanted).select_related("version").order_by("-version__seq")
    for row in rows:
        if row.sha256 in where:
            continue
        if row.version_id not in trees:
            trees[row.version_id] = _cached_tree(row.version)  # the storage tree or a cached one
        tree = trees[row.version_id]
        if tree is not None:
            candidate = tree.joinpath(*row.path.split("/"))
            if candidate.is_file():
                where[row.sha256] = candidate
    return {path: where[str(info["sha256"])] for path, info in basis_info.items() if str(info["sha256"]) in where}


def discard_indirect_upload(*, job: Job) -> None:
    shutil.rmtree(Path(job.params.get("upload_dir", "/nonexistent")), ignore_errors=True)


# --- The update planner -------------------------------------------------------------------------

# --- Jump deltas: any two versions, either direction, made on demand --------------------------------------


def ready_jump(*, from_version: Version, to_version: Version) -> JumpDelta | None:
    """The cached jump delta between exactly these two versions, if made and still intact on disk.

    A bundle that is gone, evicted, of another size than recorded (truncated), or written to since it
    was made and no longer matching its sha256 is dropped here, so the planner queues it again and
    no friend is offered it. (The patcher verifies every bundle's sha256 as well: a bundle rotting in
    place with its timestamp intact is refused there and found by `manage.py storage_check`.)"""
    jump = (JumpDelta.objects.filter(from_version=from_version, to_version=to_version, status=JumpDelta.Status.READY)
            .select_related("from_version", "to_version__game").first())
    if jump is None:
        return None
    problem = jump_problem(jump, full=False)
    if problem:
        drop_jump(jump, problem)
        return None
    return jump


def jump_path(jump: JumpDelta) -> Path:
    to_version = jump.to_version
    return storage.jump_bundle_path(to_version.game.slug, to_version.platform, jump.from_version.name,
                                    to_version.name)


def jump_problem(jump: JumpDelta, *, full: bool) -> str:
    """Why this ready jump bundle cannot be served ("" when it can). `full` hashes it every time;
    otherwise only a bundle modified after it was made is hashed (then once: ready_at moves on)."""
    path = jump_path(jump)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "its bundle is missing"
    if not CacheEntry.objects.filter(key=jump.cache_key).exists():
        return "evicted from the cache"
    if stat.st_size != jump.bundle_size:
        return f"its bundle has {stat.st_size} bytes on disk, {jump.bundle_size} recorded (truncated or overwritten)"
    modified = jump.ready_at is None or stat.st_mtime > jump.ready_at.timestamp()
    if full or modified:
        if sha256_file(path) != jump.bundle_sha256:
            return "its bundle does not match its recorded sha256 (corrupt)"
        if modified:
            JumpDelta.objects.filter(pk=jump.pk).update(ready_at=timezone.now())
    return ""


def drop_jump(jump: JumpDelta, why: str) -> None:
    """Forget a cached jump (row, cache entry, bundle): the next request makes it again."""
    logger.warning("jump delta dropped", extra={"from": jump.from_version.name, "to": jump.to_version.name,
                                                "why": why})
    entry = CacheEntry.objects.filter(key=jump.cache_key).first()
    if entry is not None:
        cache.evict(entry)
    jump_path(jump).unlink(missing_ok=True)
    jump.delete()


def request_jump(*, from_version: Version, to_version: Version, user: Any = None) -> tuple[JumpDelta | None, Job | None]:
    """The ready jump delta, or the worker job making it (queued on the first request)."""
    jump = ready_jump(from_version=from_version, to_version=to_version)
    if jump is not None:
        return jump, None
    key = f"jump:{from_version.pk}:{to_version.pk}"
    # A job that finished earlier made a bundle the cache has evicted since: it is made again.
    Job.objects.filter(key=key, status=Job.Status.DONE).delete()
    job, _ = ensure_job(
        kind=Job.Kind.JUMP_DELTA,
        key=key,
        task="deltas.tasks.make_jump_delta",
        game=to_version.game,
        version=to_version,
        params={"from_version": from_version.pk},
        requested_by=user if getattr(user, "pk", None) else None,
        retry_failed=True,
    )
    JumpDelta.objects.get_or_create(from_version=from_version, to_version=to_version)  # pending: asked for
    return None, job


def jump_for_plan(*, plan: UpdatePlan, from_version: Version | None, to_version: Version,
                  user: Any = None) -> dict[str, Any] | None:
    """The worker job of a jump delta the plan needs (route `jump`, not made yet: the patcher waits for it),
    or one queued behind a ready chain of several deltas (`preparing`: for the next friend); else None."""
    if from_version is None:
        return None
    waiting = plan.route == "jump" and not plan.steps
    preparing = (plan.route == "direct" and len(plan.steps) > 1 and "jump" not in plan.alternatives
                 and not JumpDelta.objects.filter(from_version=from_version, to_version=to_version).exists())
    if not (waiting or preparing):
        return None
    _, job = request_jump(from_version=from_version, to_version=to_version, user=user)
    if job is None:
        return None
    return {"job": job_payload(job), "job_url": f"/api/v1/jobs/{job.pk}", "preparing": preparing}


def _push_time_blobs(*, from_version: Version, to_version: Version) -> dict[tuple[str | None, str], mdelta.KnownBlob]:
    """For a forward jump, the blobs of the push-time deltas between the two versions (a file that changed once
    on the way has its patch there already); nothing for a backward one (no reverse patches are kept)."""
    steps: list[Version] = []
    step: Version | None = to_version
    while step is not None and step.pk != from_version.pk:
        steps.append(step)
        step = step.parent
    if step is None:
        return {}
    folders = []
    for step in reversed(steps):
        folder = storage.delta_dir(step.game.slug, step.platform, step.parent.name, step.name)
        if not (folder / mdelta.MANIFEST_NAME).is_file():
            try:
                _delta_dir_from_bundle(step)  # s3: unpacked from the bucket's bundle if the disk lacks it
            except (DeltaError, MistCoreError, OSError):
                continue
        if (folder / mdelta.MANIFEST_NAME).is_file():
            folders.append(folder)
    try:
        return mdelta.known_blobs(folders)
    except (MistCoreError, OSError) as exc:  # a damaged push-time manifest: the jump is simply made whole
        logger.warning("push-time deltas not reused", extra={"to": to_version.name, "error": str(exc)})
        return {}


def make_jump_delta(*, from_version: Version, to_version: Version) -> JumpDelta:
    """Rebuild both versions' trees (chain replay where they are not at hand), diff them with the push-time
    engines, and cache the bundle. Either direction: a rollback is a jump to an older version."""
    started = time.monotonic()
    game = to_version.game
    if from_version.platform != to_version.platform or from_version.game_id != to_version.game_id:
        raise DeltaError("a jump stays within one game and one platform")
    old_root = reconstruct_version(version=from_version)
    new_root = reconstruct_version(version=to_version)
    old_manifest = builds_services.read_manifest(version=from_version)
    new_manifest = builds_services.read_manifest(version=to_version)
    bundle = storage.jump_bundle_path(game.slug, to_version.platform, from_version.name, to_version.name)
    bundle.parent.mkdir(parents=True, exist_ok=True)
    work = bundle.with_name(f".work-{from_version.name}__{to_version.name}")
    for leftover in bundle.parent.glob(f".{work.name}*.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in bundle.parent.glob(f".{bundle.name}.tmp-*"):
        leftover.unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    try:
        mdelta.build_direct_delta(old_root=old_root, old_manifest=old_manifest, new_root=new_root,
                                  new_manifest=new_manifest, out_dir=work,
                                  hdiff_max_bytes=settings.MIST_HDIFF_MAX_BYTES, workers=2,
                                  reuse=_push_time_blobs(from_version=from_version, to_version=to_version))
        size, sha = mdelta.bundle_delta(delta_dir=work, dst=bundle)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    # The cache entry first, then READY: a planner that sees READY always finds the entry (ready_jump
    # treats a READY row without one as evicted and drops it).
    objectstore.publish(bundle, sha256=sha, size=size)
    jump, _ = JumpDelta.objects.get_or_create(from_version=from_version, to_version=to_version)
    cache.register(key=jump.cache_key, path=bundle, size=size, sha256=sha)
    JumpDelta.objects.filter(pk=jump.pk).update(
        status=JumpDelta.Status.READY, error="", bundle_size=size, bundle_sha256=sha, seconds=seconds,
        ready_at=timezone.now())
    jump.refresh_from_db()
    logger.info("jump delta made", extra={"game": game.slug, "platform": to_version.platform,
                                          "from": from_version.name, "to": to_version.name, "bundle_bytes": size,
                                          "seconds": round(seconds, 2)})
    return jump


# Estimates for routes whose exact size is only known after the work is done.
RDIFF_RATIO_ESTIMATE = 0.6  # rdiff deltas of changed native code measured 54-59% of the file
ZSTD_RATIO_ESTIMATE = 0.6
# A jump delta not made yet, against the cheapest route it replaces (a chain rewrites files several times,
# librsync ships far more than a patch between the same two builds).
JUMP_ESTIMATE = 0.8
SIGNATURE_BYTES_PER_BLOCK = 40
SIGNATURE_BLOCK = 2048


@dataclass
class UpdatePlan:
    game: str
    platform: str
    from_version: str | None
    to_version: str
    route: str
    reason: str
    download_bytes: int
    disk_bytes: int
    alternatives: dict[str, int] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    indirect_paths: list[str] = field(default_factory=list)
    full_size: int = 0


def _estimate_indirect(old: Manifest, new: Manifest) -> tuple[int, list[str]]:
    changes = diff_manifests(old, new)
    new_map, old_map = new.by_path(), old.by_path()
    old_shas = {r.sha256 for r in old.files}
    paths = sorted(changes.added + changes.changed)
    total = 0
    for path in paths:
        target = new_map[path]
        if target.sha256 in old_shas:
            continue  # the client can copy it locally
        basis = old_map.get(path)
        if basis is not None:
            total += (basis.size // SIGNATURE_BLOCK + 1) * SIGNATURE_BYTES_PER_BLOCK
            total += int(target.size * RDIFF_RATIO_ESTIMATE)
        else:
            total += int(target.size * ZSTD_RATIO_ESTIMATE)
    return total, paths


def _indirect_estimate(
    *, from_version: Version | None, to_version: Version, local_manifest: Manifest | None
) -> plan_cache.IndirectEstimate | None:
    """The installed files (the client's manifest, else from_version's) against the target's; None without either.

    Two versions' manifests never change, so their comparison is cached per process.
    """
    if local_manifest is not None:
        old_manifest = local_manifest
    elif from_version is not None:
        cached = plan_cache.cached_estimate(from_version=from_version, to_version=to_version)
        if cached is not None:
            return cached
        old_manifest = cached_manifest(version=from_version)
    else:
        return None
    new_manifest = cached_manifest(version=to_version)
    total, paths = _estimate_indirect(old_manifest, new_manifest)
    new_map = new_manifest.by_path()
    estimate = plan_cache.IndirectEstimate(
        download_bytes=total, paths=tuple(paths), changed_bytes=sum(new_map[p].size for p in paths)
    )
    if local_manifest is None and from_version is not None:
        plan_cache.keep_estimate(from_version=from_version, to_version=to_version, estimate=estimate)
    return estimate


def plan_update(
    *, game: Game, from_version: Version | None, to_version: Version, local_manifest: Manifest | None = None,
    archive_size: int | None = None,
) -> UpdatePlan:
    """Pick the cheapest route by bytes: a chain of direct bundles, an indirect bundle, or full files.

    Every route stays within the target's platform: `from_version` must be a build of the same
    platform (the caller checks it), so no step ever names another platform's bytes.
    """
    if from_version is not None and from_version.platform != to_version.platform:
        raise DeltaError(
            f"from_version {from_version.name} is a {from_version.platform} build; the target is {to_version.platform}"
        )
    full = archive_size or int(to_version.total_size * ZSTD_RATIO_ESTIMATE)
    base = {"game": game.slug, "platform": to_version.platform, "to_version": to_version.name, "full_size": full}
    if from_version is not None and from_version.pk == to_version.pk:
        return UpdatePlan(from_version=from_version.name, route="none", reason="already at this version",
                          download_bytes=0, disk_bytes=0, **base)
    alternatives: dict[str, int] = {"full": full}
    chain = None
    if from_version is not None and from_version.seq < to_version.seq:
        # Read on every request (one query): deltas become ready and versions are re-linked in other processes.
        chain = plan_cache.direct_chain(from_version=from_version, to_version=to_version)
        if chain is not None:
            alternatives["direct"] = sum(step.bundle_size for step in chain)
    estimate = _indirect_estimate(from_version=from_version, to_version=to_version, local_manifest=local_manifest)
    indirect_paths: list[str] = []
    if estimate is not None:
        alternatives["indirect"], indirect_paths = estimate.download_bytes, list(estimate.paths)
    # A jump delta: one patch between exactly these two versions (never for one forward step: that is the
    # push-time delta). Exact once made; before that, estimated below what it replaces.
    jump = None
    exact = {"direct"}
    if (from_version is not None and local_manifest is None and to_version.status == Version.Status.READY
            and (chain is None or len(chain) > 1)):
        jump = ready_jump(from_version=from_version, to_version=to_version)
        if jump is not None:
            alternatives["jump"] = jump.bundle_size
            exact.add("jump")
        elif chain is None:
            # Backwards, or no chain of ready deltas: waiting for the worker beats librsync or a full download.
            known = [alternatives[k] for k in ("indirect",) if k in alternatives]
            alternatives["jump"] = int(min(known) * JUMP_ESTIMATE) if known else int(full * JUMP_ESTIMATE)
        # Forward over a ready chain, the chain is served now and the jump is made in the background for the
        # next friend making the same move (deltas.api: `jump.preparing`).
    # The direct chain's size is exact; estimates must beat it clearly to win.
    ranked = sorted(alternatives.items(), key=lambda kv: (kv[1] * (1.0 if kv[0] in exact else 1.15), kv[0]))
    route, cost = ranked[0]
    others = ", ".join(f"{name} ~{_mb(size)}" for name, size in ranked[1:])
    if route == "direct":
        reason = f"a chain of {len(chain or [])} direct update(s) ({_mb(cost)}) is cheapest" + (f"; {others}" if others else "")
        disk = max((step.to_total_size for step in chain or []), default=0) // 4 + cost
    elif route == "jump":
        how = "made earlier and cached" if jump is not None else "the worker makes it now (then it is cached)"
        reason = (f"one jump delta {from_version.name if from_version else ''} -> {to_version.name} "
                  f"({'' if jump is not None else '~'}{_mb(cost)}, {how}) is cheapest" + (f"; {others}" if others else ""))
        disk = to_version.total_size // 4 + cost
    elif route == "indirect":
        reason = (f"{len(indirect_paths)} file(s) differ: an indirect update (~{_mb(cost)}) is cheapest"
                  + (f"; {others}" if others else ""))
        disk = (estimate.changed_bytes if estimate is not None else 0) + cost
    else:
        why = "no direct chain leads there and the changed files are most of the game" if estimate is not None else "no local version to start from"
        reason = f"a full download ({_mb(cost)}): {why}"
        disk = to_version.total_size + cost
    steps = []
    if route == "direct":
        for step in chain or []:
            steps.append({
                "kind": "direct", "from_version": step.from_version, "to_version": step.to_version,
                "url": f"/dl/direct/{game.slug}/{to_version.platform}/{step.from_version}__{step.to_version}",
                "size": step.bundle_size, "sha256": step.bundle_sha256,
            })
    if route == "jump" and jump is not None and from_version is not None:
        steps.append({
            "kind": "jump", "from_version": from_version.name, "to_version": to_version.name,
            "url": f"/dl/direct/{game.slug}/{to_version.platform}/{from_version.name}__{to_version.name}",
            "size": jump.bundle_size, "sha256": jump.bundle_sha256,
        })
    return UpdatePlan(
        from_version=from_version.name if from_version else None, route=route, reason=reason,
        download_bytes=cost, disk_bytes=disk, alternatives=alternatives, steps=steps,
        indirect_paths=indirect_paths, **base,
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# --- Removing a version -------------------------------------------------------------------------


@dataclass
class RemoveResult:
    removed: str
    messages: list[str] = field(default_factory=list)
    queued: list[Job] = field(default_factory=list)


def _materialize_in_storage(version: Version) -> None:
    """Make sure the version's files sit in the storage trees (copied from a replay if needed)."""
    if builds_services.version_tree(version=version) is not None:
        return
    source = reconstruct_version(version=version)
    target = storage.tree_dir(version.game.slug, version.platform, version.name)
    with atomic_dir(target) as tmp:
        tmp.rmdir()
        shutil.copytree(source, tmp, symlinks=False)


def remove_version(*, version: Version, force: bool = False) -> RemoveResult:
    """Remove a version; its child is re-linked to its parent and gets a new direct delta.

    Removing the base or the only version loses data a friend might still need (the immutable
    base archive, or every file of the game), so it is refused unless `force` is given.
    """
    try:
        with push_lock():
            return _remove_locked(version=version, force=force)
    except BackupInProgress as exc:
        raise DeltaError(str(exc)) from None


def _remove_locked(*, version: Version, force: bool) -> RemoveResult:
    game = version.game
    child = version.children.order_by("seq").first()
    parent = version.parent
    latest = builds_services.latest_version(game=game, platform=version.platform)
    result = RemoveResult(removed=version.name)
    if child is None and parent is None and not force:
        raise DeltaError(
            f"{version.name} is the only version of {game.slug}: removing it deletes the game's files "
            "(the base archive and the depot). Use --force to do it anyway."
        )
    if parent is None and child is not None and not force:
        raise DeltaError(
            f"{version.name} is the base of {game.slug}: removing it rewrites the immutable base archive from "
            f"{child.name}, and installs of {version.name} can then only update by indirect or full download. "
            "Use --force to do it anyway."
        )
    # Files the re-linked history needs must be at hand before the deltas through this version go.
    if child is not None:
        _materialize_in_storage(child)
    if latest is not None and latest.pk == version.pk and parent is not None:
        _materialize_in_storage(parent)
    slug, platform = game.slug, version.platform
    doomed = [
        storage.manifest_path(slug, platform, version.name),
        storage.tree_dir(slug, platform, version.name),
        storage.cached_version_dir(slug, platform, version.name),
        storage.archive_path(slug, platform, version.name),
    ]
    if parent is not None:
        doomed += [
            storage.delta_dir(slug, platform, parent.name, version.name),
            storage.delta_bundle_path(slug, platform, parent.name, version.name),
        ]
    if child is not None:
        doomed += [
            storage.delta_dir(slug, platform, version.name, child.name),
            storage.delta_bundle_path(slug, platform, version.name, child.name),
        ]
    if parent is None:
        doomed.append(storage.base_archive_path(slug, platform, version.name))
    with transaction.atomic():
        Job.objects.filter(version=version).delete()
        Version.objects.filter(pk=version.pk).delete()
        cache_keys = [f"version:{version.pk}", f"archive:{version.pk}"]
        CacheEntry.objects.filter(key__in=cache_keys).delete()
        if child is not None:
            child.parent = parent
            child.status = Version.Status.PENDING
            child.update_size = None
            child.save(update_fields=["parent", "status", "update_size"])
            Job.objects.filter(version=child, kind__in=[Job.Kind.DIRECT_DELTA, Job.Kind.PROCESS_VERSION]).delete()
            if parent is None:
                result.queued = builds_services.queue_processing(version=child)
                result.messages.append(f"{child.name} is the new base: its base archive is being written")
            else:
                result.queued = [queue_direct_delta(to_version=child)]
                result.messages.append(f"{child.name} now follows {parent.name}: a new direct delta is queued")
    if latest is not None and latest.pk == version.pk:
        if parent is not None:
            builds_services.point_depot(game=game, version=parent)
            result.messages.append(f"{parent.name} is the latest version again")
        else:
            storage.depot_dir(slug, platform).unlink(missing_ok=True)
    for path in doomed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
            objectstore.delete(path)  # MIST_STORAGE=s3: the bucket's copy goes too
    logger.info("version removed", extra={"game": slug, "version": version.name})
    return result
