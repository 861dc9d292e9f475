"""Where things live on disk. Storage (MIST_STORAGE_ROOT) is the source of truth; the cache
(MIST_CACHE_ROOT) is disposable and kept under a size budget. Every build belongs to one platform
(mistcore.platforms), and each platform of a game has its own history, so the layout has a
platform level under each game:

    storage/games/<slug>/<platform>/base/<version>.tar.zst     immutable archive of the platform's first version
    storage/games/<slug>/<platform>/depot -> trees/<version>   the latest version's files (a symlink, switched atomically)
    storage/games/<slug>/<platform>/trees/<version>/           version trees kept on the storage: the latest, and
                                                               parents whose direct delta is not made yet
    storage/games/<slug>/<platform>/manifests/<version>.json   per-version manifest
    storage/games/<slug>/<platform>/deltas/<from>__<to>/       direct delta (+ bundle.tar.zst)
    storage/games/<slug>/<platform>/trees/.staging-<uuid>/     a push in progress (never visible)
    cache/versions/<slug>/<platform>/<version>/                reconstructed historical versions
    cache/archives/<slug>/<platform>/<version>.tar.zst         full archives
    cache/indirect/<job>.tar.zst                               indirect-update bundles

Data pushed before platforms existed had no platform level; migration downloads 0002 moves it
under MIST_DEFAULT_PLATFORM (builds/layout.py, also `manage.py storage_layout`).
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from mistcore.manifest import validate_relpath
from mistcore.platforms import validate_platform


def storage_root() -> Path:
    return Path(settings.MIST_STORAGE_ROOT)


def cache_root() -> Path:
    return Path(settings.MIST_CACHE_ROOT)


def game_dir(slug: str) -> Path:
    return storage_root() / "games" / slug


def platform_dir(slug: str, platform: str) -> Path:
    """Everything of one platform's builds of a game (its own history, depot and deltas)."""
    return game_dir(slug) / validate_platform(platform)


def depot_dir(slug: str, platform: str) -> Path:
    return platform_dir(slug, platform) / "depot"


def trees_dir(slug: str, platform: str) -> Path:
    return platform_dir(slug, platform) / "trees"


def tree_dir(slug: str, platform: str, version: str) -> Path:
    return trees_dir(slug, platform) / version


def base_archive_path(slug: str, platform: str, version: str) -> Path:
    return platform_dir(slug, platform) / "base" / f"{version}.tar.zst"


def manifest_path(slug: str, platform: str, version: str) -> Path:
    return platform_dir(slug, platform) / "manifests" / f"{version}.json"


def delta_dir(slug: str, platform: str, from_version: str, to_version: str) -> Path:
    return platform_dir(slug, platform) / "deltas" / f"{from_version}__{to_version}"


def delta_bundle_path(slug: str, platform: str, from_version: str, to_version: str) -> Path:
    folder = delta_dir(slug, platform, from_version, to_version)
    # Not with_suffix: version names have dots ("1.0__2.0" would become "1.0__2.tar.zst").
    return folder.with_name(folder.name + ".tar.zst")


def cached_version_dir(slug: str, platform: str, version: str) -> Path:
    return cache_root() / "versions" / slug / validate_platform(platform) / version


def jump_bundle_path(slug: str, platform: str, from_version: str, to_version: str) -> Path:
    """A jump delta between any two versions, made on demand (a cache entry: it can be made again)."""
    return cache_root() / "jumps" / slug / validate_platform(platform) / f"{from_version}__{to_version}.tar.zst"


def archive_path(slug: str, platform: str, version: str) -> Path:
    return cache_root() / "archives" / slug / validate_platform(platform) / f"{version}.tar.zst"


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
