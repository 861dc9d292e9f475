"""Verify that the storage agrees with the database: manifests, the depot, base archives, deltas."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from builds import objectstore, storage
from builds import services as builds_services
from builds.models import Version
from catalog.models import Game
from deltas.models import DirectDelta, JumpDelta
from deltas.services import drop_jump, jump_problem
from mistcore import safetar
from mistcore.errors import MistCoreError
from mistcore.fsutil import copy_stream, sha256_bytes, sha256_file
from mistcore.manifest import Manifest


def _check_tree(root: Path, manifest: Manifest, what: str) -> Iterator[str]:
    expected = manifest.by_path()
    seen = set()
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            seen.add(rel)
            record = expected.get(rel)
            if record is None:
                yield f"{what}: unexpected file {rel}"
            elif path.stat().st_size != record.size or sha256_file(path) != record.sha256:
                yield f"{what}: {rel} does not match its recorded sha256"
            elif bool(path.stat().st_mode & 0o100) != record.executable:
                yield f"{what}: {rel} has the wrong executable bit"
    for rel in sorted(set(expected) - seen):
        yield f"{what}: {rel} is missing"


def _check_base_archive(version: Version, manifest: Manifest) -> Iterator[str]:
    path = storage.base_archive_path(version.game.slug, version.platform, version.name)
    if not path.is_file():
        if version.status == Version.Status.READY and not _in_bucket(path):
            yield f"base archive {path.name}: missing"
        return
    expected = manifest.by_path()
    seen = set()
    try:
        for name, _size, reader in safetar.iter_tar_zst(
            path, max_members=len(expected) + 1, max_total_bytes=manifest.total_size
        ):
            _n, sha = copy_stream(cast(IO[bytes], reader), None)
            seen.add(name)
            if name not in expected or expected[name].sha256 != sha:
                yield f"base archive {path.name}: {name} does not match the manifest"
    except MistCoreError as exc:
        yield f"base archive {path.name}: unreadable ({exc})"
        return
    for rel in sorted(set(expected) - seen):
        yield f"base archive {path.name}: {rel} is missing"


def _in_bucket(path: Path) -> bool:
    """MIST_STORAGE=s3: the bucket has the artifact (the bucket check verifies its bytes), so a missing local
    copy is one the disk dropped as cache, not a loss."""
    return objectstore.enabled() and objectstore.head(objectstore.key_for(path)) is not None


def check_game(game: Game) -> Iterator[str]:
    """Every drift between this game's storage and its database rows, one line each (per platform)."""
    for platform in builds_services.game_platforms(game=game):
        for problem in _check_platform(game, platform):
            yield f"[{platform}] {problem}"


def _check_platform(game: Game, platform: str) -> Iterator[str]:
    versions = list(game.versions.filter(platform=platform).order_by("seq"))
    latest = versions[-1] if versions else None
    for version in versions:
        manifest = builds_services.read_manifest(version=version)
        path = storage.manifest_path(game.slug, platform, version.name)
        if not path.is_file():
            yield f"{version.name}: manifest file missing"
        else:
            data = path.read_bytes()
            if sha256_bytes(data) != version.manifest_sha256 or data != manifest.to_json():
                yield f"{version.name}: manifest on disk differs from the database"
        if version.parent_id is None:
            yield from _check_base_archive(version, manifest)
        if latest is not None and version.pk == latest.pk:
            depot = storage.depot_dir(game.slug, platform)
            if not depot.is_dir():
                yield f"depot: missing (should hold {version.name})"
            else:
                yield from _check_tree(depot, manifest, f"depot ({version.name})")
    for delta in DirectDelta.objects.filter(to_version__game=game, to_version__platform=platform, status=DirectDelta.Status.READY).select_related(
        "from_version", "to_version"
    ):
        bundle = storage.delta_bundle_path(game.slug, platform, delta.from_version.name, delta.to_version.name)
        in_bucket = not bundle.is_file() and _in_bucket(bundle)  # a local copy dropped (deltas.localcopies)
        if not bundle.is_file():
            if not in_bucket:
                yield f"delta {delta.dirname}: bundle missing"
        elif bundle.stat().st_size != delta.bundle_size or sha256_file(bundle) != delta.bundle_sha256:
            yield f"delta {delta.dirname}: bundle does not match its recorded sha256"
        folder = storage.delta_dir(game.slug, platform, delta.from_version.name, delta.to_version.name)
        manifest_file = folder / "delta_manifest.json"
        if not manifest_file.is_file():
            if not in_bucket:  # the folder is unpacked again from the bundle when chain replay needs it
                yield f"delta {delta.dirname}: delta_manifest.json missing"
        elif sha256_file(manifest_file) != delta.manifest_sha256:
            yield f"delta {delta.dirname}: delta_manifest.json differs from the recorded one"
    # Jump deltas are cache: a damaged one is reported and dropped (the next request makes it again).
    for jump in JumpDelta.objects.filter(to_version__game=game, to_version__platform=platform,
                                         status=JumpDelta.Status.READY).select_related("from_version", "to_version"):
        problem = jump_problem(jump, full=True)
        if problem:
            drop_jump(jump, problem)
            yield f"cached jump {jump.from_version.name} -> {jump.to_version.name}: {problem}; dropped, made again on request"
