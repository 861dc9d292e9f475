"""The downloader: resume, corrupt partials, changed artifacts, bandwidth limit, cancel."""

from __future__ import annotations

import json
import threading
import time

import pytest

from mist_patcher.core.control import Control
from mist_patcher.core.errors import Cancelled, DownloadError
from mist_patcher.tests.fakeserver import FakeMist


def _part(path):  # type: ignore[no-untyped-def]
    return path.with_name(path.name + ".part")


def _seed_partial(dest, data: bytes, url: str, sha: str) -> None:  # type: ignore[no-untyped-def]
    _part(dest).write_bytes(data)
    dest.with_name(dest.name + ".part.json").write_text(json.dumps({"url": url, "sha256": sha}))


def test_a_corrupt_partial_fails_the_hash_and_is_not_resumed_again(ctx, fake_server: FakeMist) -> None:
    art = fake_server.version("space-game", "1.0").archive
    url = "/dl/archive/space-game/1.0"
    dest = ctx.state.download_path("a.tar.zst")
    _seed_partial(dest, b"\0" * 1000, url, art.sha256)  # right length prefix, wrong bytes
    with pytest.raises(DownloadError, match="wrong SHA-256"):
        ctx.downloader.fetch(url, dest, expected_size=art.size, expected_sha256=art.sha256)
    assert not _part(dest).exists()
    result = ctx.downloader.fetch(url, dest, expected_size=art.size, expected_sha256=art.sha256)
    assert result.transferred == art.size and dest.read_bytes() == art.path.read_bytes()


def test_a_partial_of_another_artifact_is_discarded(ctx, fake_server: FakeMist) -> None:
    art = fake_server.version("space-game", "2.0").archive
    dest = ctx.state.download_path("b.tar.zst")
    _seed_partial(dest, b"x" * 5000, "/dl/archive/space-game/1.0", "0" * 64)
    result = ctx.downloader.fetch("/dl/archive/space-game/2.0", dest, expected_size=art.size,
                                  expected_sha256=art.sha256)
    assert (result.resumed_from, result.transferred) == (0, art.size)


def test_if_range_mismatch_restarts_from_zero(ctx, fake_server: FakeMist) -> None:
    # given: a partial recorded for an expected hash the server no longer has under that URL
    art = fake_server.version("space-game", "1.0").archive
    url = "/dl/archive/space-game/1.0"
    dest = ctx.state.download_path("c.tar.zst")
    stale = "f" * 64
    _seed_partial(dest, art.path.read_bytes()[:1000], url, stale)
    # when / then: the server's X-Mist-SHA256 differs from what we expect: a clear error
    with pytest.raises(DownloadError, match="different file"):
        ctx.downloader.fetch(url, dest, expected_size=art.size, expected_sha256=stale)
    # and If-Range made the server send the whole file (200), not a range of the new one
    assert fake_server.log[-1].status == 200


def test_bandwidth_limit_applies_to_downloads(ctx, fake_server: FakeMist) -> None:
    art = fake_server.version("space-game", "3.0").archive  # ~1.4 MB
    ctx.set_limit_rate(1024 * 1024)
    started = time.monotonic()
    ctx.downloader.fetch("/dl/archive/space-game/3.0", ctx.state.download_path("d.tar.zst"),
                         expected_size=art.size, expected_sha256=art.sha256)
    elapsed = time.monotonic() - started
    expected = art.size / (1024 * 1024)
    assert expected * 0.8 <= elapsed <= expected * 2.0, (elapsed, expected)


def test_cancel_keeps_the_partial_for_later(ctx, fake_server: FakeMist) -> None:
    art = fake_server.version("space-game", "3.0").archive
    ctx.set_limit_rate(256 * 1024)
    control = Control()
    threading.Timer(1.0, control.cancel).start()
    dest = ctx.state.download_path("e.tar.zst")
    with pytest.raises(Cancelled):
        ctx.downloader.fetch("/dl/archive/space-game/3.0", dest, expected_size=art.size,
                             expected_sha256=art.sha256, control=control)
    kept = _part(dest).stat().st_size
    assert 0 < kept < art.size
    ctx.set_limit_rate(0)
    result = ctx.downloader.fetch("/dl/archive/space-game/3.0", dest, expected_size=art.size,
                                  expected_sha256=art.sha256)
    assert (result.resumed_from, result.transferred) == (kept, art.size - kept)
    assert dest.read_bytes() == art.path.read_bytes()
