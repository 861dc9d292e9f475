"""Fixtures of the patcher's tests: an isolated patcher home, generated game builds, a fake server."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from mist_patcher.tests.fakeserver import FakeMist


@pytest.fixture(autouse=True)
def patcher_platform(monkeypatch: pytest.MonkeyPatch) -> str:
    """Builds pushed without --platform are the server's default (windows): patchers here install those.

    Tests of the platform choice itself set or clear MIST_PATCHER_PLATFORM (or pass --platform).
    """
    monkeypatch.setenv("MIST_PATCHER_PLATFORM", "windows")
    return "windows"


def write_game(root: Path, files: dict[str, bytes], *, executable: tuple[str, ...] = ()) -> Path:
    """Create a build folder from {path: bytes}."""
    for rel, data in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o755 if rel in executable else 0o644)
    return root


def random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def game_v1() -> dict[str, bytes]:
    return {
        "bin/game": random_bytes(1, 300_000),
        "data/level1.pak": random_bytes(2, 500_000),
        "data/level2.pak": random_bytes(3, 400_000),
        "readme.txt": b"Hello from version 1\n",
        "config/defaults.ini": b"[video]\nwidth=1280\n",
    }


def game_v2() -> dict[str, bytes]:
    files = game_v1()
    level1 = bytearray(files["data/level1.pak"])
    level1[100_000:100_100] = b"\x01" * 100  # a small in-place change
    files["data/level1.pak"] = bytes(level1)
    files["bin/game"] = files["bin/game"][:250_000] + random_bytes(4, 60_000)
    files["readme.txt"] = b"Hello from version 2\n"
    del files["config/defaults.ini"]
    files["data/level3.pak"] = random_bytes(5, 200_000)
    return files


def game_v3() -> dict[str, bytes]:
    files = game_v2()
    files["data/level2.pak"] = files["data/level2.pak"][:200_000] + random_bytes(6, 10_000) + files["data/level2.pak"][200_000:]
    files["readme.txt"] = b"Hello from version 3\n"
    return files


@pytest.fixture
def patcher_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "patcher-home"
    monkeypatch.setenv("MIST_PATCHER_HOME", str(home))
    monkeypatch.delenv("MIST_SERVER", raising=False)
    return home


@pytest.fixture
def builds(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "builds"
    return {
        "1.0": write_game(root / "1.0", game_v1(), executable=("bin/game",)),
        "2.0": write_game(root / "2.0", game_v2(), executable=("bin/game",)),
        "3.0": write_game(root / "3.0", game_v3(), executable=("bin/game",)),
    }


@pytest.fixture
def fake_server(tmp_path: Path, builds: dict[str, Path]) -> Iterator[FakeMist]:
    server = FakeMist(tmp_path / "server")
    for name, folder in builds.items():
        server.add_version("space-game", name, folder, title="Space Game")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ctx(patcher_home: Path, fake_server: FakeMist):  # type: ignore[no-untyped-def]
    """A logged-in patcher context on the fake server, fast job polling."""
    from mist_patcher.core.context import open_context

    context = open_context(server=fake_server.url, job_poll_interval=0.05)
    context.api.login("friend", "friend-Passw0rd!")
    context.settings.install_root = str(patcher_home.parent / "games")
    return context


def tree_bytes(root: Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under root (for byte-for-byte comparisons)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out
