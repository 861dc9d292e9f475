"""The ``mist-patcher`` command as a subprocess against the (fake, real-HTTP) server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mist_patcher.tests.conftest import tree_bytes
from mist_patcher.tests.fakeserver import FakeMist

REPO = Path(__file__).resolve().parents[2]


def run(home: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MIST_")}
    full_env.update({"MIST_PATCHER_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "mist_patcher.cli.main", *args], input=stdin,
                          capture_output=True, text=True, cwd=REPO, env=full_env, timeout=timeout)


def result_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return json.loads(proc.stdout)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def logged_in(home: Path, fake_server: FakeMist) -> Path:
    proc = run(home, "--server", fake_server.url, "login", "--username", "friend", "--password-stdin",
               stdin="friend-Passw0rd!\n")
    assert proc.returncode == 0, proc.stderr
    return home


def test_login_with_password_from_stdin_keeps_only_tokens(home: Path, fake_server: FakeMist) -> None:
    proc = run(home, "--json", "--server", fake_server.url, "login", "-u", "friend", "--password-stdin",
               stdin="friend-Passw0rd!\n")
    assert proc.returncode == 0, proc.stderr
    assert result_of(proc)["username"] == "friend"
    stored = json.loads((home / "credentials.json").read_text())
    assert set(stored[fake_server.url]) == {"access", "refresh", "username", "scope", "device_id"}
    assert "friend-Passw0rd!" not in (home / "credentials.json").read_text()
    assert (home / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_wrong_password_is_a_clear_error(home: Path, fake_server: FakeMist) -> None:
    proc = run(home, "--json", "--server", fake_server.url, "login", "-u", "friend", "--password-stdin",
               stdin="nope\n")
    assert proc.returncode == 1
    assert result_of(proc) == {"ok": False, "error": "server said 401: Wrong username or password.",
                               "kind": "ApiError", "exit_code": 1}
    assert not (home / "credentials.json").exists()


def test_login_with_a_pairing_code(home: Path, fake_server: FakeMist) -> None:
    fake_server.pairing_codes["4F7K-92QX"] = "friend"
    proc = run(home, "--json", "--server", fake_server.url, "login", "--pairing-code", "4F7K-92QX")
    assert proc.returncode == 0, proc.stderr
    assert result_of(proc)["device_id"] == "7"
    assert run(home, "--server", fake_server.url, "list").returncode == 0


def test_server_from_the_environment_and_no_login(home: Path, fake_server: FakeMist) -> None:
    proc = run(home, "--json", "list", env={"MIST_SERVER": fake_server.url})
    assert proc.returncode == 4
    assert "mist-patcher login" in result_of(proc)["error"]


def test_expired_access_token_is_refreshed_transparently(logged_in: Path, fake_server: FakeMist) -> None:
    before = json.loads((logged_in / "credentials.json").read_text())[fake_server.url]["access"]
    fake_server.expire_access_tokens()
    proc = run(logged_in, "--json", "--server", fake_server.url, "list")
    assert proc.returncode == 0, proc.stderr
    assert [g["slug"] for g in result_of(proc)["games"]] == ["space-game"]
    after = json.loads((logged_in / "credentials.json").read_text())[fake_server.url]["access"]
    assert after != before
    assert [e.path for e in fake_server.log].count("/api/v1/auth/token/refresh") == 1


def test_logout_revokes_the_refresh_token(logged_in: Path, fake_server: FakeMist) -> None:
    refresh = json.loads((logged_in / "credentials.json").read_text())[fake_server.url]["refresh"]
    proc = run(logged_in, "--json", "--server", fake_server.url, "logout")
    assert result_of(proc)["revoked"] is True
    assert refresh in fake_server.revoked
    assert not (logged_in / "credentials.json").exists()


def test_install_update_verify_in_plain_and_json_output(logged_in: Path, fake_server: FakeMist, builds,
                                                        tmp_path: Path) -> None:
    game_dir = tmp_path / "games" / "space"
    # plain output (not a terminal): the cost first, progress lines, then the result
    proc = run(logged_in, "--server", fake_server.url, "install", "space-game", "--version", "1.0",
               "--dir", str(game_dir))
    assert proc.returncode == 0, proc.stderr
    assert "Install space-game 1.0 into" in proc.stderr
    assert "downloading space-game 1.0: 100%" in proc.stderr
    assert "\r" not in proc.stderr
    assert proc.stdout.startswith("Installed space-game 1.0 in ")
    assert tree_bytes(game_dir) == tree_bytes(builds["1.0"])

    # dry run: the plan with its cost, nothing changes
    proc = run(logged_in, "--server", fake_server.url, "update", "space-game", "--dry-run")
    assert "route:     direct (fake planner picked direct)" in proc.stderr
    assert "download:" in proc.stderr and "disk:" in proc.stderr
    assert tree_bytes(game_dir) == tree_bytes(builds["1.0"])

    # JSON: progress as JSON lines on stderr, one result object on stdout
    proc = run(logged_in, "--json", "--server", fake_server.url, "--limit-rate", "50M", "update", "space-game")
    assert proc.returncode == 0, proc.stderr
    result = result_of(proc)
    assert (result["ok"], result["route"], result["to_version"]) == (True, "direct", "3.0")
    events = [json.loads(line) for line in proc.stderr.splitlines()]
    assert {"download", "patch", "verify"} <= {e["phase"] for e in events if e["event"] == "progress"}
    assert tree_bytes(game_dir) == tree_bytes(builds["3.0"])

    (game_dir / "readme.txt").write_bytes(b"tampered")
    proc = run(logged_in, "--json", "--server", fake_server.url, "verify")
    assert proc.returncode == 3
    assert result_of(proc)["games"]["space-game"]["modified"] == ["readme.txt"]
    proc = run(logged_in, "--server", fake_server.url, "repair", "space-game")
    assert proc.returncode == 0 and "repaired 1 file(s)" in proc.stdout
    proc = run(logged_in, "--server", fake_server.url, "status")
    assert "space-game  3.0" in proc.stdout


def test_config_and_url_handler(home: Path, tmp_path: Path) -> None:
    proc = run(home, "--json", "config", "--set-server", "mist.example.org:8000", "--set-limit-rate", "5M")
    assert result_of(proc)["server_url"] == "http://mist.example.org:8000"
    assert result_of(proc)["limit_rate"] == 5 * 1024 * 1024
    proc = run(home, "--json", "status")
    assert result_of(proc)["server"] == "http://mist.example.org:8000"
    assert result_of(proc)["limit_rate"] == 5 * 1024 * 1024
    proc = run(home, "config", "--set-limit-rate", "fast")
    assert proc.returncode == 2 and "unreadable rate" in proc.stderr

    data_home = tmp_path / "xdg"
    proc = run(home, "--json", "register-url-handler", env={"XDG_DATA_HOME": str(data_home)})
    assert proc.returncode == 0, proc.stderr
    desktop = (data_home / "applications" / "mist-patcher.desktop").read_text()
    assert "MimeType=x-scheme-handler/mist;" in desktop
    assert "gui %u" in desktop and f"MIST_PATCHER_HOME={home}" in desktop


def test_two_patchers_sharing_a_login_survive_refresh_token_rotation(ctx, fake_server: FakeMist) -> None:
    from mist_patcher.core.api import ApiClient

    # given: the GUI and a CLI run hold the same (soon rotated) tokens from one credentials store
    other = ApiClient(ctx.server, store=ctx.credentials)
    fake_server.expire_access_tokens()
    # when: the first refreshes (its refresh token is rotated and the old one revoked)...
    assert [g["slug"] for g in ctx.api.games()] == ["space-game"]
    # then: ...the second adopts the stored, rotated tokens instead of being logged out
    assert [g["slug"] for g in other.games()] == ["space-game"]
    assert other.tokens == ctx.api.tokens == ctx.credentials.load(ctx.server)
