"""The cache under MIST_CACHE_ROOT: registered entries, touched on use, evicted least-recently-used.

Everything in the cache can be rebuilt (archives by the worker, historical versions by chain
replay), so eviction only costs time. Pinned entries (the latest version's archive) stay.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from builds import objectstore, storage
from builds.models import CacheEntry

logger = logging.getLogger("mist.cache")


def register(*, key: str, path: Path, size: int, sha256: str = "", pinned: bool = False) -> CacheEntry:
    """Record (or refresh) a cache entry for `path`, then keep the cache under its budget."""
    relpath = str(Path(path).relative_to(storage.cache_root()))
    entry, _ = CacheEntry.objects.update_or_create(
        key=key,
        defaults={"relpath": relpath, "size": size, "sha256": sha256, "pinned": pinned, "last_used_at": timezone.now()},
    )
    enforce_budget(keep={key})
    return entry


def touch(*, key: str) -> None:
    CacheEntry.objects.filter(key=key).update(last_used_at=timezone.now())


def unpin(*, prefix: str, except_key: str | None = None) -> None:
    qs = CacheEntry.objects.filter(key__startswith=prefix, pinned=True)
    if except_key:
        qs = qs.exclude(key=except_key)
    qs.update(pinned=False)


def used_bytes() -> int:
    return CacheEntry.objects.aggregate(total=Sum("size"))["total"] or 0


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def evict(entry: CacheEntry) -> None:
    path = storage.cache_root() / entry.relpath
    is_file = not path.is_dir()
    _remove_path(path)
    if is_file:
        objectstore.delete(path)  # MIST_STORAGE=s3: an evicted archive or bundle leaves the bucket too
    entry.delete()


def enforce_budget(*, budget: int | None = None, keep: set[str] | None = None) -> list[str]:
    """Evict least-recently-used unpinned entries until the cache fits its budget."""
    budget = settings.MIST_CACHE_BUDGET_BYTES if budget is None else budget
    total = used_bytes()
    evicted: list[str] = []
    if total <= budget:
        return evicted
    for entry in CacheEntry.objects.filter(pinned=False).exclude(key__in=keep or set()).order_by("last_used_at"):
        if total <= budget:
            break
        evict(entry)
        total -= entry.size
        evicted.append(entry.key)
    if evicted:
        logger.info("cache evicted", extra={"entries": ",".join(evicted), "used_bytes": total, "budget": budget})
    return evicted
