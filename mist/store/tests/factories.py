"""Store test data made directly with the ORM: games, ready versions, direct deltas, archives."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from django.utils import timezone

from builds.models import Version
from builds.storage import cache_root
from catalog.models import Game
from deltas.models import DirectDelta
from downloads.models import FullArchive

MB = 1024 * 1024
GB = 1024 * MB


def make_game(slug: str, title: str = "", **fields: Any) -> Game:
    return Game.objects.create(slug=slug, title=title or slug.replace("-", " ").title(), **fields)


def make_version(
    game: Game,
    name: str,
    *,
    parent: Version | None = None,
    total_size: int = 12 * GB,
    update_size: int | None = None,
    archive_size: int | None = None,
    status: str = Version.Status.READY,
    published: bool = True,
    notes: str = "",
    days_ago: int = 0,
    seq: int | None = None,
    platform: str = "windows",
) -> Version:
    """A version row (no files on disk); `update_size` adds a ready DirectDelta from `parent`."""
    if seq is None:
        seq = (parent.seq + 1) if parent else 1
    when = timezone.now() - timedelta(days=days_ago)
    version = Version.objects.create(
        game=game, name=name, platform=platform, seq=seq, parent=parent, status=status, published=published, notes=notes,
        total_size=total_size, file_count=42, content_hash=f"{game.slug}-{name}-{platform}",
        ready_at=when if status == Version.Status.READY else None,
        published_at=when if status == Version.Status.READY and published else None,
    )
    Version.objects.filter(pk=version.pk).update(created_at=when)
    version.refresh_from_db()
    if parent is not None and update_size is not None:
        DirectDelta.objects.create(
            from_version=parent, to_version=version, status=DirectDelta.Status.READY, download_size=update_size
        )
    if archive_size is not None:
        make_archive(version, size=archive_size)
    return version


def make_archive(version: Version, *, size: int | None = None, content: bytes | None = None) -> FullArchive:
    """A FullArchive row and its file in the cache: real `content`, or a sparse file of `size` bytes."""
    relpath = f"archives/{version.game.slug}/{version.name}.tar.zst"
    path = cache_root() / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        if content is not None:
            f.write(content)
        else:
            f.truncate(size or 0)  # sparse: a "12 GB" archive costs no disk
    return FullArchive.objects.create(
        version=version, relpath=relpath, size=path.stat().st_size,
        sha256=hashlib.sha256(content).hexdigest() if content is not None else "0" * 64,
    )
