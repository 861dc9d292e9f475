"""PostgreSQL goes away in the middle of a push: no half version is visible, and pushing again works.

`test_postgres_restart_during_a_push` restarts the real cluster (`pg_ctlcluster ... restart`) while
`manage.py push` is copying a build. That breaks every connection on the machine for a second or
two, other test runs' included, so it is marked `runs_last` (battery/conftest.py moves it to the end
of the session) and kept short. The same loss of connection, for one process only
(`pg_terminate_backend`), checks how the push command reports it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections

from builds import services as builds_services
from builds import storage
from builds.models import Version
from builds.services import push_version
from catalog.models import Game
from conftest import bearer_client
from mist.testing.environment import IN_CI
from mist.testing.gamedata import make_build, tree_bytes
from mist.testing.worker import subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def _cluster() -> tuple[str, str] | None:
    """(version, name) of the local PostgreSQL cluster pg_ctlcluster manages, if any."""
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir() or os.geteuid() != 0:
        return None
    versions = sorted(os.listdir("/etc/postgresql"))
    return (versions[-1], "main") if versions and Path("/etc/postgresql", versions[-1], "main").is_dir() else None


def _start_push(name: str, build: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(REPO / "manage.py"), "push", "pgfault", name, str(build)],
                            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_staging(proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        trees = storage.trees_dir("pgfault", "windows")
        if trees.is_dir() and any(p.name.startswith(".staging-") for p in trees.iterdir()):
            return
        time.sleep(0.02)
    raise AssertionError(f"the push never started copying: {proc.communicate()[0] if proc.poll() is not None else ''}")


def _digests(root: Path) -> dict[str, str]:
    """Path -> sha256 (a failed comparison of whole file contents would take pytest minutes to print)."""
    return {path: hashlib.sha256(data).hexdigest() + ("x" if executable else "")
            for path, (data, executable) in tree_bytes(root).items()}


def _nothing_half_visible(game: Game, before: dict[str, tuple[bytes, bool]], admin: Any) -> None:
    """No row, the depot as it was, the API and the admin's listing as they were.

    Files of the dead push may stay on the disk when the database died after they were renamed into
    place (its cleanup needs the database to know the push did not commit); no row points at them and
    the next push sweeps them (checked by _push_again_works).
    """
    connections.close_all()  # our own connection died with the server: reconnect
    assert list(game.versions.values_list("name", flat=True)) == ["1.0"]
    assert _digests(storage.depot_dir("pgfault", "windows")) == {
        p: hashlib.sha256(d).hexdigest() + ("x" if x else "") for p, (d, x) in before.items()}
    shown = bearer_client(admin).get("/api/v1/games/pgfault").json()
    assert [v["name"] for v in shown["versions"]] == ["1.0"]
    out = io.StringIO()
    call_command("ls", "pgfault", stdout=out)
    assert "2.0" not in out.getvalue()


def _push_again_works(game: Game, build: Path) -> None:
    retry = subprocess.run([sys.executable, str(REPO / "manage.py"), "push", "pgfault", "2.0", str(build)],
                           cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stdout + retry.stderr
    version = Version.objects.get(game=game, name="2.0")
    assert version.parent.name == "1.0"
    assert _digests(storage.depot_dir("pgfault", "windows")) == _digests(build)
    assert sorted(p.name for p in storage.trees_dir("pgfault", "windows").iterdir()) == ["1.0", "2.0"]
    assert sorted(p.name for p in storage.manifest_path("pgfault", "windows", "x").parent.iterdir()) == ["1.0.json", "2.0.json"]


@pytest.fixture
def pushed(tmp_path: Path) -> tuple[Game, Path, dict[str, tuple[bytes, bool]]]:
    game = Game.objects.create(slug="pgfault", title="PG Fault")
    push_version(game=game, name="1.0", source=make_build(tmp_path / "v1", seed=111))
    big = make_build(tmp_path / "v2", seed=112, big_file_bytes=15_000_000)
    return game, big, tree_bytes(storage.depot_dir("pgfault", "windows"))


@pytest.mark.runs_last
@pytest.mark.fault("PostgreSQL restarted during a push")
def test_postgres_restart_during_a_push(pushed: tuple[Game, Path, dict[str, tuple[bytes, bool]]],
                                       admin_user: Any) -> None:
    cluster = _cluster()
    if cluster is None:
        why = "needs root and pg_ctlcluster with a cluster under /etc/postgresql"
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    game, big, before = pushed
    proc = _start_push("2.0", big)
    _wait_for_staging(proc)
    # when: the database restarts while the build is being copied
    started = time.monotonic()
    restart = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart"],
                             capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, restart.stderr
    down_for = time.monotonic() - started
    output, _ = proc.communicate(timeout=300)
    # then: the push either made it whole, or failed and nothing half-made is visible
    connections.close_all()  # our own connection died with the server: reconnect
    version = Version.objects.filter(game=game, name="2.0").first()
    if version is not None:
        # Committed before its connection died. (It may still exit 1: the unlock afterwards fails on the
        # dead lock session; test_a_push_whose_lock_session_dies_still_reports_success pins that down.)
        assert version.file_count == len(tree_bytes(big)) and version.parent.name == "1.0"
        assert storage.manifest_path("pgfault", "windows", "2.0").is_file()
        assert version.jobs.exists(), "a recorded push queues its worker job in the same transaction"
        if _digests(storage.depot_dir("pgfault", "windows")) != _digests(big):
            # The commit landed but its connection died before the push pointed the depot at the new tree:
            # the version's first worker job mends it (mark_processing), as does the next push's sweep.
            builds_services.mark_processing(version=version)
        assert _digests(storage.depot_dir("pgfault", "windows")) == _digests(big)
    else:
        assert proc.returncode != 0, output[-3000:]
        assert "connection" in output.lower() or "database" in output.lower(), output[-3000:]
        _nothing_half_visible(game, before, admin_user)
        # and: the same push, run again, works
        _push_again_works(game, big)
    print(f"\npostgres restart took {down_for:.1f}s; the push exited {proc.returncode}, recorded: {bool(version)}")


def test_a_push_that_loses_its_database_connection_says_so_clearly(
        pushed: tuple[Game, Path, dict[str, tuple[bytes, bool]]], admin_user: Any) -> None:
    game, big, before = pushed
    proc = _start_push("2.0", big)
    _wait_for_staging(proc)
    with connection.cursor() as cursor:  # what a restart or a failover does to the push's sessions
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, output
    _nothing_half_visible(game, before, admin_user)
    _push_again_works(game, big)
    assert "Traceback" not in output, output[-3000:]
    assert "push again" in output.lower() or "try again" in output.lower(), output[-3000:]


def test_a_push_whose_lock_session_dies_still_reports_success(
        pushed: tuple[Game, Path, dict[str, tuple[bytes, bool]]]) -> None:
    game, big, _ = pushed
    proc = _start_push("2.0", big)
    _wait_for_staging(proc)
    with connection.cursor() as cursor:  # only the session holding the push lock goes away
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                       "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        assert cursor.fetchall(), "no session held the push lock"
    output, _ = proc.communicate(timeout=300)
    assert Version.objects.filter(game=game, name="2.0").exists(), output[-3000:]  # its own session was fine
    assert proc.returncode == 0, output[-3000:]
