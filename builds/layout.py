"""Moving data pushed before platforms existed into the per-platform layout (and back).

Before platforms, a game's files sat directly under ``storage/games/<slug>/`` (trees, depot, base,
manifests, deltas) and the cache had ``versions/<slug>/<version>/`` and
``archives/<slug>/<version>.tar.zst``. Now each of these has a platform level (builds/storage.py).
The move is made of renames on one filesystem, each atomic, and every step checks what is already
done first, so it can be interrupted and run again at any point: migration downloads 0002 runs it,
and so does ``manage.py storage_layout --apply`` (for a storage that was not mounted during
``migrate``, or a backup of the old layout restored later).

The old and new layouts cannot be confused: the old top-level names below are never platform
names, and a cache path of the old layout has one component less than one of the new.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mistcore.fsutil import fsync_dir
from mistcore.platforms import PLATFORMS, validate_platform

logger = logging.getLogger("mist.builds")

# What a game folder held before platforms (the depot is a symlink relative to it: "trees/<v>",
# which stays right once both move together).
OLD_GAME_ENTRIES = ("trees", "depot", "base", "manifests", "deltas")
CACHE_KINDS = ("versions", "archives")


class LayoutError(Exception):
    """The storage holds something the move cannot decide about on its own; the message says what."""


@dataclass
class LayoutReport:
    moved: list[str] = field(default_factory=list)
    cache_relinked: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.moved or self.cache_relinked)


def _rename(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dst)
    fsync_dir(dst.parent)
    fsync_dir(src.parent)


def old_layout_games(storage_root: Path) -> list[str]:
    """Slugs of games whose folder still has entries of the layout before platforms."""
    games = Path(storage_root) / "games"
    if not games.is_dir():
        return []
    return sorted(
        d.name
        for d in games.iterdir()
        if d.is_dir() and any((d / name).exists() or (d / name).is_symlink() for name in OLD_GAME_ENTRIES)
    )


def upgrade_storage(*, storage_root: Path, platform: str) -> list[str]:
    """Move every game's old top-level entries under ``<slug>/<platform>/``; return what moved."""
    validate_platform(platform)
    moved = []
    for slug in old_layout_games(storage_root):
        game = Path(storage_root) / "games" / slug
        for name in OLD_GAME_ENTRIES:
            src, dst = game / name, game / platform / name
            if not (src.exists() or src.is_symlink()):
                continue
            if dst.exists() or dst.is_symlink():
                raise LayoutError(
                    f"{src} and {dst} both exist: the old and the per-platform layout overlap; "
                    "move one aside by hand and run `manage.py storage_layout --apply` again"
                )
            _rename(src, dst)
            moved.append(f"games/{slug}/{name} -> games/{slug}/{platform}/{name}")
    return moved


def downgrade_storage(*, storage_root: Path, platform: str) -> list[str]:
    """The reverse of upgrade_storage, for a migration backwards: only one platform may hold data."""
    games = Path(storage_root) / "games"
    moved: list[str] = []
    if not games.is_dir():
        return moved
    for game in sorted(d for d in games.iterdir() if d.is_dir()):
        others = [p for p in PLATFORMS if p != platform and (game / p).exists()]
        if others:
            raise LayoutError(
                f"{game.name} has {', '.join(others)} builds: the layout before platforms cannot hold them"
            )
        for name in OLD_GAME_ENTRIES:
            src, dst = game / platform / name, game / name
            if not (src.exists() or src.is_symlink()) or dst.exists() or dst.is_symlink():
                continue
            _rename(src, dst)
            moved.append(f"games/{game.name}/{platform}/{name} -> games/{game.name}/{name}")
        if (game / platform).is_dir() and not any((game / platform).iterdir()):
            (game / platform).rmdir()
    return moved


def new_cache_relpath(relpath: str, platform: str) -> str | None:
    """The per-platform form of an old cache path (``versions/<slug>/<v>``); None if it is not one."""
    parts = relpath.split("/")
    if len(parts) == 3 and parts[0] in CACHE_KINDS:
        kind, slug, name = parts
        return f"{kind}/{slug}/{platform}/{name}"
    return None


def old_cache_relpath(relpath: str, platform: str) -> str | None:
    parts = relpath.split("/")
    if len(parts) == 4 and parts[0] in CACHE_KINDS and parts[2] == platform:
        kind, slug, _platform, name = parts
        return f"{kind}/{slug}/{name}"
    return None


def relink_cache(*, cache_root: Path, entries: Iterable[Any], platform: str, forward: bool = True) -> list[str]:
    """Move cached versions and archives to their per-platform paths, updating each entry after its file.

    `entries` are objects with `relpath` and `save(update_fields=...)` (CacheEntry rows, historical
    or not). A crash between a rename and the row's update leaves the file at the new path: the
    next run sees the old path gone and the new one there, and only updates the row.
    """
    relinked = []
    for entry in entries:
        target = new_cache_relpath(entry.relpath, platform) if forward else old_cache_relpath(entry.relpath, platform)
        if target is None:
            continue
        src, dst = Path(cache_root) / entry.relpath, Path(cache_root) / target
        if (src.exists() or src.is_symlink()) and not (dst.exists() or dst.is_symlink()):
            _rename(src, dst)
        old = entry.relpath
        entry.relpath = target
        entry.save(update_fields=["relpath"])
        relinked.append(f"{old} -> {target}")
    return relinked


def upgrade(*, storage_root: Path, cache_root: Path, platform: str, cache_entries: Iterable[Any]) -> LayoutReport:
    """The whole move to the per-platform layout (storage first, then the cache entries)."""
    report = LayoutReport()
    report.moved = upgrade_storage(storage_root=storage_root, platform=platform)
    report.cache_relinked = relink_cache(cache_root=cache_root, entries=cache_entries, platform=platform)
    if report.changed:
        logger.info(
            "storage moved to the per-platform layout",
            extra={"platform": platform, "moved": len(report.moved), "cache_entries": len(report.cache_relinked)},
        )
    return report
