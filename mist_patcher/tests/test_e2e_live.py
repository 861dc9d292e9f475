"""End to end, like a user: the ``mist-patcher`` CLI in a subprocess against the real server.

pytest-django's ``live_server`` (real HTTP on loopback, real PostgreSQL) and a real django-q2
cluster (``worker``) that makes the deltas, archives and indirect bundles. Builds are pushed with
``builds.services.push_version``; every install is compared byte for byte with what was pushed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from builds.models import Version
from builds.services import push_version
from catalog.models import Game
from downloads.models import FullArchive
from mist.testing.gamedata import make_build, next_version, tree_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "friend-Passw0rd!"  # conftest's persona password for "friend"


class Patcher:
    """Runs ``python -m mist_patcher.cli.main`` with its own MIST_PATCHER_HOME, as a user would."""

    def __init__(self, home: Path, server: str) -> None:
        self.home = home
        self.server = server

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MIST_", "DJANGO", "DATABASE"))}
        env.update({"MIST_PATCHER_HOME": str(self.home), "PYTHONUNBUFFERED": "1"})
        if os.environ.get("MIST_PATCHER_PLATFORM"):  # the builds here are the server's default platform's
            env["MIST_PATCHER_PLATFORM"] = os.environ["MIST_PATCHER_PLATFORM"]
        env.update(extra)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mist_patcher.cli.main", "--server", self.server, "--json", *args]

    def run(self, *args: str, stdin: str | None = None, ok: bool = True, timeout: float = 180,
            **env: str) -> tuple[int, dict[str, Any], str]:
        proc = subprocess.run(self.argv(*args), input=stdin, capture_output=True, text=True, cwd=REPO,
                              env=self.env(**env), timeout=timeout)
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        except (ValueError, IndexError):
            result = {}
        if ok and proc.returncode != 0:
            raise AssertionError(f"mist-patcher {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr[-4000:]}")
        return proc.returncode, result, proc.stderr

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO, env=self.env(**env))


def _ready(name: str) -> bool:
    version = Version.objects.get(game__slug="space-game", name=name)
    if version.status == Version.Status.FAILED:
        raise AssertionError(f"{name} failed on the worker: {version.error}")
    return version.status == Version.Status.READY


@pytest.fixture
def pushed(tmp_path: Path, worker: Any, admin_user: Any) -> dict[str, Path]:
    """Versions 1.0 to 4.0 of a generated game, pushed through the real pipeline and made ready."""
    src = tmp_path / "src"
    builds = {"1.0": make_build(src / "1.0", seed=3)}
    for step, (old, new) in enumerate([("1.0", "2.0"), ("2.0", "3.0"), ("3.0", "4.0")], start=1):
        builds[new] = next_version(builds[old], src / new, seed=3, step=step)
    game = Game.objects.create(slug="space-game", title="Space Game")
    for name, folder in builds.items():
        push_version(game=game, name=name, source=folder, notes=f"version {name}", user=admin_user)
        worker.wait_for(lambda n=name: _ready(n), timeout=180, what=f"version {name} ready")
    return builds


@pytest.fixture
def patcher(tmp_path: Path, live_server: Any, friend: Any) -> Patcher:
    p = Patcher(tmp_path / "patcher-home", live_server.url)
    code, result, _ = p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    assert result["username"] == "friend"
    creds = p.home / "credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in creds.read_text()
    return p


def test_login_install_update_repair_like_a_user(pushed: dict[str, Path], patcher: Patcher, tmp_path: Path) -> None:
    game_dir = tmp_path / "games" / "space-game"

    # the library lists the game with its latest version
    _, listing, _ = patcher.run("list")
    [entry] = listing["games"]
    assert (entry["slug"], entry["latest_version"], entry["state"]) == ("space-game", "4.0", "not_installed")

    # install v1 (the worker builds the archive on demand)
    _, installed, _ = patcher.run("install", "space-game", "--version", "1.0", "--dir", str(game_dir))
    assert installed["version"] == "1.0" and installed["downloaded_bytes"] > 0
    assert tree_bytes(game_dir) == tree_bytes(pushed["1.0"])

    # update to v2: a direct update, costed before it starts
    _, plan, _ = patcher.run("update", "space-game", "--version", "2.0", "--dry-run")
    assert plan["route"] == "direct" and plan["dry_run"] and plan["download_bytes"] > 0
    assert tree_bytes(game_dir) == tree_bytes(pushed["1.0"])
    _, updated, _ = patcher.run("update", "space-game", "--version", "2.0")
    assert (updated["from_version"], updated["to_version"], updated["route"]) == ("1.0", "2.0", "direct")
    assert tree_bytes(game_dir) == tree_bytes(pushed["2.0"])
    archive_size = installed["downloaded_bytes"]
    assert updated["downloaded_bytes"] < archive_size

    # update to the latest (4.0) from 2.0: whatever the planner picks
    _, updated, _ = patcher.run("update", "space-game")
    assert (updated["from_version"], updated["to_version"]) == ("2.0", "4.0")
    assert updated["route"] in ("direct", "indirect", "full")
    assert tree_bytes(game_dir) == tree_bytes(pushed["4.0"])
    _, status, _ = patcher.run("status")
    assert status["installs"][0]["installed_version"] == "4.0"
    assert status["installs"][0]["state"] == "installed"

    # corrupt a big file in place and delete a small one: verify finds them, repair heals them
    victim = max((p for p in game_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    victim.write_bytes(bytes(data))
    small = min((p for p in game_dir.rglob("*") if p.is_file() and p.stat().st_size > 0), key=lambda p: p.stat().st_size)
    small.unlink()
    code, report, _ = patcher.run("verify", "space-game", ok=False)
    assert code == 3
    assert report["modified"] == [victim.relative_to(game_dir).as_posix()]
    assert report["missing"] == [small.relative_to(game_dir).as_posix()]
    _, repaired, _ = patcher.run("repair", "space-game")
    assert repaired["repaired_block_level"] == [victim.relative_to(game_dir).as_posix()]
    assert small.relative_to(game_dir).as_posix() in repaired["repaired_whole"]
    # block level: far less than the damaged file came down
    assert repaired["downloaded_bytes"] < len(data) // 4
    assert tree_bytes(game_dir) == tree_bytes(pushed["4.0"])
    code, report, _ = patcher.run("verify", "space-game")
    assert code == 0 and report["healthy"]

    # back to an older version, and rollback of that
    _, down, _ = patcher.run("update", "space-game", "--version", "2.0")
    assert down["route"] in ("jump", "indirect", "full")
    assert tree_bytes(game_dir) == tree_bytes(pushed["2.0"])
    _, rolled, _ = patcher.run("rollback", "space-game")
    assert (rolled["to_version"], rolled["source"], rolled["downloaded_bytes"]) == ("4.0", "kept", 0)
    assert tree_bytes(game_dir) == tree_bytes(pushed["4.0"])


def test_sigkill_around_the_switch_in_recovers_by_itself(
    pushed: dict[str, Path], patcher: Patcher, tmp_path: Path
) -> None:
    game_dir = tmp_path / "games" / "space-game"
    patcher.run("install", "space-game", "--version", "2.0", "--dir", str(game_dir))
    for fault, expected, outcome in (("before-commit", "2.0", "rolled_back"), ("after-commit", "4.0", "rolled_forward")):
        # when: the patcher is SIGKILLed just before / just after its files are switched in
        code, _, _ = patcher.run("update", "space-game", "--version", "4.0", ok=False, MIST_PATCHER_FAULT=fault)
        assert code == -signal.SIGKILL
        # then: the next command recovers first, to exactly the old or exactly the new version
        _, status, notes = patcher.run("status")
        assert status["installs"][0]["installed_version"] == expected
        assert outcome in notes
        assert tree_bytes(game_dir) == tree_bytes(pushed[expected])
        _, report, _ = patcher.run("verify", "space-game")
        assert report["healthy"] and report["version"] == expected
    # and an interrupted update can simply be run again
    patcher.run("update", "space-game", "--version", "2.0")
    assert tree_bytes(game_dir) == tree_bytes(pushed["2.0"])


def test_sigkill_during_a_slow_download_keeps_the_old_version_and_resumes(
    pushed: dict[str, Path], patcher: Patcher, tmp_path: Path
) -> None:
    game_dir = tmp_path / "games" / "space-game"
    patcher.run("install", "space-game", "--version", "1.0", "--dir", str(game_dir))
    # when: a bandwidth-limited full update is killed half way through its download
    proc = patcher.popen("update", "space-game", "--version", "4.0", "--route", "full", "--limit-rate", "256K")
    assert proc.stderr is not None
    for line in proc.stderr:
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("phase") == "download" and 0 < event.get("done", 0) and event["done"] > event["total"] // 4:
            break
    else:
        raise AssertionError(f"no download progress; exit {proc.wait()}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # then: the old version is intact, and the partial download is resumed, not restarted
    _, report, _ = patcher.run("verify", "space-game")
    assert report["healthy"] and report["version"] == "1.0"
    assert tree_bytes(game_dir) == tree_bytes(pushed["1.0"])
    [partial] = list((patcher.home / "downloads").glob("*.part"))
    kept = partial.stat().st_size
    assert kept > 0
    _, updated, _ = patcher.run("update", "space-game", "--version", "4.0", "--route", "full")
    assert tree_bytes(game_dir) == tree_bytes(pushed["4.0"])
    archive = FullArchive.objects.get(version__game__slug="space-game", version__name="4.0")
    assert updated["downloaded_bytes"] == archive.size - kept  # resumed with a Range request
