"""Load: 20 patchers (the real CLI, each a subprocess with its own home) install and then update at once.

One server (pytest-django's threaded `live_server`, real PostgreSQL) and one real worker cluster.
A generated game of ~2 MB with three versions. Every patcher signs in and installs 1.0, then all
20 wait at a barrier and update to the latest together, by the route the planner picks (direct)
or forced indirect or full for a few, so every kind of download and job is under load at once.
Bounded: 20 patchers, 3 commands each, every command with a timeout, on loopback only.

Held when: every install ends byte for byte equal to 3.0, the server answered no 5xx (every
response Django logs at ERROR is counted), and every Job row ends done, or failed with an error.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from battery import tally
from battery.faults import jobs_settled, orphan_jobs, ready
from builds.services import push_version
from catalog.models import Game
from conftest import password_of
from mist.testing.gamedata import make_build, next_version, tree_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PATCHERS = 20
COMMAND_TIMEOUT = 240


class ServerErrors(logging.Handler):
    """Counts the responses Django logs as server errors (it logs every 5xx at ERROR on django.request)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[str] = []
        self.lock = threading.Lock()  # type: ignore[assignment]

    def emit(self, record: logging.LogRecord) -> None:
        with self.lock:  # type: ignore[union-attr]
            self.records.append(f"{getattr(record, 'status_code', '?')} {record.getMessage()}")


class Patcher:
    """`python -m mist_patcher.cli.main` with its own MIST_PATCHER_HOME, as a friend's machine would run it."""

    def __init__(self, index: int, root: Path, server: str) -> None:
        self.index = index
        self.home = root / f"home-{index}"
        self.install_dir = root / "games" / f"p{index}"
        self.server = server
        self.log: list[str] = []
        self.result: dict[str, Any] = {}

    def run(self, *args: str, stdin: str | None = None) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MIST_", "DJANGO", "DATABASE"))}
        # The builds are pushed without a platform (the server's default, windows).
        env.update({"MIST_PATCHER_HOME": str(self.home), "PYTHONUNBUFFERED": "1", "MIST_PATCHER_PLATFORM": "windows"})
        argv = [sys.executable, "-m", "mist_patcher.cli.main", "--server", self.server, "--json", "--quiet", *args]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, cwd=REPO, env=env,
                              timeout=COMMAND_TIMEOUT)
        self.log.append(f"$ {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-1500:]}")
        if proc.returncode != 0:
            raise RuntimeError(f"patcher {self.index}: {' '.join(args)} exited {proc.returncode}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def _drive(patcher: Patcher, barrier: threading.Barrier, route: str | None, username: str, password: str) -> None:
    try:
        patcher.run("login", "--username", username, "--password-stdin", stdin=password + "\n")
        patcher.run("install", "load-game", "--version", "1.0", "--dir", str(patcher.install_dir))
    except BaseException as exc:
        patcher.log.append(f"setup failed: {exc}")
        barrier.abort()
        return
    try:
        barrier.wait(timeout=COMMAND_TIMEOUT)
    except threading.BrokenBarrierError:
        patcher.log.append("another patcher failed before the update")
        return
    try:
        patcher.result = patcher.run("update", "load-game", *(["--route", route] if route else []))
    except BaseException as exc:
        patcher.log.append(f"update failed: {exc}")


def _route_for(index: int) -> str | None:
    return {0: "indirect", 1: "full"}.get(index % 5)  # 4 indirect, 4 full, 12 as the planner says


def test_twenty_patchers_update_at_once(live_server: Any, worker: Any, friend: Any, tmp_path: Path) -> None:
    src = {"1.0": make_build(tmp_path / "src" / "1.0", seed=101, big_file_bytes=500_000)}
    src["2.0"] = next_version(src["1.0"], tmp_path / "src" / "2.0", seed=101, step=1)
    src["3.0"] = next_version(src["2.0"], tmp_path / "src" / "3.0", seed=101, step=2)
    game = Game.objects.create(slug="load-game", title="Load Game")
    for name, folder in src.items():
        version = push_version(game=game, name=name, source=folder).version
        worker.wait_for(lambda v=version: ready(v.pk), timeout=240, what=f"{name} ready")
    worker.wait_for(jobs_settled, timeout=180, what="the archives of the versions")
    expected = tree_bytes(src["3.0"])

    errors = ServerErrors()
    logging.getLogger("django.request").addHandler(errors)
    patchers = [Patcher(i, tmp_path / "patchers", live_server.url) for i in range(PATCHERS)]
    barrier = threading.Barrier(PATCHERS)
    started = time.monotonic()
    try:
        threads = [threading.Thread(target=_drive, args=(p, barrier, _route_for(p.index), "friend",
                                                         password_of(friend))) for p in patchers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=3 * COMMAND_TIMEOUT)
        try:
            worker.wait_for(jobs_settled, timeout=180, what="the jobs the patchers asked for")
        except AssertionError as exc:  # say what each patcher saw, not only the worker's side
            raise AssertionError(f"{exc}\n\npatchers:\n" + "\n\n".join(
                f"patcher {p.index} ({p.result}):\n" + "\n".join(p.log) for p in patchers)) from None
    finally:
        logging.getLogger("django.request").removeHandler(errors)
    seconds = time.monotonic() - started

    ok = [p for p in patchers if p.result.get("to_version") == "3.0" and tree_bytes(p.install_dir) == expected]
    tally.load(ok=len(ok), total=PATCHERS)
    routes = sorted(p.result.get("route", "?") for p in patchers)
    print(f"\nload: {len(ok)}/{PATCHERS} patchers ok in {seconds:.1f}s; routes {routes}")
    failed = [p for p in patchers if p not in ok]
    assert not failed, "\n\n".join(f"patcher {p.index} ({p.result}):\n" + "\n".join(p.log) for p in failed)
    assert {"direct", "indirect", "full"} <= set(routes)
    assert errors.records == [], errors.records
    assert orphan_jobs() == []
