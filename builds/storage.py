"""Where things live on disk. Storage (MIST_STORAGE_ROOT) is the source of truth; the cache
(MIST_CACHE_ROOT) is disposable and kept under a size budget.

    storage/games/<slug>/base/<version>.tar.zst     immutable archive of the first version
    storage/games/<slug>/depot -> trees/<version>   the latest version's files (a symlink, switched atomically)
    storage/games/<slug>/trees/<version>/           version trees kept on the storage: the latest, and
                                                    parents whose direct delta is not made yet
    storage/games/<slug>/manifests/<version>.json   per-version manifest
    storage/games/<slug>/deltas/<from>__<to>/       direct delta (+ bundle.tar.zst)
    storage/games/<slug>/trees/.staging-<uuid>/     a push in progress (never visible)
    cache/versions/<slug>/<version>/                reconstructed historical versions
    cache/archives/<slug>/<version>.tar.zst         full archives
    cache/indirect/<job>.tar.zst                    indirect-update bundles
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from mistcore.manifest import validate_relpath


def storage_root() -> Path:
    return Path(settings.MIST_STORAGE_ROOT)


def cache_root() -> Path:
    return Path(settings.MIST_CACHE_ROOT)


def game_dir(slug: str) -> Path:
    return storage_root() / "games" / slug


def depot_dir(slug: str) -> Path:
    return game_dir(slug) / "depot"


def trees_dir(slug: str) -> Path:
    return game_dir(slug) / "trees"


def tree_dir(slug: str, version: str) -> Path:
    return trees_dir(slug) / version


def base_archive_path(slug: str, version: str) -> Path:
    return game_dir(slug) / "base" / f"{version}.tar.zst"


def manifest_path(slug: str, version: str) -> Path:
    return game_dir(slug) / "manifests" / f"{version}.json"


def delta_dir(slug: str, from_version: str, to_version: str) -> Path:
    return game_dir(slug) / "deltas" / f"{from_version}__{to_version}"


def delta_bundle_path(slug: str, from_version: str, to_version: str) -> Path:
    folder = delta_dir(slug, from_version, to_version)
    # Not with_suffix: version names have dots ("1.0__2.0" would become "1.0__2.tar.zst").
    return folder.with_name(folder.name + ".tar.zst")


def cached_version_dir(slug: str, version: str) -> Path:
    return cache_root() / "versions" / slug / version


def archive_path(slug: str, version: str) -> Path:
    return cache_root() / "archives" / slug / f"{version}.tar.zst"


def indirect_bundle_path(job_id: str) -> Path:
    return cache_root() / "indirect" / f"{job_id}.tar.zst"


def work_dir() -> Path:
    """Scratch space for the worker (signature uploads, temporary trees); same disk as the cache."""
    path = cache_root() / "work"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_in_tree(root: Path, relpath: str) -> Path:
    """`root/relpath` for a validated relative path: never escapes `root`."""
    return root / validate_relpath(relpath)
