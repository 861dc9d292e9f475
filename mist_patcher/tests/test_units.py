"""Small core pieces: bandwidth limiter, credentials file, units, progress output, links."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
import time
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail

from mist_patcher.cli.output import Output, render_bar, render_plain
from mist_patcher.core.config import Settings, normalize_server_url, resolve_server
from mist_patcher.core.control import Control
from mist_patcher.core.credentials import FileCredentialStore, KeyringCredentialStore, Tokens, open_credential_store
from mist_patcher.core.errors import Cancelled, ConfigError
from mist_patcher.core.links import parse_mist_url
from mist_patcher.core.progress import ProgressEvent, ProgressMeter
from mist_patcher.core.ratelimit import TokenBucket
from mist_patcher.core.units import format_bytes, format_duration, parse_rate

# --- bandwidth limiter --------------------------------------------------------------------------


def test_token_bucket_holds_the_rate_within_five_percent() -> None:
    bucket = TokenBucket(2 * 1024 * 1024)  # 2 MiB/s
    started = time.monotonic()
    sent = 0
    while sent < 3 * 1024 * 1024:  # 3 MiB in 64 KiB reads, like the downloader
        bucket.consume(64 * 1024)
        sent += 64 * 1024
    elapsed = time.monotonic() - started
    # 3 MiB at 2 MiB/s takes 1.5 s, less at most one burst (0.25 s) granted up front
    # (a loaded machine can only make it slower, so the upper bound is loose)
    assert 1.25 * 0.95 <= elapsed <= 1.5 * 1.5, elapsed


def test_token_bucket_is_shared_across_threads() -> None:
    bucket = TokenBucket(1024 * 1024)
    started = time.monotonic()

    def pull() -> None:
        for _ in range(8):
            bucket.consume(64 * 1024)

    threads = [threading.Thread(target=pull) for _ in range(4)]  # 4 x 512 KiB = 2 MiB
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert 1.75 * 0.95 <= elapsed <= 2.0 * 1.5, elapsed


def test_unlimited_bucket_never_sleeps_and_rate_can_change() -> None:
    bucket = TokenBucket(0)
    started = time.monotonic()
    for _ in range(1000):
        bucket.consume(1 << 20)
    assert time.monotonic() - started < 0.2
    bucket.set_rate(512 * 1024)
    started = time.monotonic()
    bucket.consume(256 * 1024)
    assert time.monotonic() - started >= 0.4


def test_a_cancel_interrupts_a_rate_limited_wait() -> None:
    bucket = TokenBucket(64 * 1024)
    control = Control()
    threading.Timer(0.2, control.cancel).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        bucket.consume(10 * 1024 * 1024, control)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("text,expected", [("5M", 5 * 1024**2), ("512k", 512 * 1024), ("1.5G", int(1.5 * 1024**3)),
                                           ("2MB/s", 2 * 1024**2), ("100", 100), ("0", 0), ("", 0)])
def test_parse_rate(text: str, expected: int) -> None:
    assert parse_rate(text) == expected


def test_parse_rate_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="unreadable rate"):
        parse_rate("fast")


def test_formatting() -> None:
    assert format_bytes(0) == "0 B" and format_bytes(1536) == "1.5 KB" and format_bytes(5 * 1024**3) == "5.0 GB"
    assert format_duration(95) == "1m35s" and format_duration(None) == "--" and format_duration(7300) == "2h01m"


# --- credentials --------------------------------------------------------------------------------


def test_credentials_file_is_0600_from_the_start_and_holds_no_password(patcher_home: Path) -> None:
    os.umask(0o022)
    patcher_home.mkdir(parents=True)
    store = open_credential_store(patcher_home)
    assert isinstance(store, FileCredentialStore)  # MIST_PATCHER_HOME set: never the keychain
    store.save("http://a:1", Tokens(access="acc", refresh="ref", username="friend"))
    path = patcher_home / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "http://a:1": {"access": "acc", "refresh": "ref", "username": "friend", "scope": "", "device_id": ""}
    }
    assert store.load("http://a:1") == Tokens(access="acc", refresh="ref", username="friend")
    assert store.load("http://other:2") is None
    store.delete("http://a:1")
    assert not path.exists()


def test_a_world_readable_credentials_file_is_refused(patcher_home: Path) -> None:
    patcher_home.mkdir(parents=True)
    path = patcher_home / "credentials.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        open_credential_store(patcher_home)


def test_server_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(server_url="http://settings:1")
    monkeypatch.delenv("MIST_SERVER", raising=False)
    assert resolve_server(None, settings) == "http://settings:1"
    monkeypatch.setenv("MIST_SERVER", "env-host:2/")
    assert resolve_server(None, settings) == "http://env-host:2"
    assert resolve_server("https://cli:3", settings) == "https://cli:3"
    with pytest.raises(ConfigError):
        normalize_server_url("ftp://x")


# --- progress and output ------------------------------------------------------------------------


def test_progress_meter_reports_speed_and_eta() -> None:
    now = [0.0]
    events: list[ProgressEvent] = []
    meter = ProgressMeter(events.append, phase="download", total=10_000, interval=0, clock=lambda: now[0])
    for _ in range(4):
        now[0] += 1.0
        meter.advance(1000)
    last = events[-1]
    assert (last.done, last.total) == (4000, 10_000)
    assert last.speed == pytest.approx(1000)
    assert last.eta == pytest.approx(6.0)
    assert last.fraction == pytest.approx(0.4)


def test_terminal_bar_and_plain_line_show_bytes_speed_and_eta() -> None:
    event = ProgressEvent("download", 5 * 1024**2, 20 * 1024**2, speed=2 * 1024**2, eta=7.5, message="space 2.0")
    bar = render_bar(event, 100)
    assert bar.startswith("Downloading [##########")
    assert " 25.0%  5.0 MB / 20.0 MB  2.0 MB/s  ETA 8s" in bar and len(bar) <= 99
    assert render_plain(event) == "downloading space 2.0: 25% (5.0 MB of 20.0 MB), 2.0 MB/s, ETA 8s"


def test_json_mode_keeps_stdout_for_the_result() -> None:
    out, err = io.StringIO(), io.StringIO()
    output = Output(json_mode=True, stdout=out, stderr=err)
    output.progress(ProgressEvent("verify", 10, 20, speed=5.0, eta=2.0))
    output.note("recovery: rolled back")
    output.result({"slug": "space-game", "version": "1.0"}, "human text")
    assert json.loads(out.getvalue()) == {"ok": True, "slug": "space-game", "version": "1.0"}
    lines = [json.loads(line) for line in err.getvalue().splitlines()]
    assert lines[0] == {"event": "progress", "phase": "verify", "done": 10, "total": 20, "speed": 5.0, "eta": 2.0,
                        "message": ""}
    assert lines[1] == {"event": "note", "message": "recovery: rolled back"}


def test_plain_mode_prints_throttled_lines_not_carriage_returns() -> None:
    out, err = io.StringIO(), io.StringIO()
    output = Output(stdout=out, stderr=err, interactive=False, plain_interval=60)
    for done in range(0, 101, 10):
        output.progress(ProgressEvent("download", done, 100, speed=10.0, eta=1.0))
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert lines[0].startswith("downloading: 0%") and lines[-1].startswith("downloading: 100%")
    assert len(lines) == 2  # first line of the phase and the finish; the rest is throttled


def test_terminal_mode_redraws_one_line_per_phase() -> None:
    err = io.StringIO()
    output = Output(stdout=io.StringIO(), stderr=err, interactive=True)
    output.progress(ProgressEvent("download", 1, 2))
    output.progress(ProgressEvent("download", 2, 2))
    output.progress(ProgressEvent("verify", 1, 1))
    output.result({}, "done")
    text = err.getvalue()
    assert text.count("\r") == 3 and text.count("\n") == 2  # a new line per phase, one at the end


# --- links --------------------------------------------------------------------------------------


def test_mist_links() -> None:
    link = parse_mist_url("mist://install/space-game")
    assert (link.action, link.slug) == ("install", "space-game")
    for bad in ("http://install/x", "mist://delete/x", "mist://install/", "mist://install/a/b", "mist://install/..%2f"):
        with pytest.raises(ConfigError):
            parse_mist_url(bad)


class MemoryKeyring(KeyringBackend):
    """A real keyring backend (a dict): what the patcher sees on a desktop with a keychain."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.items.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.items[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.items.pop((service, username), None)


@pytest.fixture
def restore_keyring():  # type: ignore[no-untyped-def]
    before = keyring.get_keyring()
    yield
    keyring.set_keyring(before)


def test_keychain_is_used_when_a_real_one_exists_and_home_is_not_explicit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_keyring: None
) -> None:
    monkeypatch.delenv("MIST_PATCHER_HOME", raising=False)
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    store = open_credential_store(tmp_path)
    assert isinstance(store, KeyringCredentialStore)
    store.save("http://a:1", Tokens(access="acc", refresh="ref"))
    assert store.load("http://a:1") == Tokens(access="acc", refresh="ref")
    assert json.loads(backend.items[("mist-patcher", "http://a:1")])["refresh"] == "ref"
    assert not (tmp_path / "credentials.json").exists()
    # the fail backend (no keychain on this machine) means the 0600 file
    keyring.set_keyring(fail.Keyring())
    assert isinstance(open_credential_store(tmp_path), FileCredentialStore)
    # and MIST_PATCHER_HOME always means the file, even with a keychain
    keyring.set_keyring(backend)
    monkeypatch.setenv("MIST_PATCHER_HOME", str(tmp_path))
    assert isinstance(open_credential_store(tmp_path), FileCredentialStore)
