"""One desktop app per user and patcher home: later launches hand their mist:// link to the first.

The end-to-end tests run the real entry point (``python -m mist_patcher.cli.main gui``) offscreen in
subprocesses with their own HOME, patcher home and XDG_RUNTIME_DIR, and observe the first app
through its stderr log (the lines ``single instance: ...``) and its install state.
"""

from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt application exists

import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mist_patcher.tests.conftest import write_game
from mist_patcher.tests.fakeserver import FakeMist
from mist_patcher.ui.single_instance import (
    MAX_MESSAGE,
    InstanceServer,
    InvalidMessage,
    Message,
    SingleInstance,
    encode_message,
    parse_message,
    server_name,
    socket_address,
)

REPO = Path(__file__).resolve().parents[2]
RESET = b"<connection reset>"
DROPPED = (b"ignored\n", RESET)
OFFLINE_SERVER = "http://127.0.0.1:9"  # nothing listens: the library shows "Offline", which is fine here

posix_only = pytest.mark.skipif(sys.platform.startswith("win"), reason="Unix sockets and SIGKILL")


# --- message parsing (no Qt) -------------------------------------------------------------------

def test_parse_message_accepts_raise_and_mist_links_only() -> None:
    assert parse_message(b"raise\n") == Message()
    assert parse_message(b"raise").kind == "raise"
    assert parse_message(b"mist://install/space-game\r\n") == Message(url="mist://install/space-game")
    assert parse_message(b"MIST://open/space-game\n").kind == "url"
    # A malformed but mist:// link goes to the window, which reports it as a fresh launch would.
    assert parse_message(b"mist://delete/x\n").url == "mist://delete/x"
    for garbage, why in [
        (b"", "empty"),
        (b"\n", "empty"),
        (b"\xff\xfe\n", "not UTF-8"),
        (b"RAISE\n", "neither"),
        (b"http://install/x\n", "neither"),
        (b"file:///etc/passwd\n", "neither"),
        (b"mist:install/x\n", "neither"),
        (b"raise\nraise\n", "control"),
        (b"mist://install/a b\n", "whitespace"),
        (b"mist://install/a\x00b\n", "control"),
        (b"mist://install/" + b"a" * MAX_MESSAGE + b"\n", "longer than"),
    ]:
        with pytest.raises(InvalidMessage, match=why):
            parse_message(garbage)


def test_encode_message_round_trips_and_refuses_what_the_receiver_would() -> None:
    assert encode_message(None) == b"raise\n"
    assert parse_message(encode_message(" mist://install/x ")) == Message(url="mist://install/x")
    with pytest.raises(InvalidMessage):
        encode_message("https://example.org")


def test_address_differs_per_user_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert server_name(a, user="1000") == server_name(tmp_path / "x" / ".." / "a", user="1000")
    assert len({server_name(a, user="1000"), server_name(b, user="1000"), server_name(a, user="1001")}) == 3


@posix_only
def test_socket_lives_only_in_a_private_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="mist-rt-"))
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        assert socket_address(tmp_path) == str(runtime / f"{server_name(tmp_path)}.sock")
        runtime.chmod(0o755)  # open to others: not used, the private temp folder is
        address = socket_address(tmp_path)
        assert address is not None and not address.startswith(str(runtime))
        folder = Path(address).parent
        assert folder.name == f"mist-patcher-{os.getuid()}" and folder.stat().st_mode & 0o077 == 0
    finally:
        shutil.rmtree(runtime)


# --- in process: the server and the stale-socket dance ------------------------------------------

@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path (Unix socket paths are limited to about 100 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="mist-si-"))
    folder.chmod(0o700)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _exchange(address: str, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(address)
        try:
            sock.sendall(payload)
        except BrokenPipeError:
            pass  # the server stops reading (and closes) once a message is too long
        answer = b""
        try:
            while chunk := sock.recv(100):
                answer += chunk
        except ConnectionResetError:
            # Closed with our unread bytes still queued (an overlong message): Linux resets.
            return answer or RESET
        return answer


@posix_only
def test_server_ignores_garbage_and_delivers_valid_messages(qtbot, qapp, short_dir: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    address = str(short_dir / "s.sock")
    server = InstanceServer()
    assert server.listen(address)
    received: list[Message] = []
    server.message_received.connect(received.append)
    answers: dict[bytes, bytes] = {}
    payloads = [b"\x00\xff\xfe\n", b"x" * (MAX_MESSAGE * 3), b"http://evil/\n", b"mist://install/ok-game\n"]

    def client() -> None:
        for payload in payloads:
            answers[payload] = _exchange(address, payload)

    thread = threading.Thread(target=client)
    with caplog.at_level("INFO", logger="mist_patcher"):
        thread.start()
        qtbot.waitUntil(lambda: not thread.is_alive(), timeout=15_000)
    server.close()
    assert received == [Message(url="mist://install/ok-game")]
    assert [answers[p] for p in payloads] == [b"ignored\n", answers[payloads[1]], b"ignored\n", b"ok\n"]
    assert answers[payloads[1]] in DROPPED  # overlong: answered, or reset as the rest is left unread
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 3 and any("not UTF-8" in m for m in ignored) and any("longer than" in m for m in ignored)


@posix_only
def test_a_stale_socket_is_removed_and_the_launch_becomes_the_first(qapp, short_dir: Path) -> None:  # type: ignore[no-untyped-def]
    address = str(short_dir / "s.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(address)  # a socket file nobody listens on, as a killed app leaves it
    dead.close()
    assert os.path.exists(address)
    first = SingleInstance(short_dir, address=address)
    assert not first.forward("mist://install/x")  # refused: nobody to hand it to
    server = first.listen(qapp)
    assert server is not None and server.server.isListening()
    assert not os.path.exists(short_dir / "s.lock")  # the startup lock is released
    server.close()


# --- end to end: real processes -------------------------------------------------------------------

class Launcher:
    """Runs ``mist-patcher gui`` processes sharing one isolated user (HOME, runtime dir, patcher home)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "patcher-home"
        self.runtime = Path(tempfile.mkdtemp(prefix="mist-rt-"))
        self.runtime.chmod(0o700)
        (root / "user-home").mkdir(exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MIST_", "XDG_"))}
        self.env.update({
            "MIST_PATCHER_HOME": str(self.home),
            "HOME": str(root / "user-home"),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "QT_QPA_PLATFORM": "offscreen",
            "PYTHONUNBUFFERED": "1",
        })
        self.processes: list[subprocess.Popen[bytes]] = []
        self.count = 0

    @property
    def address(self) -> str:
        old = os.environ.get("XDG_RUNTIME_DIR")
        os.environ["XDG_RUNTIME_DIR"] = str(self.runtime)
        try:
            address = socket_address(self.home)
        finally:
            if old is None:
                del os.environ["XDG_RUNTIME_DIR"]
            else:
                os.environ["XDG_RUNTIME_DIR"] = old
        assert address is not None and address.startswith(str(self.runtime))
        return address

    def command(self, *args: str, server: str = OFFLINE_SERVER) -> list[str]:
        return [sys.executable, "-m", "mist_patcher.cli.main", "--server", server, "gui", *args]

    def start(self, *args: str, server: str = OFFLINE_SERVER) -> tuple[subprocess.Popen[bytes], Path]:
        """A GUI process that should stay up; its stderr goes to a log file."""
        self.count += 1
        log = self.root / f"gui-{self.count}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(self.command(*args, server=server), cwd=REPO, env=self.env,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.processes.append(proc)
        return proc, log

    def run(self, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
        """A launch that should hand over and exit; returns it and how long it took."""
        started = time.monotonic()
        done = subprocess.run(self.command(*args), cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        return done, time.monotonic() - started

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.runtime, ignore_errors=True)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    runner = Launcher(tmp_path)
    yield runner
    runner.stop_all()


def wait_for(condition: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    detail = log.read_text(errors="replace") if log and log.exists() else ""
    state = f" (process exited {proc.returncode})" if proc is not None and proc.poll() is not None else ""
    raise AssertionError(f"timed out waiting for {what}{state}\n{detail}")


def log_has(log: Path, text: str) -> bool:
    return text in log.read_text(errors="replace")


def start_first(launcher: Launcher, *args: str, server: str = OFFLINE_SERVER) -> tuple[subprocess.Popen[bytes], Path]:
    proc, log = launcher.start(*args, server=server)
    wait_for(lambda: log_has(log, "single instance: listening on"), 60, "the first app to listen", proc, log)
    return proc, log


@pytest.fixture
def store_server(fake_server: FakeMist, tmp_path: Path) -> FakeMist:
    folder = write_game(tmp_path / "extra" / "star-farmer", {
        "game.bin": random.Random(13).randbytes(100_000), "assets/intro.txt": b"Star Farmer"})
    fake_server.add_version("star-farmer", "1.0", folder, title="Star Farmer")
    return fake_server


@posix_only
def test_second_launch_hands_its_link_to_the_first_which_installs_the_game(
        launcher: Launcher, store_server: FakeMist, monkeypatch: pytest.MonkeyPatch) -> None:
    from mist_patcher.core.context import open_context
    from mist_patcher.core.state import StateStore

    # given: a signed-in patcher home, and its app open on the library
    monkeypatch.setenv("MIST_PATCHER_HOME", str(launcher.home))
    open_context(server=store_server.url).api.login("friend", "friend-Passw0rd!")
    first, first_log = start_first(launcher, server=store_server.url)

    # when: the store's link is clicked, which launches the app again
    second, seconds = launcher.run("mist://install/star-farmer")

    # then: the second launch hands over and leaves at once, without a window or recovery of its own
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stderr
    assert seconds < 20
    wait_for(lambda: log_has(first_log, "received mist://install/star-farmer"), 15, "the link to arrive",
             first, first_log)
    # and the first app handles it as a fresh launch would: it installs the game
    wait_for(lambda: (r := StateStore(launcher.home).get("star-farmer")) is not None and r.complete, 60,
             "star-farmer to be installed by the first app", first, first_log)
    assert first.poll() is None
    assert len(list(launcher.runtime.glob("*.sock"))) == 1

    # a bare launch (start menu) only raises the running app
    bare, _ = launcher.run()
    assert bare.returncode == 0, bare.stderr
    wait_for(lambda: log_has(first_log, "single instance: received raise"), 15, "the raise request", first, first_log)
    assert first.poll() is None


@posix_only
def test_a_stale_socket_from_a_killed_app_does_not_block_the_next_launch(launcher: Launcher) -> None:
    first, _ = start_first(launcher)
    address = launcher.address
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert os.path.exists(address)  # the killed app left its socket file behind
    with pytest.raises(OSError):  # ...with nobody behind it
        _exchange(address, b"raise\n")

    # when: the next click on a store link
    next_app, next_log = start_first(launcher, "mist://install/star-farmer")
    # then: it became the first app itself, after removing the dead socket
    assert log_has(next_log, "removed the stale socket")
    assert next_app.poll() is None
    # and the launch after it hands over to it
    third, _ = launcher.run("mist://open/star-farmer")
    assert third.returncode == 0, third.stderr
    wait_for(lambda: log_has(next_log, "received mist://open/star-farmer"), 15, "the link to arrive",
             next_app, next_log)


@posix_only
def test_garbage_over_the_socket_is_ignored_and_the_app_keeps_working(launcher: Launcher) -> None:
    first, first_log = start_first(launcher)
    address = launcher.address
    # a client that connects and never finishes its line must not hold anyone else up
    stalled = socket.socket(socket.AF_UNIX)
    stalled.connect(address)
    stalled.sendall(b"mist://install/never-ends")
    try:
        for payload in (b"\x00\x01\x02\xff\n", b"A" * 100_000, b"http://evil.example/x\n",
                        b"raise now\n", b"javascript:alert(1)\n"):
            expected = DROPPED if len(payload) > MAX_MESSAGE else (b"ignored\n",)
            assert _exchange(address, payload) in expected, payload[:30]
        assert _exchange(address, b"raise\n") == b"ok\n"
        stalled.settimeout(10)
        assert stalled.recv(100) == b"ignored\n"  # dropped after its read timeout
    finally:
        stalled.close()
    wait_for(lambda: log_has(first_log, "sent no complete message"), 10, "the stalled client to be dropped",
             first, first_log)
    text = first_log.read_text(errors="replace")
    assert text.count("single instance: ignored") == 6
    assert "Traceback" not in text
    # still alive, still the first app
    assert first.poll() is None
    later, _ = launcher.run("mist://install/space-game")
    assert later.returncode == 0, later.stderr
    wait_for(lambda: log_has(first_log, "received mist://install/space-game"), 15, "the link to arrive",
             first, first_log)


# --- in process: what the first app does with a forwarded link ------------------------------------

def test_a_forwarded_link_installs_even_a_game_bought_after_the_library_loaded(
        qtbot, qapp, patcher_home: Path, store_server: FakeMist, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mist_patcher.ui.app import create_window, handle_message
    from mist_patcher.ui.gc import MainThreadGarbageCollector

    collector = MainThreadGarbageCollector(qapp)
    win = create_window(server=store_server.url)
    try:
        win.ctx.api.job_poll_interval = 0.05
        win.ctx.settings.install_root = str(patcher_home.parent / "games")
        qtbot.addWidget(win)
        win.ctx.api.login("friend", "friend-Passw0rd!")
        with qtbot.waitSignal(win.library_loaded, timeout=15_000):
            win.show_library()
        assert "moon-miner" not in win.library.cards
        # bought in the store since the library loaded, then its link clicked
        folder = write_game(tmp_path / "extra" / "moon-miner", {"game.bin": b"moon" * 1000})
        store_server.add_version("moon-miner", "1.0", folder, title="Moon Miner")
        with qtbot.waitSignal(win.job_started, timeout=15_000) as started:
            handle_message(win, Message(url="mist://install/moon-miner"))
        job = started.args[0]
        with qtbot.waitSignal(job.finished, timeout=30_000):
            pass
        assert (job.kind, job.slug, job.state) == ("install", "moon-miner", "done")
        # a malformed link is reported in the window, as on a fresh launch, and nothing breaks
        handle_message(win, Message(url="mist://delete/moon-miner"))
        assert "expected mist://install/<game>" in win.library.message.text()
    finally:
        win.shutdown()
        collector.stop()
        collector.deleteLater()
