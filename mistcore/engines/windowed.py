"""The ``hdiff-window`` engine: HDiffPatch in fixed windows, for files too big to diff in memory.

The new file is cut into windows of ``window`` bytes. Window ``i`` (new bytes
``[i*W, i*W + W)``) is diffed with HDiffPatch against a range of the old file 2 x W long: the
same offset widened by half a window on each side, ``[i*W - W/2, i*W + 1.5*W)``, shifted by the
window's *drift* and clipped to the old file. Without the drift, data moved by more than half a
window (a big insertion or deletion earlier in the file) would fall outside every old range and
be sent almost whole. The drift is found in bounded memory at C speed with librsync: the old
file's signature (one small block hash per ``block_len`` bytes) and a delta of the new file
against it give COPY commands (new offset -> old offset); each window takes the shift whose old
range covers the most of its matched bytes (the previous window's when it has no match). A
wrong drift only costs patch size, never correctness: the old range used is recorded per window.
``align=False`` gives the plain same-offset behaviour.
Memory stays near 10 x ``window`` whatever the file size (diff: 2W old + W new + HDiffPatch's
suffix array, plus the signature, ~12 bytes per old block; apply: one old range, one patch,
one result).

Patch container (all integers unsigned big-endian)::

    b"MISTWIN1"  u64 window  u64 old_size  u64 new_size  u32 window_count
    window_count times:  u64 old_offset  u64 old_len  u64 new_len  u64 patch_len  <patch_len bytes>

Each window patch is an ``hdiff`` engine blob (HDIFF13 zstd or lzma2). A window whose new bytes
are exactly the old bytes at ``old_offset`` (most windows of a big pack with a few edits, once the
drift follows the insertions) is a *copy window*: ``patch_len`` 0 and ``old_len == new_len``; it
costs 32 bytes and no HDiffPatch run (a 64 MiB window takes ~10 s and ~700 MB to diff). Nothing may
follow the last window.

Measured (``test_engines.py::test_windowed_vs_plain_hdiff_size`` data: 4 MiB of structured
random data with 48,000 bytes inserted at 1 MiB, 200,000 deleted at 3 MiB, plus small edits;
patch sizes in bytes; zstd -19 of the whole new file is 2,062,077):

    plain hdiff (whole file in memory)   50,505
    windowed 64 KiB,  same offset       724,958   (shifts > 32 KiB lose their match)
    windowed 64 KiB,  with drift         61,134
    windowed 256 KiB, same offset        82,228
    windowed 256 KiB, with drift         51,613
    windowed 1 MiB,   with drift         50,779
"""

from __future__ import annotations

import bisect
import hashlib
import io
import os
import struct
from pathlib import Path
from typing import BinaryIO

import pyrsync

from mistcore.engines.hdiff import apply_bytes, diff_bytes
from mistcore.errors import BasisMismatch, IntegrityError, PatchError
from mistcore.fsutil import atomic_write, sha256_file

NAME = "hdiff-window"
MAGIC = b"MISTWIN1"
DEFAULT_WINDOW = 64 << 20
MIN_WINDOW = 4 << 10
MAX_WINDOW = 1 << 30
_HEADER = struct.Struct(">QQQI")
_WINDOW = struct.Struct(">QQQQ")


def _old_range(index: int, window: int, old_size: int, drift: int = 0) -> tuple[int, int]:
    start = index * window + drift
    lo = min(max(0, start - window // 2), old_size)
    hi = max(min(old_size, start + window + window // 2), lo)
    return lo, hi - lo


class _CopyMap:
    """Parses a librsync delta as it is written, keeping only its COPY commands as (new_pos, length, drift)."""

    def __init__(self) -> None:
        self.copies: list[tuple[int, int, int]] = []
        self._buf = bytearray()
        self._skip = 0
        self._new_pos = 0
        self._magic_seen = False
        self._ended = False

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view and not self._ended:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            self._buf += view[:1]
            view = view[1:]
            self._parse()
        return len(data)

    def _parse(self) -> None:
        buf = self._buf
        if not self._magic_seen:
            if len(buf) == 4:
                if struct.unpack(">I", buf)[0] != pyrsync.RS_DELTA_MAGIC:
                    raise PatchError("librsync produced an unexpected delta")
                self._magic_seen = True
                buf.clear()
            return
        op = buf[0]
        if op == 0:
            self._ended = True
        elif op <= 0x40:  # literal of op bytes
            self._literal(op)
        elif op <= 0x44:  # literal, length in 1/2/4/8 bytes
            width = 1 << (op - 0x41)
            if len(buf) == 1 + width:
                self._literal(int.from_bytes(buf[1:], "big"))
        elif op <= 0x54:  # copy: offset in 1/2/4/8 bytes, then length in 1/2/4/8 bytes
            k = op - 0x45
            ow, lw = 1 << (k // 4), 1 << (k % 4)
            if len(buf) == 1 + ow + lw:
                offset = int.from_bytes(buf[1 : 1 + ow], "big")
                length = int.from_bytes(buf[1 + ow :], "big")
                self.copies.append((self._new_pos, length, offset - self._new_pos))
                self._new_pos += length
                buf.clear()
        else:
            raise PatchError(f"librsync produced an unknown delta command {op:#x}")

    def _literal(self, length: int) -> None:
        self._new_pos += length
        self._skip = length
        self._buf.clear()

    def read(self, n: int = -1) -> bytes:  # pyrsync checks that the object looks like a file
        raise OSError("write-only")

    def seek(self, pos: int, whence: int = 0) -> int:
        return 0


def _best_drift(weight: dict[int, int], window: int, previous: int) -> int:
    """The shift whose old range (W/2 of slack each way) covers the most matched bytes of the window."""
    half = window // 2
    # A shuffled file can give thousands of distinct shifts; the heaviest few decide.
    weight = dict(sorted(weight.items(), key=lambda kv: -kv[1])[:64])
    dominant = max(weight.items(), key=lambda kv: (kv[1], -abs(kv[0])))[0]
    candidates = {0, previous, *weight, *(d - half for d in weight), *(d + half for d in weight)}

    def score(d: int) -> tuple[int, int]:
        return sum(w for drift, w in weight.items() if abs(drift - d) <= half), -abs(d - dominant)

    return max(candidates, key=score)


def _window_drifts(old: Path, new: Path, *, window: int, count: int) -> list[int]:
    """Per window, the old-minus-new offset shift covering most of its bytes (see module docstring)."""
    old_size = os.path.getsize(old)
    if old_size == 0 or count == 0:
        return [0] * count
    _, block_len, _ = pyrsync.get_signature_args(old_size, pyrsync.RS_RK_BLAKE2_SIG_MAGIC, 0, 0)
    block_len = max(256, min(block_len, window // 8))
    sig = io.BytesIO()
    with open(old, "rb") as f:
        # 8-byte strong sums: plenty for alignment hints, and a false match only costs patch size.
        pyrsync.signature(f, sig, 8, pyrsync.RS_RK_BLAKE2_SIG_MAGIC, block_len)
    sig.seek(0)
    copies = _CopyMap()
    with open(new, "rb") as f:
        pyrsync.delta(f, sig, copies)
    del sig
    starts = [c[0] for c in copies.copies]
    drifts: list[int] = []
    previous = 0
    for i in range(count):
        lo, hi = i * window, (i + 1) * window
        weight: dict[int, int] = {}
        j = max(0, bisect.bisect_right(starts, lo) - 1)
        while j < len(starts) and starts[j] < hi:
            start, length, drift = copies.copies[j]
            overlap = min(hi, start + length) - max(lo, start)
            if overlap > 0:
                weight[drift] = weight.get(drift, 0) + overlap
            j += 1
        if weight:
            previous = _best_drift(weight, window, previous)
        drifts.append(previous)
    return drifts


def _read_at(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise IntegrityError(f"basis file ended early (wanted {length} bytes at offset {offset})")
    return data


def _copy_source(fold: BinaryIO, old_size: int, offset: int, new_bytes: bytes) -> int | None:
    """``offset`` when the old file holds exactly ``new_bytes`` there (a copy window), else None."""
    if not new_bytes or offset < 0 or offset + len(new_bytes) > old_size:
        return None
    fold.seek(offset)
    return offset if fold.read(len(new_bytes)) == new_bytes else None


def diff_file(
    *, old: Path, new: Path, out: Path, window: int = DEFAULT_WINDOW, level: int = 19, align: bool = True
) -> int:
    """Write a windowed patch from ``old`` to ``new`` atomically, in bounded memory; return its size."""
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        raise ValueError(f"window must be between {MIN_WINDOW} and {MAX_WINDOW} bytes")
    old_size, new_size = os.path.getsize(old), os.path.getsize(new)
    count = -(-new_size // window)
    drifts = _window_drifts(Path(old), Path(new), window=window, count=count) if align else [0] * count
    total = 0
    with open(old, "rb") as fold, open(new, "rb") as fnew, atomic_write(out) as fout:
        header = MAGIC + _HEADER.pack(window, old_size, new_size, count)
        fout.write(header)
        total += len(header)
        for i in range(count):
            new_bytes = fnew.read(window)
            same = _copy_source(fold, old_size, i * window + drifts[i], new_bytes)
            if same is not None:
                record = _WINDOW.pack(same, len(new_bytes), len(new_bytes), 0)
                fout.write(record)
                total += len(record)
                continue
            lo, length = _old_range(i, window, old_size, drifts[i])
            patch = diff_bytes(_read_at(fold, lo, length), new_bytes, level=level)
            record = _WINDOW.pack(lo, length, len(new_bytes), len(patch))
            fout.write(record)
            fout.write(patch)
            total += len(record) + len(patch)
            del new_bytes, patch
        if fnew.read(1):
            raise IntegrityError(f"{new}: file grew while it was being diffed")
    return total


def apply_file(
    *,
    old: Path,
    patch: Path,
    out: Path,
    expected_size: int,
    expected_sha256: str,
    old_sha256: str | None = None,
    patch_sha256: str | None = None,
) -> None:
    """Apply a windowed patch window by window; write ``out`` atomically only if size and SHA-256 match."""
    if old_sha256 is not None and sha256_file(old) != old_sha256:
        raise BasisMismatch(f"{old}: the basis file is not the expected version (SHA-256 mismatch)")
    if patch_sha256 is not None and sha256_file(patch) != patch_sha256:
        raise IntegrityError(f"{patch}: patch file is corrupt (SHA-256 mismatch)")
    actual_old_size = os.path.getsize(old)
    with open(patch, "rb") as fp, open(old, "rb") as fold, atomic_write(out) as fout:
        head = fp.read(len(MAGIC) + _HEADER.size)
        if len(head) != len(MAGIC) + _HEADER.size or not head.startswith(MAGIC):
            raise PatchError(f"{patch}: not a {NAME} patch (bad magic)")
        window, old_size, new_size, count = _HEADER.unpack(head[len(MAGIC) :])
        if not MIN_WINDOW <= window <= MAX_WINDOW:
            raise PatchError(f"{patch}: window size {window} out of range")
        if new_size != expected_size:
            raise PatchError(f"{patch}: patch declares {new_size} output bytes, expected {expected_size}")
        if old_size != actual_old_size:
            raise BasisMismatch(f"{old}: basis has {actual_old_size} bytes, the patch expects {old_size}")
        if count != -(-new_size // window):
            raise PatchError(f"{patch}: {count} windows cannot make {new_size} bytes")
        digest = hashlib.sha256()
        written = 0
        for i in range(count):
            record = fp.read(_WINDOW.size)
            if len(record) != _WINDOW.size:
                raise PatchError(f"{patch}: truncated at window {i}")
            old_offset, old_len, new_len, patch_len = _WINDOW.unpack(record)
            if new_len != min(window, new_size - written):
                raise PatchError(f"{patch}: window {i} has a wrong length")
            if old_len > 2 * window or old_offset + old_len > old_size:
                raise PatchError(f"{patch}: window {i} reads outside the basis")
            if patch_len > 2 * window + (1 << 20):
                raise PatchError(f"{patch}: window {i} patch is implausibly large")
            patch_bytes = fp.read(patch_len)
            if len(patch_bytes) != patch_len:
                raise PatchError(f"{patch}: truncated in window {i}")
            if patch_len == 0:  # a copy window
                if old_len != new_len:
                    raise PatchError(f"{patch}: copy window {i} has a wrong length")
                result = _read_at(fold, old_offset, old_len)
            else:
                result = apply_bytes(_read_at(fold, old_offset, old_len), patch_bytes, expected_size=new_len)
            digest.update(result)
            fout.write(result)
            written += len(result)
            del result, patch_bytes
        if fp.read(1):
            raise PatchError(f"{patch}: unexpected data after the last window")
        if written != expected_size:
            raise IntegrityError(f"{out}: patched result has {written} bytes, expected {expected_size}")
        if digest.hexdigest() != expected_sha256:
            raise IntegrityError(f"{out}: patched result has the wrong SHA-256 (wrong basis or corrupt patch)")
