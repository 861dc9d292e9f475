"""Interrupted downloads resumed by real clients (curl, wget, aria2c, requests) over real HTTP.

pytest-django's live_server runs the project's WSGI app on a loopback port in this process, so
the bytes go through a real server, Django's WSGI file wrapper, and a real socket.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from accounts.authentication import token_pair_for
from builds import storage
from catalog.models import Game
from downloads import services
from downloads.models import DownloadRecord, FullArchive
from downloads.tests.conftest import make_game, make_version, random_bytes, sha256

pytestmark = pytest.mark.django_db(transaction=True)

SIZE = 2 * 1024 * 1024 + 12345  # a few streaming blocks, and not a round number


@pytest.fixture
def big_game(db: None) -> Game:
    return make_game("game")


@pytest.fixture
def big_archive(big_game: Game) -> FullArchive:
    version = make_version(big_game, "1.0", {"data.bin": random_bytes(SIZE, seed=7), "run.sh": b"#!/bin/sh\n"})
    return services.build_archive(version=version)


@pytest.fixture
def archive_data(big_archive: FullArchive) -> bytes:
    return (storage.cache_root() / big_archive.relpath).read_bytes()


@pytest.fixture
def signed_url(live_server: Any, friend: Any, big_archive: FullArchive) -> str:
    return live_server.url + services.signed_download_url(user=friend, kind="archive", slug="game", version="1.0")


# Larger than what loopback socket buffers hold (a few MB), so a client that goes away really
# leaves the server with unsent bytes (and the record incomplete). A plain file: no compression.
HUGE = 32 * 1024 * 1024


@pytest.fixture
def huge_file(big_game: Game) -> bytes:
    data = random_bytes(HUGE, seed=11)
    make_version(big_game, "0.1", {"huge.bin": data}, status="ready")
    return data


@pytest.fixture
def huge_url(live_server: Any, friend: Any, huge_file: bytes) -> str:
    return live_server.url + services.signed_download_url(
        user=friend, kind="file", slug="game", version="0.1", ref="huge.bin")


def wait_for(condition: Callable[[], Any], *, timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def finished_records(n: int) -> list[DownloadRecord]:
    """The first n download records, once the server has closed all of them (its thread does that)."""
    def ready() -> list[DownloadRecord] | None:
        records = list(DownloadRecord.objects.order_by("started_at", "pk"))
        return records if len(records) >= n and all(r.finished_at for r in records[:n]) else None

    return wait_for(ready, what=f"{n} finished download records")[:n]


def run(cmd: list[str], *, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(cmd, capture_output=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd[0]} failed ({result.returncode}): {result.stderr.decode()[-2000:]}"
    return result


def partial_file(path: Path, data: bytes, n: int) -> Path:
    """An interrupted download: the first n bytes already on disk."""
    path.write_bytes(data[:n])
    return path


# --- curl ------------------------------------------------------------------------------------------


@pytest.mark.needs_tool("curl")
def test_curl_resumes_a_partial_file(signed_url: str, archive_data: bytes, big_archive: FullArchive, tmp_path: Path) -> None:
    out = partial_file(tmp_path / "game.tar.zst", archive_data, 700_001)
    run(["curl", "--silent", "--show-error", "--fail", "--continue-at", "-", "--output", str(out), signed_url])
    assert sha256(out.read_bytes()) == big_archive.sha256
    [record] = finished_records(1)
    assert (record.range_start, record.bytes_requested, record.bytes_served, record.completed) == (
        700_001, len(archive_data) - 700_001, len(archive_data) - 700_001, True)
    assert record.client.startswith("curl/")


@pytest.mark.needs_tool("curl")
def test_curl_killed_mid_download_then_resumed(huge_url: str, huge_file: bytes, tmp_path: Path) -> None:
    out = tmp_path / "huge.bin"
    # Slow enough to be caught in the middle, then SIGKILL: a real interruption.
    proc = subprocess.Popen(
        ["curl", "--silent", "--limit-rate", "4M", "--output", str(out), huge_url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: out.exists() and out.stat().st_size >= 1_000_000, what="curl to receive some bytes")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    got = out.stat().st_size
    assert 0 < got < HUGE
    assert out.read_bytes() == huge_file[:got]
    run(["curl", "--silent", "--show-error", "--fail", "--continue-at", "-", "--output", str(out), huge_url])
    assert sha256(out.read_bytes()) == sha256(huge_file)
    first, second = finished_records(2)
    # The server counts what it handed to the socket: at least what curl got, never the whole file.
    assert not first.completed and got <= first.bytes_served < HUGE
    assert second.completed and second.range_start == got


# --- wget ------------------------------------------------------------------------------------------


@pytest.mark.needs_tool("wget")
def test_wget_continues_a_partial_file(signed_url: str, archive_data: bytes, big_archive: FullArchive, tmp_path: Path) -> None:
    out = partial_file(tmp_path / "game.tar.zst", archive_data, 1_048_576)
    run(["wget", "--quiet", "--continue", "--output-document", str(out), signed_url])
    assert sha256(out.read_bytes()) == big_archive.sha256
    [record] = finished_records(1)
    assert record.range_start == 1_048_576 and record.completed


# --- aria2c ----------------------------------------------------------------------------------------


@pytest.mark.needs_tool("aria2c")
def test_aria2c_continues_a_partial_file_and_verifies_it(
    signed_url: str, archive_data: bytes, big_archive: FullArchive, tmp_path: Path
) -> None:
    partial_file(tmp_path / "game.tar.zst", archive_data, 333_333)
    run([
        "aria2c", "--quiet", "--continue=true", "--allow-overwrite=false", "--auto-file-renaming=false",
        "--max-connection-per-server=1", "--split=1", f"--checksum=sha-256={big_archive.sha256}",
        "--dir", str(tmp_path), "--out", "game.tar.zst", signed_url,
    ])
    assert sha256((tmp_path / "game.tar.zst").read_bytes()) == big_archive.sha256
    # aria2c first asks for the whole file to learn its size, drops that connection, then
    # resumes at a piece boundary at or below what it has.
    records = finished_records(2)
    resumed = [r for r in records if r.range_start > 0]
    assert len(resumed) == 1 and resumed[0].range_start <= 333_333 and resumed[0].completed


@pytest.mark.needs_tool("aria2c")
def test_aria2c_with_four_connections_gets_the_same_bytes(
    signed_url: str, big_archive: FullArchive, tmp_path: Path
) -> None:
    # Parallel ranged requests over several connections: each piece must line up exactly.
    run([
        "aria2c", "--quiet", "--max-connection-per-server=4", "--split=4", "--min-split-size=1M",
        f"--checksum=sha-256={big_archive.sha256}", "--dir", str(tmp_path), "--out", "game.tar.zst", signed_url,
    ])
    assert sha256((tmp_path / "game.tar.zst").read_bytes()) == big_archive.sha256
    records = finished_records(2)
    assert len({r.range_start for r in records}) == len(records) >= 2


# --- requests with a Bearer token (what the patcher does) ------------------------------------------


def test_requests_with_bearer_token_resumes_with_range_and_if_range(
    live_server: Any, friend: Any, huge_file: bytes, tmp_path: Path
) -> None:
    url = f"{live_server.url}/dl/file/game/0.1/huge.bin"
    headers = {"Authorization": f"Bearer {token_pair_for(friend)['access']}"}
    out = tmp_path / "huge.bin"
    # First attempt: stop reading after ~0.9 MB and drop the connection.
    with requests.get(url, headers=headers, stream=True, timeout=30) as r, open(out, "wb") as f:
        assert r.status_code == 200
        etag = r.headers["ETag"]
        for chunk in r.iter_content(64 * 1024):
            f.write(chunk)
            if f.tell() >= 900_000:
                break
    have = out.stat().st_size
    # Resume where we stopped, only if the artifact is still the same one.
    resume_headers = {**headers, "Range": f"bytes={have}-", "If-Range": etag}
    with requests.get(url, headers=resume_headers, stream=True, timeout=30) as r, open(out, "ab") as f:
        assert r.status_code == 206
        assert r.headers["Content-Range"] == f"bytes {have}-{HUGE - 1}/{HUGE}"
        for chunk in r.iter_content(256 * 1024):
            f.write(chunk)
    assert sha256(out.read_bytes()) == sha256(huge_file) == r.headers["X-Mist-SHA256"]
    first, second = finished_records(2)
    assert not first.completed and second.completed and second.range_start == have


def test_requests_resume_against_a_changed_artifact_restarts_from_zero(
    live_server: Any, friend: Any, archive_data: bytes
) -> None:
    url = f"{live_server.url}/dl/archive/game/1.0"
    headers = {"Authorization": f"Bearer {token_pair_for(friend)['access']}",
               "Range": "bytes=1000-", "If-Range": '"' + "f" * 64 + '"'}
    r = requests.get(url, headers=headers, timeout=30)
    assert r.status_code == 200
    assert r.content == archive_data


# --- Signed URLs and bad input over a real socket ---------------------------------------------------


def test_signed_url_works_without_any_credentials_and_head_tells_the_size(
    signed_url: str, big_archive: FullArchive
) -> None:
    r = requests.head(signed_url, timeout=30)
    assert r.status_code == 200
    assert int(r.headers["Content-Length"]) == big_archive.size
    assert r.headers["X-Mist-SHA256"] == big_archive.sha256
    assert r.content == b""


def test_tampered_signed_url_is_403_json(signed_url: str) -> None:
    r = requests.get(signed_url.replace("sig=", "sig=0"), timeout=30)
    assert r.status_code == 403
    assert r.json() == {"detail": "invalid download link signature"}


@pytest.mark.parametrize("path", ["%2e%2e/%2e%2e/%2e%2e/etc/passwd", "..%2f..%2fetc%2fpasswd", "%2fetc%2fpasswd",
                                  "..%5c..%5cwin.ini"])
def test_traversal_over_real_http(live_server: Any, friend: Any, big_game: Game, path: str) -> None:
    make_version(big_game, "2.0", {"a.txt": b"a"})
    parts = urlsplit(live_server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    # http.client sends the path as given: no client-side normalization of "..".
    conn.request("GET", f"/dl/file/game/2.0/{path}",
                 headers={"Authorization": f"Bearer {token_pair_for(friend)['access']}"})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    assert response.status in (400, 404)
    assert b"root:" not in payload and b"detail" in payload
