"""Parsed manifests kept per process, so API requests do not rebuild 500+ file records each time.

A version's file list is written once, in the push transaction, and never changed afterwards: a
cached manifest cannot go stale. The key still carries the version's content hash and manifest
sha256 next to its id, so a reused id (a restored database, a test database) can never answer with
another build's files. Each gunicorn process has its own cache; nothing is shared or invalidated
across processes, because nothing needs to be. The cache is bounded by the number of file records
it holds (least recently used manifests go first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

from builds.models import Version
from builds.services import read_manifest
from mistcore.manifest import Manifest

# About 0.5 KB per file record: at most ~50 MB per web process, a dozen manifests of an 8,000-file game.
MAX_CACHED_FILES = 100_000

V = TypeVar("V")

ManifestKey = tuple[int, str, str, str]


class WeightedLRU(Generic[V]):
    """A thread-safe LRU mapping bounded by the total weight of its values (gthread workers share it)."""

    def __init__(self, max_weight: int) -> None:
        self.max_weight = max_weight
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def weight(self) -> int:
        return self._weight

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: V, *, weight: int) -> None:
        """Keep `value` unless it alone outweighs the whole budget; evict the least recently used."""
        weight = max(1, weight)
        if weight > self.max_weight:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._items[key] = (value, weight)
            self._weight += weight
            while self._weight > self.max_weight:
                _, (_, dropped) = self._items.popitem(last=False)
                self._weight -= dropped

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._weight = 0


_manifests: WeightedLRU[Manifest] = WeightedLRU(MAX_CACHED_FILES)


def manifest_key(version: Version) -> ManifestKey:
    """What identifies a version's file list: its id and the hashes recorded at push time."""
    return (version.pk, version.name, version.content_hash, version.manifest_sha256)


def cached_manifest(*, version: Version) -> Manifest:
    """The version's manifest (as `read_manifest` gives it), read from the database once per process.

    The object is shared by every caller of this process: read it, never change it.
    """
    key = manifest_key(version)
    manifest = _manifests.get(key)
    if manifest is None:
        manifest = read_manifest(version=version)
        _manifests.put(key, manifest, weight=len(manifest.files))
    return manifest


def clear() -> None:
    """Forget every cached manifest (tests; never needed for correctness)."""
    _manifests.clear()
