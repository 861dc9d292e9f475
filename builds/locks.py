"""The push lock: pushes share it, a backup takes it exclusively (see mist/ops.py)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.utils import DatabaseError, OperationalError


class BackupInProgress(Exception):
    """A push was refused because a backup holds the push lock."""


class LockTimeout(Exception):
    """The exclusive lock could not be had in time."""


PUSH_LOCK_NAME = "mist-push"
# pg_advisory_lock takes a bigint: the first 8 bytes of sha256("mist-push"), fixed forever so that
# every Mist version (and a DBA looking at pg_locks) agrees on it.
PUSH_LOCK_KEY = int.from_bytes(hashlib.sha256(PUSH_LOCK_NAME.encode()).digest()[:8], "big", signed=True)


def _is_postgres(alias: str = DEFAULT_DB_ALIAS) -> bool:
    return connections[alias].vendor == "postgresql"


# --- The push lock -------------------------------------------------------------------------------


@contextlib.contextmanager
def _lock_connection() -> Iterator[Any]:
    """A private database session for a lock: Django's own connection handling cannot drop it early."""
    conn = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with conn.cursor() as cursor:
            yield cursor
    finally:
        conn.close()  # ending the session releases any advisory lock it still holds


def _unlock(cursor: Any, sql: str) -> None:
    """Release the lock; a session that died (restart, failover) already released it with itself.

    An error here must not turn what ran under the lock (a committed push) into a reported failure.
    """
    try:
        cursor.execute(sql, [PUSH_LOCK_KEY])
    except DatabaseError:
        pass


@contextlib.contextmanager
def push_lock() -> Iterator[None]:
    """Hold the push lock (shared) while changing the storage tree; refuse while a backup holds it.

    Pushes share the lock with each other, a backup takes it exclusively. PostgreSQL: a session-level
    shared advisory lock on key PUSH_LOCK_KEY, on its own connection. SQLite (the embedded demo): a
    documented no-op, since a demo is backed up with its web server and worker stopped.
    Raises BackupInProgress at once (never waits) when a backup holds or is waiting for the lock.
    """
    if not _is_postgres():
        yield
        return
    with _lock_connection() as cursor:
        # A try-lock also fails while a backup *waits* for the lock, so a backup is never starved.
        cursor.execute("SELECT pg_try_advisory_lock_shared(%s)", [PUSH_LOCK_KEY])
        if not cursor.fetchone()[0]:
            raise BackupInProgress(
                "a backup is running: pushes are refused until it finishes; try again in a few minutes"
            )
        try:
            yield
        finally:
            _unlock(cursor, "SELECT pg_advisory_unlock_shared(%s)")


@contextlib.contextmanager
def backup_lock(*, timeout: float = 600) -> Iterator[None]:
    """Hold the push lock exclusively: waits up to `timeout` s for running pushes, then blocks new ones."""
    if not _is_postgres():
        yield
        return
    with _lock_connection() as cursor:
        cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{max(1, int(timeout * 1000))}ms"])
        try:
            cursor.execute("SELECT pg_advisory_lock(%s)", [PUSH_LOCK_KEY])
        except OperationalError as exc:
            raise LockTimeout(
                f"pushes were still running after {timeout:g} s (the push lock {PUSH_LOCK_NAME!r} is held); "
                "try again later or pass a longer --lock-timeout"
            ) from exc
        try:
            yield
        finally:
            _unlock(cursor, "SELECT pg_advisory_unlock(%s)")


