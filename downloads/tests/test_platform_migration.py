"""Data from before platforms migrates to MIST_DEFAULT_PLATFORM with nothing lost: rows and files."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from builds import layout, storage

BEFORE = [("builds", "0002_recovery_schedule"), ("deltas", "0001_initial"), ("downloads", "0001_initial")]
AFTER = [
    ("builds", "0003_version_platform"),
    ("deltas", "0001_initial"),
    ("downloads", "0003_download_record_platform"),
]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection).loader.project_state(targets).apps


def _migrate_to_latest() -> None:
    """Leave the test database as every other test expects it: every app at its newest migration."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _old_data(apps: Any, roots: dict[str, Path]) -> dict[str, bytes]:
    """Two versions, a direct delta, a base archive, a cached version and a cached archive, in the old layout."""
    Game, Version = apps.get_model("catalog", "Game"), apps.get_model("builds", "Version")
    DirectDelta, CacheEntry = apps.get_model("deltas", "DirectDelta"), apps.get_model("builds", "CacheEntry")
    FullArchive = apps.get_model("downloads", "FullArchive")
    game = Game.objects.create(slug="oldgame", title="Old game")
    v1 = Version.objects.create(game=game, name="1.0", seq=1, status="ready", content_hash="a" * 64)
    v2 = Version.objects.create(game=game, name="1.1", seq=2, parent=v1, status="ready", content_hash="b" * 64)
    DirectDelta.objects.create(from_version=v1, to_version=v2, status="ready", bundle_size=5, bundle_sha256="c" * 64)
    CacheEntry.objects.create(key=f"version:{v1.pk}", relpath="versions/oldgame/1.0", size=3)
    CacheEntry.objects.create(key=f"archive:{v2.pk}", relpath="archives/oldgame/1.1.tar.zst", size=7, pinned=True)
    FullArchive.objects.create(version=v2, relpath="archives/oldgame/1.1.tar.zst", size=7, sha256="d" * 64)
    old = roots["storage"] / "games" / "oldgame"
    files = {
        "trees/1.1/bin/game.exe": b"new exe",
        "manifests/1.0.json": b"{1.0}",
        "manifests/1.1.json": b"{1.1}",
        "base/1.0.tar.zst": b"base archive",
        "deltas/1.0__1.1/delta_manifest.json": b"{delta}",
        "deltas/1.0__1.1.tar.zst": b"bundl",
    }
    for rel, data in files.items():
        _write(old / rel, data)
    os.symlink("trees/1.1", old / "depot")
    _write(roots["cache"] / "versions/oldgame/1.0/bin/game.exe", b"old")
    _write(roots["cache"] / "archives/oldgame/1.1.tar.zst", b"archive")
    return files


@pytest.mark.django_db(transaction=True)
def test_versions_deltas_and_archives_move_to_the_default_platform(mist_roots: dict[str, Path], settings: Any) -> None:
    # given: a database and a storage as they were before platforms
    settings.MIST_DEFAULT_PLATFORM = "windows"
    try:
        files = _old_data(_migrate(BEFORE), mist_roots)
        # when
        apps = _migrate(AFTER)
        # then: every row is a windows build, every file sits under windows/ with the same bytes
        Version, CacheEntry = apps.get_model("builds", "Version"), apps.get_model("builds", "CacheEntry")
        FullArchive, DirectDelta = apps.get_model("downloads", "FullArchive"), apps.get_model("deltas", "DirectDelta")
        assert sorted(Version.objects.values_list("name", "platform")) == [("1.0", "windows"), ("1.1", "windows")]
        assert DirectDelta.objects.filter(from_version__platform="windows", to_version__platform="windows").count() == 1
        game = mist_roots["storage"] / "games" / "oldgame"
        for rel, data in files.items():
            assert (game / "windows" / rel).read_bytes() == data
            assert not (game / rel).exists()
        assert (storage.depot_dir("oldgame", "windows") / "bin/game.exe").read_bytes() == b"new exe"
        assert storage.delta_bundle_path("oldgame", "windows", "1.0", "1.1").read_bytes() == b"bundl"
        assert sorted(CacheEntry.objects.values_list("relpath", flat=True)) == [
            "archives/oldgame/windows/1.1.tar.zst",
            "versions/oldgame/windows/1.0",
        ]
        assert FullArchive.objects.get().relpath == "archives/oldgame/windows/1.1.tar.zst"
        assert storage.archive_path("oldgame", "windows", "1.1").read_bytes() == b"archive"
        assert (storage.cached_version_dir("oldgame", "windows", "1.0") / "bin/game.exe").read_bytes() == b"old"
        # and running the move again (an interrupted migrate, or the command) changes nothing
        out = io.StringIO()
        call_command("storage_layout", "--apply", stdout=out)
        assert "nothing to do" in out.getvalue()
        assert layout.upgrade_storage(storage_root=mist_roots["storage"], platform="windows") == []

        # when: migrating back (only one platform's data), the old layout comes back whole
        _migrate(BEFORE)
        for rel, data in files.items():
            assert (game / rel).read_bytes() == data
        assert (mist_roots["cache"] / "archives/oldgame/1.1.tar.zst").read_bytes() == b"archive"
        assert (game / "depot" / "bin/game.exe").read_bytes() == b"new exe"
    finally:
        _migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_files_found_after_migrate_are_moved_by_the_command(mist_roots: dict[str, Path], settings: Any) -> None:
    # given: old files that appear after the migration ran (a storage not mounted during migrate)
    old = mist_roots["storage"] / "games" / "late"
    _write(old / "manifests/1.0.json", b"{}")
    _write(old / "linux" / "manifests/2.0.json", b"{linux}")  # a platform folder already there is left alone
    out = io.StringIO()
    call_command("storage_layout", stdout=out)
    assert "games/late" in out.getvalue() and "dry run" in out.getvalue()
    assert (old / "manifests/1.0.json").exists()
    call_command("storage_layout", "--apply", stdout=io.StringIO())
    assert storage.manifest_path("late", settings.MIST_DEFAULT_PLATFORM, "1.0").read_bytes() == b"{}"
    assert storage.manifest_path("late", "linux", "2.0").read_bytes() == b"{linux}"
    assert not (old / "manifests").exists()
