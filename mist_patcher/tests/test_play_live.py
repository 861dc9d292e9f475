"""Issue 14: playing games. Like a user: the ``mist-patcher`` CLI in a subprocess against the live server
and a real worker. The game is a generated build whose executable is a small shell script that writes
its arguments, working folder and environment to a file and exits: the patcher launches it for real."""

from __future__ import annotations

import fcntl
import json
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from builds.models import LaunchOption, Version
from builds.services import push_version
from catalog.models import Game
from downloads.models import DownloadRecord, PlaySession
from mist.testing.gamedata import make_build
from mist_patcher.tests.test_e2e_live import PASSWORD, Patcher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SCRIPT = """#!/bin/sh
out="$GAME_OUT"
printf '%s\\n' "$@" > "$out/args.txt"
pwd > "$out/cwd.txt"
printf '%s' "$MIST_TEST_VAR" > "$out/env.txt"
echo "hello from the game"
sleep "${GAME_SECONDS:-0}"
exit 3
"""
LAUNCH = {"launch": [
    {"name": "Play", "executable": "bin/launch.sh", "arguments": ["--fullscreen", "two words"],
     "working_dir": "data", "env": {"MIST_TEST_VAR": "from the launch option"}},
    {"name": "Dedicated server", "executable": "bin/launch.sh", "arguments": ["--server"]},
]}


def _game_build(root: Path, seed: int, *, windows: bool = False) -> Path:
    make_build(root, seed=seed)
    exe = root / "bin" / ("launch.bat" if windows else "launch.sh")
    exe.write_text(SCRIPT)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    launch = json.loads(json.dumps(LAUNCH))
    if windows:
        for option in launch["launch"]:
            option["executable"] = "bin/launch.bat"
    (root / "mist-launch.json").write_text(json.dumps(launch))
    return root


def _ready(pk: int) -> bool:
    version = Version.objects.get(pk=pk)
    assert version.status != Version.Status.FAILED, version.error
    return version.status == Version.Status.READY


@pytest.fixture
def arcade(tmp_path: Path, worker: Any, admin_user: Any, friend: Any) -> Game:
    game = Game.objects.create(slug="arcade", title="Arcade")
    for platform, windows in (("linux", False), ("windows", True)):
        version = push_version(game=game, name="1.0", source=_game_build(tmp_path / f"src-{platform}", 14, windows=windows),
                               platform=platform, user=admin_user).version
        worker.wait_for(lambda pk=version.pk: _ready(pk), timeout=180, what=f"{platform} 1.0 ready")
    return game


def _patcher(tmp_path: Path, name: str, server: str) -> Patcher:
    p = Patcher(tmp_path / name, server)
    p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    return p


def test_play_launches_the_game_records_and_reports_the_session(arcade: Game, live_server: Any, friend: Any,
                                                                 tmp_path: Path, worker: Any) -> None:
    out = tmp_path / "game-out"
    out.mkdir()
    p = _patcher(tmp_path, "home", live_server.url)
    p.run("install", "arcade", "--platform", "linux")
    install = p.home / "games" / "arcade"
    assert (install / "bin" / "launch.sh").is_file()

    code, listed, _ = p.run("play", "arcade", "--list")
    assert [o["name"] for o in listed["options"]] == ["Play", "Dedicated server"]

    code, result, _ = p.run("play", "arcade", GAME_OUT=str(out), GAME_SECONDS="1")
    assert code == 0
    # the real process got the option's arguments, working folder and environment
    assert (out / "args.txt").read_text().splitlines() == ["--fullscreen", "two words"]
    assert Path((out / "cwd.txt").read_text().strip()) == (install / "data").resolve()
    assert (out / "env.txt").read_text() == "from the launch option"
    # its exit code, duration and output are recorded
    assert result["exit_code"] == 3 and result["option"] == "Play" and result["platform"] == "linux"
    assert result["seconds"] >= 1
    assert "hello from the game" in Path(result["log"]).read_text()
    assert Path(result["log"]).is_relative_to(p.home / "logs" / "arcade")
    session_file = p.home / "sessions" / f"{result['session_id']}.json"
    local = json.loads(session_file.read_text())
    assert local["status"] == "reported" and local["exit_code"] == 3, result["sync"]
    # ... and reported to the server, once
    assert result["sync"]["sent"] == 1
    server = PlaySession.objects.get(pk=result["session_id"])
    assert (server.user, server.game.slug, server.version_name, server.platform) == (friend, "arcade", "1.0", "linux")
    assert server.seconds >= 1 and server.exit_code == 3
    code, again, _ = p.run("playtime")
    assert again["sync"]["sent"] == 0 and PlaySession.objects.count() == 1
    assert again["games"]["arcade"]["sessions"] == 1

    # another launch option
    p.run("play", "arcade", "--option", "dedicated server", GAME_OUT=str(out))
    assert (out / "args.txt").read_text().splitlines() == ["--server"]
    assert (out / "cwd.txt").read_text().strip() == str((install / "bin").resolve())  # the executable's folder
    code, missing, _ = p.run("play", "arcade", "--option", "Editor", ok=False)
    assert code == 1 and "no launch option 'Editor'" in missing["error"]

    # the Linux patcher fetched no byte of the Windows build
    artifacts = list(DownloadRecord.objects.values_list("artifact", flat=True))
    assert artifacts and not [a for a in artifacts if "windows" in a]


def test_offline_sessions_are_sent_later_and_a_killed_patcher_still_counts(arcade: Game, live_server: Any,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    p = _patcher(tmp_path, "home", live_server.url)
    p.run("install", "arcade", "--platform", "linux")
    p.run("play", "arcade", "--now", GAME_OUT=str(out))  # caches the launch options
    offline = Patcher(p.home, "http://127.0.0.1:9")  # nothing listens there
    code, result, _ = offline.run("play", "arcade", "--now", GAME_OUT=str(out))
    assert result["exit_code"] == 3 and result["sync"]["pending"] == 1
    assert not PlaySession.objects.filter(pk=result["session_id"]).exists()
    # a session whose patcher was killed during play: no end, heartbeat long ago
    killed = {"id": str(uuid.uuid4()), "game": "arcade", "version": "1.0", "platform": "linux", "option": "Play",
              "started_at": time.time() - 4000, "heartbeat_at": time.time() - 2200, "ended_at": None,
              "exit_code": None, "pid": 999999, "log": "", "status": "", "reason": ""}
    (p.home / "sessions" / f"{killed['id']}.json").write_text(json.dumps(killed))
    code, synced, _ = p.run("playtime")
    assert synced["sync"]["sent"] == 2
    assert PlaySession.objects.filter(pk=result["session_id"]).exists()
    dead = PlaySession.objects.get(pk=killed["id"])
    assert 1790 <= dead.seconds <= 1810 and dead.exit_code is None  # ended at its last heartbeat
    assert PlaySession.objects.count() == 3


def test_play_refuses_while_the_game_is_busy_and_bad_options(arcade: Game, live_server: Any, tmp_path: Path) -> None:
    p = _patcher(tmp_path, "home", live_server.url)
    p.run("install", "arcade", "--platform", "linux")
    with open(p.home / "locks" / "arcade.lock", "a+b") as lock:  # what a running update holds
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, busy, _ = p.run("play", "arcade", "--now", ok=False)
    assert code == 1 and "busy" in busy["error"]
    # an option naming a file the build does not have (set behind the admin's validation) is never started
    LaunchOption.objects.filter(game=arcade, platform="linux").update(executable="bin/gone.sh")
    code, gone, _ = p.run("play", "arcade", "--now", ok=False)
    assert code == 1 and "no launch option for this build" in gone["error"]
    # a launch option that leaves the install folder, even from a tampered local cache, is refused
    cache = p.home / "launch" / "arcade.json"
    offline = Patcher(p.home, "http://127.0.0.1:9")
    cache.write_text(json.dumps({"version": "1.0", "platform": "linux",
                                 "options": [{"name": "Play", "executable": "../../../../bin/sh"}]}))
    code, escape, _ = offline.run("play", "arcade", "--now", ok=False)
    assert code == 1 and "'..'" in escape["error"]
    assert not PlaySession.objects.exists() and not list((p.home / "sessions").glob("*.json"))


def test_a_windows_build_on_linux_needs_a_runner(arcade: Game, live_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    p = _patcher(tmp_path, "home", live_server.url)
    p.run("install", "arcade", "--platform", "windows")
    empty = tmp_path / "empty-path"
    empty.mkdir()
    code, missing, _ = p.run("play", "arcade", "--now", ok=False, PATH=f"{empty}:/usr/bin/env-free")
    assert code == 1 and "no runner is installed" in missing["error"]
    code, wrong, _ = p.run("play", "arcade", "--now", ok=False, MIST_PATCHER_RUNNER="no-such-wine")
    assert code == 1 and "'no-such-wine' is not installed" in wrong["error"]
    # A runner (here a stand-in that records how it was called, then runs the program the way wine would)
    runner = tmp_path / "fake-wine"
    runner.write_text('#!/bin/sh\necho "$@" > "$GAME_OUT/runner.txt"\nexec /bin/sh "$@"\n')
    runner.chmod(0o755)
    code, result, _ = p.run("play", "arcade", "--now", MIST_PATCHER_RUNNER=str(runner), GAME_OUT=str(out))
    assert result["exit_code"] == 3 and result["platform"] == "windows"
    assert result["command"][:2] == [str(runner), str((p.home / "games" / "arcade" / "bin" / "launch.bat").resolve())]
    assert (out / "runner.txt").read_text().split()[1:] == ["--fullscreen", "two", "words"]
    assert PlaySession.objects.get(pk=result["session_id"]).platform == "windows"


def test_play_offers_the_pending_update_first(arcade: Game, live_server: Any, tmp_path: Path, worker: Any,
                                              admin_user: Any) -> None:
    out = tmp_path / "o"
    out.mkdir()
    p = _patcher(tmp_path, "home", live_server.url)
    p.run("install", "arcade", "--platform", "linux")
    v2 = _game_build(tmp_path / "src-1.1", 15)
    version = push_version(game=arcade, name="1.1", source=v2, platform="linux", user=admin_user).version
    worker.wait_for(lambda: _ready(version.pk), timeout=180, what="1.1 ready")
    code, now, err = p.run("play", "arcade", GAME_OUT=str(out))
    assert now["version"] == "1.0" and "arcade 1.1 is available" in err
    code, updated, _ = p.run("play", "arcade", "--update", GAME_OUT=str(out))
    assert updated["version"] == "1.1" and updated["exit_code"] == 3
    assert PlaySession.objects.filter(version_name="1.1").count() == 1
