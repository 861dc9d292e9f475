"""`manage.py backup` / `restore` and the push lock, against real PostgreSQL, pg_dump and pg_restore.

Restores go into a scratch database created for the test (and into a scratch SQLite file), run by
`manage.py restore` in a subprocess exactly as an admin would run it.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import zstandard
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from builds.models import CacheEntry, Job, Version
from catalog.models import Game
from downloads.models import FullArchive
from mist.ops import BackupInProgress, applied_schema, backup_lock, push_lock
from mistcore.fsutil import sha256_file

BASE_DIR = Path(settings.BASE_DIR)

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="backup/restore of PostgreSQL needs PostgreSQL (CI has it)"
)


# --- helpers -------------------------------------------------------------------------------------


def _server_dsn(dbname: str) -> str:
    s = connection.settings_dict
    auth = s.get("USER") or "postgres"
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}/{dbname}"


@pytest.fixture
def scratch_db() -> Iterator[str]:
    """A freshly created, empty PostgreSQL database (dropped afterwards); yields its URL."""
    name = f"test_mist_restore_{secrets.token_hex(4)}"
    with psycopg.connect(_server_dsn("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _server_dsn(name)
    finally:
        with psycopg.connect(_server_dsn("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _manage(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1", **env}
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        cwd=BASE_DIR, env=full_env, capture_output=True, text=True, timeout=120,
    )
    if check:
        assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def _tables(url: str) -> list[str]:
    return [row[0] for row in _query(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file under root (symlinked folders are not entered)."""
    found = {}
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                found[path.relative_to(root).as_posix()] = sha256_file(path)
    return found


def _make_backup(dest: Path) -> Path:
    call_command("backup", str(dest), stdout=open(os.devnull, "w"))
    (folder,) = [p for p in dest.iterdir() if p.name.startswith("mist-backup-")]
    return folder


@pytest.fixture
def store(mist_roots: dict[str, Path], admin_user: Any, friend: Any) -> dict[str, Any]:
    """Rows and files of a small store: a game with jobs and a cache record, a depot, a staging push."""
    game = Game.objects.create(slug="space-game", title="Space Game")
    Job.objects.create(kind="direct_delta", key="direct:1:2", task="deltas.tasks.x", game=game, status="done")
    Job.objects.create(kind="archive", key="archive:1", task="downloads.tasks.x", game=game, status="done",
                       result={"url": "/dl/archive/space-game/1.0"})
    version = Version.objects.create(game=game, name="1.0", seq=1, content_hash="0" * 64, status="ready")
    CacheEntry.objects.create(key=f"archive:{version.pk}", relpath="archives/space-game/1.0.tar.zst", size=5)
    FullArchive.objects.create(version=version, relpath="archives/space-game/1.0.tar.zst", size=5, sha256="1" * 64)
    storage = mist_roots["storage"]
    files = {
        "games/space-game/trees/1.0/bin/game.exe": os.urandom(3000),
        "games/space-game/trees/1.0/data/level 1.pak": b"level" * 100,
        "games/space-game/trees/1.0/.itch.toml": b"[[actions]]",  # a game's own dot file is kept
        "games/space-game/trees/1.1/data/level 1.pak": b"level" * 101,
        "games/space-game/manifests/1.0.json": b'{"format": "mist-manifest/1"}',
        "uploads/5d1c.part": b"first chunk of an upload that resumes after a restore",
        "media/headers/abc.jpg": b"\xff\xd8jpeg",
    }
    for rel, data in files.items():
        (storage / rel).parent.mkdir(parents=True, exist_ok=True)
        (storage / rel).write_bytes(data)
    game_dir = storage / "games/space-game"
    (game_dir / "trees/1.0/bin/game.exe").chmod(0o755)
    # unchanged files are hard links between trees; the depot is a relative symlink to the latest tree
    (game_dir / "trees/1.1/bin").mkdir()
    os.link(game_dir / "trees/1.0/bin/game.exe", game_dir / "trees/1.1/bin/game.exe")
    os.symlink("trees/1.1", game_dir / "depot")
    # half-made things that a backup must leave out
    (game_dir / f"trees/.staging-{'ab' * 16}").mkdir()
    (game_dir / f"trees/.staging-{'ab' * 16}/partial.bin").write_bytes(b"half a push")
    (storage / "staging/4f2a").mkdir(parents=True)
    (storage / "staging/4f2a/partial.bin").write_bytes(b"half a push, old layout")
    (game_dir / f"manifests/.1.1.json.tmp-{'0a' * 6}").write_bytes(b"being written")
    files["games/space-game/trees/1.1/bin/game.exe"] = files["games/space-game/trees/1.0/bin/game.exe"]
    (mist_roots["cache"] / "archives/space-game").mkdir(parents=True)
    (mist_roots["cache"] / "archives/space-game/1.0.tar.zst").write_bytes(b"cache")
    return {"game": game, "files": files, "admin": admin_user, "friend": friend}


# --- backup --------------------------------------------------------------------------------------


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_backup_holds_database_storage_and_a_manifest_with_hashes(store: dict[str, Any], tmp_path: Path) -> None:
    # when
    folder = _make_backup(tmp_path / "backups")

    # then: backup.json describes every part truthfully
    manifest = json.loads((folder / "backup.json").read_text())
    assert manifest["format"] == "mist-backup/1"
    assert manifest["schema"] == applied_schema()
    on_disk = MigrationLoader(None).disk_migrations
    assert manifest["schema"]["builds"] == max(name for app, name in on_disk if app == "builds")
    assert manifest["mist_version"] and manifest["django_version"]
    for part in manifest["parts"].values():
        path = folder / part["file"]
        assert path.stat().st_size == part["size"]
        assert sha256_file(path) == part["sha256"]
    assert manifest["parts"]["database"]["format"] == "pg_dump-custom"
    assert "pg_dump (PostgreSQL)" in manifest["parts"]["database"]["tool"]
    # a real custom-format dump that pg_restore can read, with our tables in it
    listing = subprocess.run(["pg_restore", "--list", str(folder / "database.pgdump")], capture_output=True,
                             text=True, check=True).stdout
    assert "TABLE DATA public catalog_game" in listing
    # the storage tar: every file and link but pushes in progress and temp files, executable bit kept
    with open(folder / "storage.tar.zst", "rb") as fh, zstandard.ZstdDecompressor().stream_reader(fh) as reader:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            members = {m.name: m for m in tar}
    assert set(members) == set(store["files"]) | {"games/space-game/depot"}
    assert members["games/space-game/trees/1.0/bin/game.exe"].mode & 0o111
    assert members["games/space-game/depot"].issym() and members["games/space-game/depot"].linkname == "trees/1.1"
    assert members["games/space-game/trees/1.1/bin/game.exe"].islnk()
    assert manifest["parts"]["storage"]["files"] == len(store["files"]) - 1
    assert manifest["parts"]["storage"]["links"] == 2
    # nothing half-written is left beside the backup
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [folder.name]


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_backup_waits_for_a_running_push_then_says_so_clearly(store: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "backups"
    with push_lock():
        with pytest.raises(CommandError, match="pushes were still running after 0.5 s"):
            call_command("backup", str(dest), "--lock-timeout", "0.5", stdout=open(os.devnull, "w"))
    assert list(dest.iterdir()) == []  # no partial backup left behind


# --- restore -------------------------------------------------------------------------------------


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_restore_into_a_fresh_database_and_storage_gives_back_everything(
    store: dict[str, Any], tmp_path: Path, scratch_db: str
) -> None:
    # given: a backup, and a new machine's empty database, empty storage and a stale cache
    folder = _make_backup(tmp_path / "backups")
    new_storage, new_cache = tmp_path / "new-storage", tmp_path / "new-cache"
    (new_cache / "archives/old").mkdir(parents=True)
    (new_cache / "archives/old/9.9.tar.zst").write_bytes(b"stale")
    env = {"DATABASE_URL": scratch_db, "MIST_STORAGE_ROOT": str(new_storage), "MIST_CACHE_ROOT": str(new_cache)}

    # when
    result = _manage("restore", str(folder), env=env)

    # then: the rows are back with their ids (tokens and audit rows refer to them) ...
    assert "every part matches its sha256" in result.stdout
    assert "2 users, 1 games, 1 versions" in result.stdout
    users = _query(scratch_db, "SELECT id, username, is_staff FROM accounts_user ORDER BY id")
    assert users == [(store["admin"].pk, "admin", True), (store["friend"].pk, "friend", False)]
    assert _query(scratch_db, "SELECT slug FROM catalog_game") == [("space-game",)]
    # ... the storage tree is identical, without pushes in progress and temp files ...
    original = _tree(settings.MIST_STORAGE_ROOT)
    assert _tree(new_storage) == {rel: original[rel] for rel in store["files"]}
    restored = new_storage / "games/space-game"
    assert os.readlink(restored / "depot") == "trees/1.1"
    assert (restored / "depot/bin/game.exe").stat().st_mode & 0o111
    assert (restored / "trees/1.0/bin/game.exe").samefile(restored / "trees/1.1/bin/game.exe")
    # ... and the cache is forgotten: no cache record, no job that claims a cached archive, no files
    assert _query(scratch_db, "SELECT count(*) FROM builds_cacheentry") == [(0,)]
    assert _query(scratch_db, "SELECT count(*) FROM downloads_fullarchive") == [(0,)]
    assert _query(scratch_db, "SELECT name, status FROM builds_version") == [("1.0", "ready")]
    assert _query(scratch_db, "SELECT kind FROM builds_job") == [("direct_delta",)]
    assert not (new_cache / "archives").exists()
    # the restored database is usable by Mist as is (the cache table exists, no migration pending)
    check = _manage("migrate", "--check", env=env, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "mist_cache" in _tables(scratch_db)


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_non_empty_database_and_storage_and_changes_nothing(
    store: dict[str, Any], tmp_path: Path
) -> None:
    folder = _make_backup(tmp_path / "backups")
    Game.objects.create(slug="added-later", title="Added later")
    before = _tree(settings.MIST_STORAGE_ROOT)

    with pytest.raises(CommandError) as excinfo:
        call_command("restore", str(folder), stdout=open(os.devnull, "w"))

    message = str(excinfo.value)
    assert "is not empty" in message and "storage" in message and "--force" in message
    assert "Nothing was changed" in message
    assert Game.objects.filter(slug="added-later").exists()
    assert _tree(settings.MIST_STORAGE_ROOT) == before


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_restore_force_replaces_database_and_storage(store: dict[str, Any], tmp_path: Path, scratch_db: str) -> None:
    folder = _make_backup(tmp_path / "backups")
    target_storage = tmp_path / "target-storage"
    env = {"DATABASE_URL": scratch_db, "MIST_STORAGE_ROOT": str(target_storage),
           "MIST_CACHE_ROOT": str(tmp_path / "target-cache")}
    _manage("restore", str(folder), env=env)
    # given: the restored system changed since (a new game, a new file)
    with psycopg.connect(scratch_db) as conn:
        conn.execute("UPDATE catalog_game SET title = 'Renamed'")
    (target_storage / "games/space-game/depot/new.txt").write_text("new")

    refused = _manage("restore", str(folder), env=env, check=False)
    assert refused.returncode != 0 and "--force" in refused.stderr
    forced = _manage("restore", "--force", str(folder), env=env)

    assert "--force: dropping" in forced.stdout
    assert _query(scratch_db, "SELECT title FROM catalog_game") == [("Space Game",)]
    assert set(_tree(target_storage)) == set(store["files"])


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_damaged_part_before_touching_anything(
    store: dict[str, Any], tmp_path: Path, scratch_db: str
) -> None:
    folder = _make_backup(tmp_path / "backups")
    tar = folder / "storage.tar.zst"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    env = {"DATABASE_URL": scratch_db, "MIST_STORAGE_ROOT": str(tmp_path / "s2"),
           "MIST_CACHE_ROOT": str(tmp_path / "c2")}

    result = _manage("restore", str(folder), env=env, check=False)

    assert result.returncode != 0
    assert "storage.tar.zst does not match its recorded sha256" in result.stderr
    assert _tables(scratch_db) == []
    assert not (tmp_path / "s2").exists() or list((tmp_path / "s2").iterdir()) == []


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_backup_from_a_newer_mist(store: dict[str, Any], tmp_path: Path, scratch_db: str) -> None:
    folder = _make_backup(tmp_path / "backups")
    manifest = json.loads((folder / "backup.json").read_text())
    manifest["schema"]["builds"] = "0999_from_the_future"
    (folder / "backup.json").write_text(json.dumps(manifest))
    env = {"DATABASE_URL": scratch_db, "MIST_STORAGE_ROOT": str(tmp_path / "s2"),
           "MIST_CACHE_ROOT": str(tmp_path / "c2")}

    result = _manage("restore", str(folder), env=env, check=False)

    assert result.returncode != 0
    assert "newer Mist" in result.stderr and "builds.0999_from_the_future" in result.stderr
    assert _tables(scratch_db) == []


def test_restore_of_something_that_is_not_a_backup_says_so(tmp_path: Path, db: None) -> None:
    with pytest.raises(CommandError, match="is not a Mist backup: no backup.json"):
        call_command("restore", str(tmp_path), stdout=open(os.devnull, "w"))


# --- SQLite (the embedded demo), and moving the demo to PostgreSQL -------------------------------


@needs_postgres
@pytest.mark.slow
def test_sqlite_backup_restores_into_sqlite_and_into_postgresql(tmp_path: Path, scratch_db: str) -> None:
    # given: an embedded demo on SQLite with a friend and a game
    demo = {"DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}", "MIST_STORAGE_ROOT": str(tmp_path / "demo"),
            "MIST_CACHE_ROOT": str(tmp_path / "demo-cache")}
    _manage("migrate", "-v", "0", env=demo)
    _manage("createcachetable", env=demo)
    _manage("shell", "-c", "from accounts.models import User; from catalog.models import Game; "
            "User.objects.create_user('friend', password='pw-Passw0rd!'); Game.objects.create(slug='g', title='G')",
            env=demo)
    (tmp_path / "demo/games/g/depot").mkdir(parents=True)
    (tmp_path / "demo/games/g/depot/f.bin").write_bytes(b"x" * 100)

    _manage("backup", str(tmp_path / "bk"), env=demo)
    (folder,) = (tmp_path / "bk").iterdir()
    assert json.loads((folder / "backup.json").read_text())["parts"]["database"]["format"] == "django-json"

    # when: restored into a new SQLite file, and into PostgreSQL (leaving the demo for production)
    copy = {"DATABASE_URL": f"sqlite:///{tmp_path / 'copy.sqlite3'}", "MIST_STORAGE_ROOT": str(tmp_path / "copy"),
            "MIST_CACHE_ROOT": str(tmp_path / "copy-cache")}
    _manage("restore", str(folder), env=copy)
    prod = {"DATABASE_URL": scratch_db, "MIST_STORAGE_ROOT": str(tmp_path / "prod"),
            "MIST_CACHE_ROOT": str(tmp_path / "prod-cache")}
    _manage("restore", str(folder), env=prod)

    # then: the friend can log in on both, and PostgreSQL's sequences were moved past the restored ids
    probe = ("from django.contrib.auth import authenticate; from accounts.models import User; "
             "assert authenticate(username='friend', password='pw-Passw0rd!'); "
             "User.objects.create_user('new'); print(User.objects.count())")
    assert _manage("shell", "-c", probe, env=copy).stdout.split()[-1] == "2"
    assert _manage("shell", "-c", probe, env=prod).stdout.split()[-1] == "2"
    assert (tmp_path / "prod/games/g/depot/f.bin").read_bytes() == b"x" * 100


# --- the push lock -------------------------------------------------------------------------------


@needs_postgres
def test_a_push_is_refused_while_a_backup_holds_the_lock(db: None) -> None:
    with backup_lock(timeout=1):
        with pytest.raises(BackupInProgress, match="a backup is running"):
            with push_lock():
                pass
    with push_lock():  # released with the backup
        pass


@needs_postgres
def test_pushes_share_the_lock(db: None) -> None:
    with push_lock(), push_lock():
        pass


@needs_postgres
def test_a_waiting_backup_refuses_new_pushes_then_runs_when_the_running_push_ends(db: None) -> None:
    # given: a push in progress, and a backup that starts waiting for it
    events: list[str] = []
    release_push = threading.Event()
    push_started = threading.Event()

    def running_push() -> None:
        with push_lock():
            push_started.set()
            release_push.wait(10)
            events.append("push done")

    def backup() -> None:
        with backup_lock(timeout=10):
            events.append("backup has the lock")

    pusher = threading.Thread(target=running_push)
    pusher.start()
    assert push_started.wait(10)
    backer = threading.Thread(target=backup)
    backer.start()
    deadline = time.monotonic() + 10
    while not _backup_is_waiting() and time.monotonic() < deadline:
        time.sleep(0.05)

    # when/then: a new push is refused at once, rather than starving the backup
    with pytest.raises(BackupInProgress):
        with push_lock():
            pass
    assert events == []
    release_push.set()
    pusher.join(10)
    backer.join(10)
    assert events == ["push done", "backup has the lock"]


def _backup_is_waiting() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return bool(cursor.fetchone()[0])


# --- hostile or broken storage archives ------------------------------------------------------------


def _write_tar_zst(path: Path, members: list[tuple[str, str, str]]) -> None:
    """members: (kind, name, data-or-link) with kind in file/symlink/hardlink."""
    with open(path, "wb") as raw, zstandard.ZstdCompressor().stream_writer(raw, closefd=False) as zw:
        with tarfile.open(fileobj=zw, mode="w|") as tar:
            for kind, name, value in members:
                info = tarfile.TarInfo(name)
                if kind == "file":
                    data = value.encode()
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                    info.linkname = value
                    tar.addfile(info)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("file", "../escaped.txt", "x")], "unsafe path"),
        ([("file", "/tmp/escaped.txt", "x")], "unsafe path"),
        ([("symlink", "games/g/depot", "../../../outside")], "leads out of the storage"),
        ([("symlink", "games/g/depot", "/etc")], "leads out of the storage"),
        ([("symlink", "games/g/link", "."), ("file", "games/g/link/../../../escaped.txt", "x")], "unsafe path"),
        ([("symlink", "up", ".."), ("file", "up/escaped.txt", "x")], "leads out of the storage"),
        ([("hardlink", "games/g/passwd", "/etc/passwd")], "unsafe hard link target"),
    ],
)
def test_unpacking_refuses_members_that_would_land_outside_the_storage(
    tmp_path: Path, members: list[tuple[str, str, str]], message: str
) -> None:
    from mist.ops import OpsError, _unpack_storage

    archive = tmp_path / "storage.tar.zst"
    _write_tar_zst(archive, members)
    root = tmp_path / "deep" / "storage"

    with pytest.raises(OpsError, match=message):
        _unpack_storage(archive, root)

    assert list(root.iterdir()) == []  # the hidden folder is gone too
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "deep" / "escaped.txt").exists()


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_restore_of_a_hostile_storage_archive_leaves_the_database_untouched(
    store: dict[str, Any], tmp_path: Path, scratch_db: str
) -> None:
    # given: a backup whose storage part was replaced (and its hashes updated, as an attacker would)
    folder = _make_backup(tmp_path / "backups")
    _write_tar_zst(folder / "storage.tar.zst", [("file", "games/ok.txt", "fine"), ("file", "../../evil", "x")])
    manifest = json.loads((folder / "backup.json").read_text())
    manifest["parts"]["storage"].update(size=(folder / "storage.tar.zst").stat().st_size,
                                        sha256=sha256_file(folder / "storage.tar.zst"))
    (folder / "backup.json").write_text(json.dumps(manifest))
    env = {"DATABASE_URL": scratch_db, "MIST_STORAGE_ROOT": str(tmp_path / "s2"),
           "MIST_CACHE_ROOT": str(tmp_path / "c2")}

    result = _manage("restore", str(folder), env=env, check=False)

    assert result.returncode != 0 and "unsafe path '../../evil'" in result.stderr
    assert _tables(scratch_db) == []
    assert list((tmp_path / "s2").iterdir()) == []
    assert not (tmp_path / "evil").exists()
