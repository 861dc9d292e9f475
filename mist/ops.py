"""Operations: the push lock, and consistent backups and restores of the database and the storage tree.

A backup is a folder `mist-backup-<UTC time>/` holding
    database.pgdump     `pg_dump --format=custom` (PostgreSQL), or
    database.json       `dumpdata --natural-foreign` (SQLite, the embedded demo)
    storage.tar.zst     MIST_STORAGE_ROOT (files, the depot symlinks, hard links as links) without
                        pushes in progress (`staging/`, `trees/.staging-*`) and half-written temp files
    backup.json         time, versions of Mist/Django/PostgreSQL, the schema (latest migration per
                        app) and the size and sha256 of each part
The cache (MIST_CACHE_ROOT) is not backed up: it is disposable, the worker rebuilds archives and
reconstructed versions on demand. So a restore also forgets every cache record.

Consistency: the database is dumped first, then the storage tree is read, and pushes are refused for
the whole time by holding the push lock exclusively. Everything the dumped database refers to was
therefore already on disk when the tree was read; files added after the dump (a delta a worker just
finished) are harmless extras. This module imports no Mist app (the apps import `push_lock` from it);
the few models a restore touches are looked up by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import django
import zstandard
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.core.management.color import no_style
from django.core.management.sql import emit_post_migrate_signal
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder

from builds.locks import (  # noqa: F401 (re-exported)
    PUSH_LOCK_KEY,
    PUSH_LOCK_NAME,
    BackupInProgress,
    LockTimeout,
    backup_lock,
    push_lock,
)
from mistcore.fsutil import HashingWriter, fsync_dir, sha256_file

BACKUP_FORMAT = "mist-backup/1"
MANIFEST_NAME = "backup.json"
PG_DUMP_NAME = "database.pgdump"
JSON_DUMP_NAME = "database.json"
STORAGE_NAME = "storage.tar.zst"

# Top-level folders of MIST_CACHE_ROOT that a restore empties (see builds/storage.py).
CACHE_SUBDIRS = ("versions", "archives", "indirect", "work")
# Rows that describe files in the cache (the LRU entries, the full archives).
CACHE_RECORD_MODELS = ("builds.CacheEntry", "downloads.FullArchive")
# Jobs whose only output lives in the cache: after a restore their rows would point at nothing.
CACHE_JOB_KINDS = ("archive", "reconstruct", "indirect")

Report = Callable[[str], None]


class OpsError(Exception):
    """A backup or restore could not be done; the message says why and what to do."""


@contextlib.contextmanager
def _exclusive_push_lock(timeout: float) -> Iterator[None]:
    try:
        with backup_lock(timeout=timeout):
            yield
    except LockTimeout as exc:
        raise OpsError(str(exc)) from exc


def _quiet(message: str) -> None:
    return None


def _is_postgres(alias: str = DEFAULT_DB_ALIAS) -> bool:
    return connections[alias].vendor == "postgresql"


# --- Facts about this installation -------------------------------------------------------------


def mist_version() -> str:
    """The installed package's version, or pyproject.toml's when running from a checkout."""
    try:
        return metadata.version("mist")
    except metadata.PackageNotFoundError:
        pass
    try:
        with open(Path(settings.BASE_DIR) / "pyproject.toml", "rb") as fh:
            return f"{tomllib.load(fh)['project']['version']} (source checkout)"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def applied_schema() -> dict[str, str]:
    """The latest applied migration of each app, e.g. {"builds": "0003_cacheentry_pinned"}."""
    latest: dict[str, str] = {}
    for app_label, name in MigrationRecorder(connection).applied_migrations():
        if name > latest.get(app_label, ""):
            latest[app_label] = name
    return dict(sorted(latest.items()))


def _database_tables() -> list[str]:
    with connection.cursor() as cursor:
        return sorted(connection.introspection.table_names(cursor))


def _cache_tables() -> list[str]:
    return sorted(
        str(cache["LOCATION"])
        for cache in settings.CACHES.values()
        if cache.get("BACKEND") == "django.core.cache.backends.db.DatabaseCache"
    )


def _tool_major(version_text: str) -> int:
    """Major version from `pg_dump --version` ("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)")."""
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", version_text)
    if not match:
        raise OpsError(f"cannot read a PostgreSQL version from {version_text!r}")
    return int(match.group(1))


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise OpsError(f"{name} is not installed: apt-get install postgresql-client (it must be the same "
                       "major version as the server, or newer)")
    return path


def _pg_tool_version(name: str) -> str:
    out = subprocess.run([_pg_tool(name), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _server_major() -> int:
    connection.ensure_connection()
    return int(connection.pg_version) // 10000  # type: ignore[attr-defined]


def _libpq_env() -> dict[str, str]:
    """Environment for pg_dump/pg_restore pointing at Django's database (password never on argv)."""
    s = connection.settings_dict
    env = dict(os.environ)
    for key, var in (("HOST", "PGHOST"), ("PORT", "PGPORT"), ("USER", "PGUSER"), ("PASSWORD", "PGPASSWORD"),
                     ("NAME", "PGDATABASE")):
        env.pop(var, None)
        if s.get(key):
            env[var] = str(s[key])
    options = s.get("OPTIONS") or {}
    for option, var in (("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT"), ("sslcert", "PGSSLCERT"),
                        ("sslkey", "PGSSLKEY"), ("passfile", "PGPASSFILE"), ("service", "PGSERVICE")):
        if options.get(option):
            env[var] = str(options[option])
    return env


def _run_pg_tool(args: list[str], *, what: str) -> None:
    result = subprocess.run(args, env=_libpq_env(), capture_output=True, text=True)
    if result.returncode != 0:
        raise OpsError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")


# --- Backup --------------------------------------------------------------------------------------


@dataclass
class TreeStats:
    files: int = 0
    bytes: int = 0
    links: int = 0
    skipped: list[str] = field(default_factory=list)


# Names Mist gives to things that are half made: atomic files and folders (".<name>.tmp-<hex>",
# ".<name>.old-<hex>", mistcore.fsutil), pushes in progress (".staging-<hex>"), depot symlink swaps
# (".depot-<hex>"), readiness probes (".readyz-<hex>") and restores (".restore.tmp-<hex>"). Precise
# patterns, not "any dot file": game builds may well hold files like ".itch.toml".
_TEMP_NAME = re.compile(
    r"^\.(?:.+\.(?:tmp|old)-[0-9a-f]{12}|staging-[0-9a-f]{32}|depot-[0-9a-f]{32}|readyz-[0-9a-f]{32}"
    r"|restore\.tmp-[0-9a-f]{12})$"
)


def _is_temp_name(name: str) -> bool:
    return bool(_TEMP_NAME.match(name))


def _storage_members(root: Path) -> Iterator[tuple[Path, str]]:
    """(path, name in the tar) of every file and symlink to back up, sorted; no staging, no temp names."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root)
        keep = sorted(d for d in dirnames if not _is_temp_name(d) and not (rel == Path(".") and d == "staging"))
        # os.walk lists symlinks to folders (the depot -> trees/<version> link) but does not enter them.
        links = [d for d in keep if (here / d).is_symlink()]
        dirnames[:] = [d for d in keep if d not in links]
        for name in sorted([*links, *(f for f in filenames if not _is_temp_name(f))]):
            yield here / name, (rel / name).as_posix()


class _ExactReader:
    """Reads exactly `size` bytes of a file that may shrink while it is read (an upload being resent):
    the tar member keeps its announced size, the missing tail is zeros, and `short` says so."""

    def __init__(self, fh: Any, size: int) -> None:
        self._fh, self._left, self.short = fh, size, False

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._fh.read(n)
        if len(data) < n:
            self.short = True
            data += bytes(n - len(data))
        self._left -= len(data)
        return data


def _pack_storage(root: Path, dst: Path) -> tuple[int, str, TreeStats]:
    """Stream the storage tree into a .tar.zst; return (size, sha256, stats)."""
    stats = TreeStats()
    # Level 3 and one thread: fast, and leaves the second core to the web server during a backup.
    cctx = zstandard.ZstdCompressor(level=3, threads=0, write_checksum=True)
    with open(dst, "xb") as raw:
        counter = HashingWriter(raw)
        zw = cctx.stream_writer(counter, closefd=False)  # type: ignore[arg-type]  # a write-only file
        try:
            with tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
                for path, name in _storage_members(root):
                    _add_member(tar, path, name, stats)
        finally:
            zw.close()  # after the tar: its end-of-archive blocks must be inside the zstd frame
        raw.flush()
        os.fsync(raw.fileno())
    return counter.count, counter.hexdigest(), stats


def _add_member(tar: tarfile.TarFile, path: Path, name: str, stats: TreeStats) -> None:
    if path.is_symlink():
        info = tar.gettarinfo(str(path), arcname=name)
        info.uname = info.gname = ""
        tar.addfile(info)
        stats.links += 1
        return
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        stats.skipped.append(f"{name} (vanished while the backup ran)")
        return
    with fh:
        # Hard links (trees sharing unchanged files) are kept as links, once per inode.
        info = tar.gettarinfo(arcname=name, fileobj=fh)
        info.uname = info.gname = ""
        if info.islnk():
            tar.addfile(info)
            stats.links += 1
            return
        if not info.isreg():
            stats.skipped.append(f"{name} (not a regular file)")
            return
        reader = _ExactReader(fh, info.size)
        tar.addfile(info, reader)  # type: ignore[arg-type]
        if reader.short:
            stats.skipped.append(f"{name} (shrank while it was read; its tail is zeros)")
        stats.files += 1
        stats.bytes += info.size


def _dump_database(work: Path) -> dict[str, Any]:
    if _is_postgres():
        server = _server_major()
        tool = _pg_tool_version("pg_dump")
        if _tool_major(tool) < server:
            raise OpsError(f"{tool} cannot dump a PostgreSQL {server} server: install postgresql-client-{server}")
        path = work / PG_DUMP_NAME
        args = [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--file={path}"]
        # The database cache (sessions are not in it) is rebuilt by use: keep its table, not its rows.
        args += [f"--exclude-table-data={table}" for table in _cache_tables()]
        _run_pg_tool(args, what="pg_dump")
        return {"file": PG_DUMP_NAME, "format": "pg_dump-custom", "tool": tool,
                "server_version": f"{connection.pg_version // 10000}.{connection.pg_version % 10000}"}  # type: ignore[attr-defined]
    path = work / JSON_DUMP_NAME
    # Natural keys for content types and permissions (recreated by migrate); primary keys kept, since
    # tokens and audit rows refer to users by id.
    call_command("dumpdata", natural_foreign=True, use_base_manager=True, output=str(path), verbosity=0,
                 exclude=["contenttypes", "auth.permission"])
    return {"file": JSON_DUMP_NAME, "format": "django-json", "tool": f"Django {django.get_version()} dumpdata"}


@dataclass
class BackupResult:
    path: Path
    manifest: dict[str, Any]


def create_backup(*, dest: Path, lock_timeout: float = 600, report: Report = _quiet) -> BackupResult:
    """Write a consistent backup (database, then storage tree) into a new folder under `dest`."""
    started = time.monotonic()
    created_at = datetime.now(UTC)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    name = f"mist-backup-{created_at:%Y%m%dT%H%M%SZ}"
    final = dest / name
    if final.exists():
        raise OpsError(f"{final} already exists (two backups in the same second?)")
    work = dest / f".{name}.partial-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        report(f"waiting for running pushes, then refusing new ones (lock {PUSH_LOCK_NAME!r})")
        with _exclusive_push_lock(lock_timeout):
            t0 = time.monotonic()
            database = _dump_database(work)
            db_file = work / database["file"]
            database.update(size=db_file.stat().st_size, sha256=sha256_file(db_file),
                            seconds=round(time.monotonic() - t0, 2))
            report(f"database: {database['file']} ({database['size']} bytes) in {database['seconds']} s")
            schema = applied_schema()
            t0 = time.monotonic()
            size, digest, stats = _pack_storage(Path(settings.MIST_STORAGE_ROOT), work / STORAGE_NAME)
            storage = {"file": STORAGE_NAME, "format": "tar+zstd", "size": size, "sha256": digest,
                       "files": stats.files, "links": stats.links, "bytes": stats.bytes, "skipped": stats.skipped,
                       "source": str(settings.MIST_STORAGE_ROOT), "seconds": round(time.monotonic() - t0, 2)}
            report(f"storage: {stats.files} files ({stats.bytes} bytes), {stats.links} links -> {STORAGE_NAME} ({size} bytes) "
                   f"in {storage['seconds']} s")
            for skipped in stats.skipped:
                report(f"  skipped {skipped}")
        manifest = {
            "format": BACKUP_FORMAT,
            "created_at": created_at.isoformat(timespec="seconds"),
            "mist_version": mist_version(),
            "django_version": django.get_version(),
            "database_vendor": connection.vendor,
            "schema": schema,
            "parts": {"database": database, "storage": storage},
            "not_included": {
                "pushes in progress": "staging/, games/*/trees/.staging-*/ and half-written temp files",
                "MIST_CACHE_ROOT": "disposable: the worker rebuilds archives and versions on demand",
            },
            "seconds": round(time.monotonic() - started, 2),
        }
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        for part in work.iterdir():
            with open(part, "rb") as fh:
                os.fsync(fh.fileno())
        os.rename(work, final)  # only a complete backup ever carries the final name
        fsync_dir(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return BackupResult(path=final, manifest=manifest)


# --- Restore -------------------------------------------------------------------------------------


def read_backup(source: Path) -> dict[str, Any]:
    """Read backup.json and check every part's size and sha256; raise OpsError on any mismatch."""
    source = Path(source)
    try:
        manifest = json.loads((source / MANIFEST_NAME).read_text())
    except FileNotFoundError as exc:
        raise OpsError(f"{source} is not a Mist backup: no {MANIFEST_NAME}") from exc
    except ValueError as exc:
        raise OpsError(f"{source / MANIFEST_NAME} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        raise OpsError(f"{source / MANIFEST_NAME}: unknown format {manifest.get('format')!r}, "
                       f"expected {BACKUP_FORMAT!r}")
    for key in ("database", "storage"):
        part = manifest.get("parts", {}).get(key)
        if not isinstance(part, dict) or not {"file", "size", "sha256"} <= set(part):
            raise OpsError(f"{source / MANIFEST_NAME}: the {key} part is missing or incomplete")
        path = source / Path(part["file"]).name
        if not path.is_file():
            raise OpsError(f"{path} is missing")
        if path.stat().st_size != part["size"]:
            raise OpsError(f"{path} is {path.stat().st_size} bytes, the backup recorded {part['size']}: "
                           "damaged or incomplete, nothing was restored")
        if sha256_file(path) != part["sha256"]:
            raise OpsError(f"{path} does not match its recorded sha256: damaged, nothing was restored")
    return manifest


def _unknown_migrations(schema: dict[str, str]) -> list[str]:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return [f"{app}.{name}" for app, name in sorted(schema.items()) if (app, name) not in loader.disk_migrations]


def _pending_migrations() -> list[str]:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{m.app_label}.{m.name}" for m, _backwards in plan]


def _storage_entries(root: Path) -> list[str]:
    """Files of the storage tree a restore would overwrite (staging/ and temp files do not count)."""
    return [name for _path, name in _storage_members(root)]


def _drop_all_tables() -> None:
    tables = _database_tables()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA foreign_keys = OFF")
        for table in tables:
            cascade = " CASCADE" if connection.vendor == "postgresql" else ""
            cursor.execute(f"DROP TABLE IF EXISTS {connection.ops.quote_name(table)}{cascade}")
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA foreign_keys = ON")


def _restore_json(path: Path, schema: dict[str, str]) -> None:
    # Bring the empty database to exactly the backup's schema, load the rows, then reset sequences.
    executor = MigrationExecutor(connection)
    targets = [(app, schema.get(app)) for app in sorted(executor.loader.migrated_apps)]
    executor.migrate(targets)  # type: ignore[arg-type]
    # Content types and permissions come from post_migrate, and the dump refers to them by natural key.
    emit_post_migrate_signal(verbosity=0, interactive=False, db=connection.alias)
    call_command("loaddata", str(path), verbosity=0)
    models = list(apps.get_models(include_auto_created=True))
    statements = connection.ops.sequence_reset_sql(no_style(), models)
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


def _restore_pgdump(path: Path) -> None:
    tool = _pg_tool_version("pg_restore")
    args = [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
            f"--dbname={connection.settings_dict['NAME']}", str(path)]
    _run_pg_tool(args, what=tool)


def _safe_relpath(name: str, *, what: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not name or "\0" in name or path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        raise OpsError(f"the backup holds an unsafe {what} {name!r}: nothing of the storage was restored")
    return path


def _inside(base: Path, path: Path) -> bool:
    base_real, real = os.path.realpath(base), os.path.realpath(path)
    return real == base_real or real.startswith(base_real + os.sep)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, umask: int) -> None:
    """Write one member under `dest`, refusing anything that could land outside it.

    Our own code rather than tarfile.extract: Debian 12's Python 3.11.2 predates extraction filters,
    and tarfile would chown to the archive's numeric owners when run as root.
    """
    rel = _safe_relpath(member.name, what="path")
    target = dest.joinpath(*rel.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _inside(dest, target.parent):
        raise OpsError(f"the backup's {member.name!r} would be written through a link out of the storage")
    if member.issym():
        link = PurePosixPath(member.linkname)
        if link.is_absolute() or not _inside(dest, target.parent / link):
            raise OpsError(f"the backup's link {member.name!r} -> {member.linkname!r} leads out of the storage")
        os.symlink(member.linkname, target)
        return
    if member.islnk():
        source = dest.joinpath(*_safe_relpath(member.linkname, what="hard link target").parts)
        if source.is_symlink() or not source.is_file() or not _inside(dest, source):
            raise OpsError(f"the backup's hard link {member.name!r} -> {member.linkname!r} is not to a file")
        os.link(source, target)
        return
    src = tar.extractfile(member)
    if src is None:
        raise OpsError(f"the backup's {member.name!r} has no data")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(target, flags, 0o600), "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
        if out.tell() != member.size:
            raise OpsError(f"the backup's {member.name!r} is truncated")
    os.chmod(target, member.mode & 0o777 & ~umask)  # no set-id bits, this system's umask
    os.utime(target, (member.mtime, member.mtime))


def _unpack_storage(archive: Path, root: Path) -> tuple[Path, TreeStats]:
    """Unpack the storage archive into a fresh hidden folder inside `root`; every member is checked."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".restore.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    umask = os.umask(0o022)
    os.umask(umask)
    stats = TreeStats()
    try:
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << 27)
        with open(archive, "rb") as fh, dctx.stream_reader(fh, closefd=False) as reader:
            with tarfile.open(fileobj=reader, mode="r|", encoding="utf-8") as tar:
                for member in tar:
                    if not (member.isreg() or member.issym() or member.islnk()):
                        raise OpsError(f"{archive}: {member.name!r} is not a file or a link; Mist backups "
                                       "hold nothing else")
                    _extract_member(tar, member, tmp, umask)
                    if member.isreg():
                        stats.files += 1
                        stats.bytes += member.size
                    else:
                        stats.links += 1
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, stats


def _swap_storage(unpacked: Path, root: Path, *, force: bool) -> None:
    """Move the unpacked entries into `root` (renames on one filesystem), replacing what is there if forced."""
    try:
        if force:
            for entry in root.iterdir():
                if entry != unpacked:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        for entry in unpacked.iterdir():
            os.rename(entry, root / entry.name)
        fsync_dir(root)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def forget_cache() -> dict[str, int]:
    """Empty the disposable cache and forget every record of it, so the worker rebuilds on demand."""
    cache_root = Path(settings.MIST_CACHE_ROOT)
    for sub in CACHE_SUBDIRS:
        shutil.rmtree(cache_root / sub, ignore_errors=True)
    records = 0
    for label in CACHE_RECORD_MODELS:
        deleted, _ = apps.get_model(label).objects.all().delete()
        records += deleted
    jobs, _ = apps.get_model("builds", "Job").objects.filter(kind__in=CACHE_JOB_KINDS).delete()
    return {"cache_entries": records, "cache_jobs": jobs}


@dataclass
class RestoreResult:
    manifest: dict[str, Any]
    storage: TreeStats
    counts: dict[str, int]
    forgotten: dict[str, int]
    pending_migrations: list[str]


def _counts() -> dict[str, int]:
    counts = {}
    for label, model in (("users", "accounts.User"), ("games", "catalog.Game"), ("versions", "builds.Version")):
        counts[label] = apps.get_model(model).objects.count()
    return counts


def restore_backup(*, source: Path, force: bool = False, lock_timeout: float = 600,
                   report: Report = _quiet) -> RestoreResult:
    """Restore a backup made by `create_backup` into an empty database and storage (or over them, forced)."""
    source = Path(source)
    report(f"checking {source}")
    manifest = read_backup(source)
    report(f"backup of {manifest.get('created_at')} by Mist {manifest.get('mist_version')}: "
           "every part matches its sha256")
    database = manifest["parts"]["database"]
    if database.get("format") == "pg_dump-custom" and connection.vendor != "postgresql":
        raise OpsError("this backup holds a PostgreSQL dump; it can only be restored into PostgreSQL "
                       "(set DATABASE_URL to a PostgreSQL database)")
    if database.get("format") not in ("pg_dump-custom", "django-json"):
        raise OpsError(f"unknown database format {database.get('format')!r}")
    schema = manifest.get("schema") or {}
    unknown = _unknown_migrations(schema)
    if unknown:
        raise OpsError(f"the backup comes from a newer Mist ({manifest.get('mist_version')}): this Mist "
                       f"({mist_version()}) does not know the migrations {', '.join(unknown)}. Install that "
                       "version (or newer) and restore again.")
    storage_root = Path(settings.MIST_STORAGE_ROOT)
    tables = _database_tables()
    existing = _storage_entries(storage_root)
    refusals = []
    if tables:
        refusals.append(f"the database {connection.settings_dict['NAME']} is not empty ({len(tables)} tables)")
    if existing:
        refusals.append(f"the storage {storage_root} is not empty ({len(existing)} files)")
    if refusals and not force:
        raise OpsError("; ".join(refusals) + ". Restore into a freshly created database and an empty storage "
                       "folder, or pass --force to replace what is there. Nothing was changed.")

    with backup_lock(timeout=lock_timeout):
        # The storage first, into a hidden folder: a damaged or hostile archive stops the restore
        # before the database is touched. Moving it into place at the end is a few renames.
        t0 = time.monotonic()
        unpacked, tree = _unpack_storage(source / STORAGE_NAME, storage_root)
        report(f"storage unpacked: {tree.files} files ({tree.bytes} bytes), {tree.links} links "
               f"in {time.monotonic() - t0:.1f} s")
        try:
            t0 = time.monotonic()
            if tables:
                report(f"--force: dropping {len(tables)} tables")
                _drop_all_tables()
            if database["format"] == "pg_dump-custom":
                _restore_pgdump(source / PG_DUMP_NAME)
            else:
                _restore_json(source / JSON_DUMP_NAME, schema)
            # The cache table's rows are never backed up; create it in case the dump has no such table.
            call_command("createcachetable", verbosity=0)
            report(f"database restored from {database['file']} in {time.monotonic() - t0:.1f} s")
        except BaseException:
            shutil.rmtree(unpacked, ignore_errors=True)
            raise
        if existing:
            report(f"--force: replacing {len(existing)} files in {storage_root}")
        _swap_storage(unpacked, storage_root, force=force)
        report(f"storage restored into {storage_root}")
        forgotten = forget_cache()
    return RestoreResult(manifest=manifest, storage=tree, counts=_counts(), forgotten=forgotten,
                         pending_migrations=_pending_migrations())


__all__ = [
    "PUSH_LOCK_KEY",
    "PUSH_LOCK_NAME",
    "BackupInProgress",
    "BackupResult",
    "OpsError",
    "RestoreResult",
    "backup_lock",
    "create_backup",
    "forget_cache",
    "push_lock",
    "read_backup",
    "restore_backup",
]
