"""The bucket against the database (MIST_STORAGE=s3): every immutable artifact a game has, checked or uploaded.

`storage_check` reports what the bucket lacks or holds wrongly; `storage_sync` uploads what the local disk has
and the bucket lacks (switching a running instance to the bucket, or after a bucket was emptied).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builds import objectstore, storage
from builds import services as builds_services
from catalog.models import Game
from deltas.models import DirectDelta, JumpDelta
from downloads.models import FullArchive


@dataclass(frozen=True)
class Expected:
    what: str
    path: Path
    size: int | None
    sha256: str
    manifest_of: int | None = None  # a version's manifest: written from the database when the disk lacks it


def expected_objects(game: Game) -> Iterator[Expected]:
    """What the bucket must hold for this game: manifests, the base archives, ready delta and jump bundles,
    and the full archives that are built."""
    for version in game.versions.order_by("platform", "seq"):
        slug, platform = game.slug, version.platform
        yield Expected(f"manifest {version.name} [{platform}]", storage.manifest_path(slug, platform, version.name),
                       None, version.manifest_sha256, manifest_of=version.pk)
        if version.parent_id is None and version.status == version.Status.READY:
            path = storage.base_archive_path(slug, platform, version.name)
            yield Expected(f"base archive {version.name} [{platform}]", path, None, "")
    for delta in DirectDelta.objects.filter(to_version__game=game, status=DirectDelta.Status.READY).select_related(
            "from_version", "to_version"):
        to = delta.to_version
        yield Expected(f"delta {delta.from_version.name} -> {to.name} [{to.platform}]",
                       storage.delta_bundle_path(game.slug, to.platform, delta.from_version.name, to.name),
                       delta.bundle_size, delta.bundle_sha256)
    for jump in JumpDelta.objects.filter(to_version__game=game, status=JumpDelta.Status.READY).select_related(
            "from_version", "to_version"):
        to = jump.to_version
        yield Expected(f"jump {jump.from_version.name} -> {to.name} [{to.platform}]",
                       storage.jump_bundle_path(game.slug, to.platform, jump.from_version.name, to.name),
                       jump.bundle_size, jump.bundle_sha256)
    for archive in FullArchive.objects.filter(version__game=game).select_related("version"):
        yield Expected(f"archive {archive.version.name} [{archive.version.platform}]",
                       storage.cache_root() / archive.relpath, archive.size, archive.sha256)


def check_bucket(game: Game) -> Iterator[str]:
    """Every object the bucket lacks or holds with other bytes than recorded, one line each."""
    if not objectstore.enabled():
        return
    for item in expected_objects(game):
        key = objectstore.key_for(item.path)
        info = objectstore.head(key)
        if info is None:
            yield f"bucket: {item.what} is missing ({key}; `manage.py storage_sync` uploads it from the disk)"
        elif item.size is not None and info.size != item.size:
            yield f"bucket: {item.what} has {info.size} bytes, {item.size} recorded"
        elif item.sha256 and info.sha256 != item.sha256:
            yield f"bucket: {item.what} has sha256 {info.sha256[:12]}..., {item.sha256[:12]}... recorded"


def sync_bucket(game: Game) -> tuple[list[str], list[str]]:
    """Upload what the bucket lacks from the local disk: (uploaded, not on the disk either)."""
    uploaded, unavailable = [], []
    for item in expected_objects(game):
        key = objectstore.key_for(item.path)
        info = objectstore.head(key)
        if info is not None and (item.size is None or info.size == item.size) and (
                not item.sha256 or info.sha256 == item.sha256):
            continue
        if item.manifest_of is not None:
            builds_services.publish_manifest(version=game.versions.get(pk=item.manifest_of))
            uploaded.append(item.what)
        elif item.path.is_file():
            objectstore.publish(item.path, sha256=item.sha256 or None, size=item.size)
            uploaded.append(item.what)
        else:
            unavailable.append(item.what)
    return uploaded, unavailable
