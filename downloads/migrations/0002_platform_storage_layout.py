"""Files pushed before platforms move under MIST_DEFAULT_PLATFORM (see builds/layout.py).

builds 0003 gave every existing version the default platform; this moves the files to match:
storage/games/<slug>/{trees,depot,base,manifests,deltas} into games/<slug>/<platform>/, and the
cache's reconstructed versions and archives (with their CacheEntry and FullArchive rows).
Not atomic on purpose: each row is saved right after its file moved, and every step is skipped
when already done, so an interrupted run is finished by running `migrate` (or
`manage.py storage_layout --apply`) again.
"""

from pathlib import Path

from django.conf import settings
from django.db import migrations


def _roots():  # type: ignore[no-untyped-def]
    return Path(settings.MIST_STORAGE_ROOT), Path(settings.MIST_CACHE_ROOT), settings.MIST_DEFAULT_PLATFORM


def forwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    from builds import layout

    storage_root, cache_root, platform = _roots()
    CacheEntry = apps.get_model("builds", "CacheEntry")
    FullArchive = apps.get_model("downloads", "FullArchive")
    layout.upgrade_storage(storage_root=storage_root, platform=platform)
    layout.relink_cache(cache_root=cache_root, entries=CacheEntry.objects.all(), platform=platform)
    # The archive rows name the same paths as their cache entries (files already moved above).
    layout.relink_cache(cache_root=cache_root, entries=FullArchive.objects.all(), platform=platform)


def backwards(apps, schema_editor):  # type: ignore[no-untyped-def]
    from builds import layout

    storage_root, cache_root, platform = _roots()
    Version = apps.get_model("builds", "Version")
    others = Version.objects.exclude(platform=platform)
    if others.exists():
        raise layout.LayoutError(
            f"{others.count()} version(s) are not {platform} builds: the layout before platforms cannot hold them "
            "(remove them first)"
        )
    CacheEntry = apps.get_model("builds", "CacheEntry")
    FullArchive = apps.get_model("downloads", "FullArchive")
    layout.relink_cache(cache_root=cache_root, entries=CacheEntry.objects.all(), platform=platform, forward=False)
    layout.relink_cache(cache_root=cache_root, entries=FullArchive.objects.all(), platform=platform, forward=False)
    layout.downgrade_storage(storage_root=storage_root, platform=platform)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("builds", "0003_version_platform"),
        ("deltas", "0001_initial"),
        ("downloads", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
