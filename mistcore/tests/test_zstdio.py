"""zstd streams: round trips, truncation, bombs, corrupt data."""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from pathlib import Path

import pytest
import zstandard

from mistcore import zstdio
from mistcore.errors import ArchiveError, IntegrityError
from mistcore.tests.helpers import structured_bytes
from mistcore.zstdio import FrameTracker, compress_bytes, compress_file, decompress_file, decompress_stream


def _frames(data: bytes) -> dict[str, bytes]:
    stream = io.BytesIO()
    with zstandard.ZstdCompressor(level=3, threads=2).stream_writer(stream, closefd=False) as w:
        for i in range(0, len(data), 100_000):
            w.write(data[i : i + 100_000])
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    return {
        "one-shot": compress_bytes(data),
        "no content size": zstandard.ZstdCompressor(level=1, write_content_size=False).compress(data),
        "streamed, threads": stream.getvalue(),
        "two frames": compress_bytes(data[:1000]) + compress_bytes(data[1000:]),
        "skippable frame": skippable + compress_bytes(data),
    }


def test_round_trips_and_every_truncation_is_caught(rng: random.Random) -> None:
    data = structured_bytes(rng, 250_000)
    for name, frame in _frames(data).items():
        out = io.BytesIO()
        assert decompress_stream(io.BytesIO(frame), out, max_output=10**7) == len(data), name
        assert out.getvalue() == data
        for cut in sorted({1, 4, 7, 12, 100, len(frame) // 3, len(frame) // 2, len(frame) - 5, len(frame) - 1}):
            with pytest.raises(ArchiveError):
                decompress_stream(io.BytesIO(frame[:cut]), None, max_output=10**7)


def test_frame_tracker_accepts_byte_by_byte_feeding(rng: random.Random) -> None:
    frame = compress_bytes(structured_bytes(rng, 50_000))
    tracker = FrameTracker()
    for i in range(len(frame)):
        assert not tracker.complete
        tracker.feed(frame[i : i + 1])
    assert tracker.complete and tracker.frames == 1


def test_trailing_garbage_and_corruption_are_refused(rng: random.Random) -> None:
    data = structured_bytes(rng, 200_000)
    frame = compress_bytes(data)
    with pytest.raises(ArchiveError):
        decompress_stream(io.BytesIO(frame + b"junk"), None, max_output=10**7)
    with pytest.raises(ArchiveError):
        decompress_stream(io.BytesIO(b"not zstd at all"), None, max_output=10**7)
    with pytest.raises(ArchiveError):
        decompress_stream(io.BytesIO(b""), None, max_output=10**7)
    bad = bytearray(frame)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(ArchiveError):
        decompress_stream(io.BytesIO(bytes(bad)), None, max_output=10**7)


def test_zstd_bomb_is_stopped_at_the_cap() -> None:
    # 256 MiB of zeros in a ~8 KiB frame that also declares its huge content size.
    cctx = zstandard.ZstdCompressor(level=1)
    bomb = cctx.compress(bytes(256 << 20))
    assert len(bomb) < 32 << 10
    start = time.monotonic()
    with pytest.raises(ArchiveError, match="limit"):
        decompress_stream(io.BytesIO(bomb), None, max_output=4 << 20)
    assert time.monotonic() - start < 2


def test_compress_and_decompress_file(work: Path, rng: random.Random) -> None:
    data = structured_bytes(rng, 1_500_000)
    (work / "src").write_bytes(data)
    size = compress_file(work / "src", work / "src.zst", level=3)
    assert size == os.path.getsize(work / "src.zst") < len(data)
    params = zstandard.get_frame_parameters((work / "src.zst").read_bytes())
    assert params.content_size == len(data) and params.has_checksum
    sha = hashlib.sha256(data).hexdigest()
    assert decompress_file(
        work / "src.zst", work / "out", max_output=10**7, expected_size=len(data), expected_sha256=sha
    ) == len(data)
    assert (work / "out").read_bytes() == data
    with pytest.raises(IntegrityError, match="SHA-256"):
        decompress_file(work / "src.zst", work / "bad1", max_output=10**7, expected_sha256="0" * 64)
    with pytest.raises(IntegrityError, match="larger"):
        decompress_file(work / "src.zst", work / "bad2", max_output=10**7, expected_size=len(data) - 1)
    with pytest.raises(IntegrityError, match="expected"):
        decompress_file(work / "src.zst", work / "bad3", max_output=10**7, expected_size=len(data) + 1)
    with pytest.raises(ArchiveError, match="limit"):
        decompress_file(work / "src.zst", work / "bad4", max_output=1000)
    assert sorted(p.name for p in work.iterdir()) == ["out", "src", "src.zst"]


def test_empty_file(work: Path) -> None:
    (work / "empty").write_bytes(b"")
    compress_file(work / "empty", work / "empty.zst")
    empty_sha = hashlib.sha256(b"").hexdigest()
    assert (
        decompress_file(work / "empty.zst", work / "out", max_output=0, expected_size=0, expected_sha256=empty_sha) == 0
    )
    assert (work / "out").read_bytes() == b""


def test_compress_file_hashed_stops_over_the_limit(tmp_path: Path) -> None:
    tmp_path = tmp_path / "limit"
    tmp_path.mkdir()
    data = random.Random(5).randbytes(6 << 20)  # incompressible: output grows with the input
    (tmp_path / "src").write_bytes(data)
    started = time.perf_counter()
    with pytest.raises(zstdio.OverLimit):
        zstdio.compress_file_hashed(tmp_path / "src", tmp_path / "dst", level=19, limit=1 << 20)
    assert time.perf_counter() - started < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"], "no output and no temp file left behind"
    # Under the limit it behaves as without one.
    size, read, sha = zstdio.compress_file_hashed(tmp_path / "src", tmp_path / "dst", level=3, limit=7 << 20)
    assert (size, read, sha) == ((tmp_path / "dst").stat().st_size, len(data), hashlib.sha256(data).hexdigest())
    # A limit just below the final size is still caught at the end (the last block is flushed on close).
    with pytest.raises(zstdio.OverLimit):
        zstdio.compress_file_hashed(tmp_path / "src", tmp_path / "dst2", level=3, limit=size - 1)
    assert not (tmp_path / "dst2").exists()
