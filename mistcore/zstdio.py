"""Bounded, truncation-checked zstd streams.

Compression writes ordinary zstd frames (RFC 8878) with a content checksum and, when the input
size is known, the content size. Decompression treats every input as hostile:

- it only ever goes through ``stream_reader`` with ``max_window_size=1 << 27`` (the one-shot
  ``decompress()`` allocates whatever the frame header declares);
- output is capped: ``ArchiveError`` as soon as more than ``max_output`` bytes come out;
- completeness is checked: zstandard's readers silently return partial data for a cut frame,
  so a small parser (``FrameTracker``) follows the frame and block headers of the compressed
  bytes as they are read and ``ArchiveError`` is raised unless the input ends exactly at the end
  of a frame. Concatenated and skippable frames are accepted, as the ``zstd`` tool does.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from mistcore.errors import ArchiveError, IntegrityError
from mistcore.fsutil import CHUNK, HashingWriter, atomic_write

MAX_WINDOW_SIZE = 1 << 27
_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50


class FrameTracker:
    """Follows zstd frame structure over a byte stream to tell whether it ended on a frame boundary."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 4  # header bytes to collect before the next parse step
        self._skip = 0  # payload bytes to pass over before collecting again
        self._state = "magic"
        self._checksum = False
        self.frames = 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            take = min(self._need - len(self._buf), len(view))
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == self._need:
                self._step(bytes(self._buf))
                self._buf.clear()

    def _step(self, header: bytes) -> None:
        if self._state == "magic":
            (magic,) = struct.unpack("<I", header)
            if magic == _ZSTD_MAGIC:
                self._state, self._need = "descriptor", 1
            elif magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self._state, self._need = "skippable", 4
            else:
                raise ArchiveError("not a zstd stream (bad frame magic)")
        elif self._state == "skippable":
            (self._skip,) = struct.unpack("<I", header)
            self._state, self._need = "magic", 4
        elif self._state == "descriptor":
            fhd = header[0]
            if fhd & 0x08:
                raise ArchiveError("corrupt zstd frame header (reserved bit set)")
            fcs_flag, single_segment = fhd >> 6, bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 0x03]
            rest += (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
            self._state = "block"
            self._need = 3
            self._skip = rest
        elif self._state == "block":
            (value,) = struct.unpack("<I", header + b"\0")
            last, block_type, size = value & 1, (value >> 1) & 3, value >> 3
            if block_type == 3:
                raise ArchiveError("corrupt zstd block (reserved block type)")
            self._skip = 1 if block_type == 1 else size
            if last:
                self.frames += 1
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4

    @property
    def complete(self) -> bool:
        """True when at least one frame was seen and the stream so far ends exactly between frames."""
        return self.frames > 0 and self._state == "magic" and not self._buf and not self._skip


class _TrackedSource:
    """Read-only wrapper feeding every compressed byte read to a FrameTracker."""

    def __init__(self, fileobj: IO[bytes], tracker: FrameTracker) -> None:
        self._f = fileobj
        self._tracker = tracker
        self.eof = False

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if data:
            self._tracker.feed(data)
        else:
            self.eof = True
        return data


class BoundedZstdReader:
    """A readable stream of decompressed bytes: capped, window-limited and checked for truncation."""

    def __init__(
        self, fileobj: IO[bytes], *, max_output: int, decompressor: zstandard.ZstdDecompressor | None = None
    ) -> None:
        self._tracker = FrameTracker()
        self._source = _TrackedSource(fileobj, self._tracker)
        # A caller passing its own decompressor (a dictionary, a larger window) sets its window cap itself.
        dctx = decompressor if decompressor is not None else zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_SIZE)
        self._reader = dctx.stream_reader(cast(IO[bytes], self._source), read_size=CHUNK, read_across_frames=True)
        self._max_output = max_output
        self.count = 0
        self._done = False

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        want = CHUNK if n is None or n < 0 else n
        # Never ask for more than one byte past the cap: the reader must not buffer a bomb for us.
        want = min(want, self._max_output - self.count + 1)
        try:
            data = self._reader.read(want) if want > 0 else b""
        except zstandard.ZstdError as exc:
            raise ArchiveError(f"corrupt zstd data: {exc}") from None
        if data:
            self.count += len(data)
            if self.count > self._max_output:
                raise ArchiveError(f"zstd data decompresses to more than its limit of {self._max_output} bytes")
            return data
        if want <= 0:
            raise ArchiveError(f"zstd data decompresses to more than its limit of {self._max_output} bytes")
        self._finish()
        return b""

    def _finish(self) -> None:
        # The reader may stop without reading the source to its end: any leftover byte must be checked.
        while not self._source.eof:
            self._source.read(CHUNK)
        if not self._tracker.complete:
            raise ArchiveError("truncated zstd data (the stream ends inside a frame)")
        self._done = True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        cast(Any, self._reader).close()


def compress_bytes(data: bytes, level: int = 19) -> bytes:
    """One zstd frame with content size and checksum."""
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data)


def compress_file(src: Path, dst: Path, *, level: int = 19, threads: int = 0) -> int:
    """Stream-compress ``src`` into ``dst`` atomically (content size recorded); return the compressed size."""
    return compress_file_hashed(src, dst, level=level, threads=threads)[0]


class OverLimit(Exception):
    """``compress_file_hashed(limit=...)`` stopped: the compressed output went over the limit."""


def compress_file_hashed(
    src: Path, dst: Path, *, level: int = 19, threads: int = 0, limit: int | None = None
) -> tuple[int, int, str]:
    """Like ``compress_file``; return (compressed size, input size, input SHA-256) from the same read.

    With ``limit``, ``OverLimit`` is raised (and ``dst`` never appears) as soon as more than
    ``limit`` compressed bytes have come out: the delta builder compresses a whole file only to
    compare it with a patch it already has, and a 4 GiB file at level 19 takes half an hour while
    a few MB of output settle the comparison.
    """
    cctx = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True, write_content_size=True)
    with open(src, "rb") as fin, atomic_write(dst) as fout:
        src_size = os.fstat(fin.fileno()).st_size
        counter = HashingWriter(fout)
        source = HashingWriter(None)
        # Not a ``with`` block: closing ends the frame, which zstd refuses (and reports instead of
        # our error) when fewer bytes than announced went in.
        writer = cctx.stream_writer(cast(IO[bytes], counter), size=src_size, closefd=False)
        while chunk := fin.read(CHUNK):
            source.write(chunk)
            writer.write(chunk)
            if limit is not None and counter.count > limit:
                raise OverLimit(f"{src}: compressed output passed {limit} bytes")
        if source.count != src_size:
            # The frame header promised src_size bytes; a file changing under us must not ship.
            raise IntegrityError(f"{src}: file changed size while it was being compressed")
        writer.close()
        if limit is not None and counter.count > limit:
            raise OverLimit(f"{src}: compressed output passed {limit} bytes")
    return counter.count, source.count, source.hexdigest()


def decompress_stream(src_fileobj: IO[bytes], dst_fileobj: IO[bytes] | None, *, max_output: int) -> int:
    """Decompress a whole zstd stream into ``dst_fileobj``; ArchiveError if corrupt, cut or over the cap."""
    reader = BoundedZstdReader(src_fileobj, max_output=max_output)
    total = 0
    while chunk := reader.read(CHUNK):
        if dst_fileobj is not None:
            dst_fileobj.write(chunk)
        total += len(chunk)
    return total


def decompress_file(
    src: Path,
    dst: Path,
    *,
    max_output: int,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
) -> int:
    """Decompress ``src`` into ``dst`` atomically, verifying size and SHA-256 when given; return the size."""
    cap = max_output if expected_size is None else min(max_output, expected_size)
    with open(src, "rb") as fin, atomic_write(dst) as fout:
        out = HashingWriter(fout)
        reader = BoundedZstdReader(fin, max_output=cap)
        try:
            while chunk := reader.read(CHUNK):
                out.write(chunk)
        except ArchiveError:
            if expected_size is not None and expected_size <= max_output and reader.count > cap:
                # Past a declared size it is a mismatch (the blob is wrong), not a cap on a bomb.
                raise IntegrityError(f"{dst.name}: decompressed data is larger than {expected_size} bytes") from None
            raise
        if expected_size is not None and out.count != expected_size:
            raise IntegrityError(f"{dst.name}: decompressed to {out.count} bytes, expected {expected_size}")
        if expected_sha256 is not None and out.hexdigest() != expected_sha256:
            raise IntegrityError(f"{dst.name}: SHA-256 mismatch after decompression")
    return out.count
