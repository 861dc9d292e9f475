"""The ``bsdiff-lzma`` engine: bsdiff's matching (``bsdiff4``), its three streams re-encoded and LZMA-compressed.

bsdiff extends each exact match into an approximate one and stores, for the covered bytes, the
byte-wise difference from the old file: where a rebuilt binary shifted its addresses, that stream
is mostly zeros with small regular deltas, which LZMA shrinks far better than HDiffPatch's
cover-and-RLE encoding. It wins where a file changed a little and moved a lot (a patch release of a
native library: pygame-ce's libSDL2 2.32.6 -> 2.32.10, 2.2 MB, is 52 KB here against hdiff-lzma's
70 KB and bsdiff's own 60 KB) and loses where much of the code is new (libharfbuzz 11 -> 12: 7%
larger than hdiff), so the delta builder tries it as one more candidate and keeps the smallest.
Against classic BSDIFF40 (three bzip2 streams, 8-byte sign-magnitude control integers) the
control tuples are LEB128 varints stored column by column (all adds, then all extras, then all
seeks, zigzag-signed), and each stream is raw LZMA with the literal context that measured best on
native code (lc=1 for the diff and extra bytes, lc=0 for the control); the extra bytes (new code)
also try x86 BCJ when the file looks like x86 code. bsdiff's suffix sort holds 16 bytes per old
byte, so the builder gives it files up to ``MAX_FILE_BYTES`` only.

Blob::

    0-1  magic "BX"
    2    flags: bit 0 = x86 BCJ before LZMA on the extra stream; bits 1-7 reserved, 0
    then LEB128 varints: new size, old size, number of control tuples, decoded control bytes,
         diff bytes, extra bytes, compressed control bytes, compressed diff bytes
    then the three raw LZMA1 streams (end-marked): control, diff, extra (the rest of the blob)

Decoding treats the blob as hostile: the declared sizes must agree with each other and with the
expected output (diff + extra bytes = new size) before anything is decompressed; each stream is
decoded bounded by its declared size, refused when short, long, truncated or followed by bytes;
every control tuple is checked (non-negative lengths, seeks within the files, sums matching the
streams) before ``bsdiff4``'s C apply runs; and, as with every engine, the result's size and
SHA-256 are checked before ``out`` is written.
"""

from __future__ import annotations

import lzma
from pathlib import Path
from typing import Any

import bsdiff4.core

from mistcore.engines import hdiff, hdiffx
from mistcore.errors import BasisMismatch, PatchError

NAME = "bsdiff-lzma"
MAGIC = b"BX"
_X86 = 0x01
# The builder's cap (bsdiff's suffix sort: 16 bytes of memory per old byte, O(n log n) time).
MAX_FILE_BYTES = 16 << 20
# In-memory limit of one apply, as for hdiff.
MAX_OUTPUT_BYTES = hdiff.MAX_OUTPUT_BYTES
_DICT_LOG_MAX = 26
_VARINT_MAX_BYTES = 10


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _zigzag(n: int) -> int:
    return n << 1 if n >= 0 else ((-n) << 1) - 1


def _unzigzag(n: int) -> int:
    return n >> 1 if not n & 1 else -((n + 1) >> 1)


class _Reader:
    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def uvarint(self, what: str) -> int:
        value = shift = 0
        for _ in range(_VARINT_MAX_BYTES):
            if self.pos >= len(self.data):
                raise PatchError(f"bsdiff-lzma blob is truncated ({what})")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise PatchError(f"bsdiff-lzma blob is corrupt ({what}: varint too long)")


def _filters(size: int, *, lc: int, x86: bool = False) -> list[dict[str, Any]]:
    log = max(12, min(_DICT_LOG_MAX, (max(size, 1) - 1).bit_length()))
    lzma1 = {"id": lzma.FILTER_LZMA1, "dict_size": 1 << log, "lc": lc, "lp": 0, "pb": 0}
    return ([{"id": lzma.FILTER_X86}] if x86 else []) + [lzma1]


def _compress(data: bytes, *, lc: int, x86: bool = False) -> bytes:
    filters = _filters(len(data), lc=lc, x86=x86)
    filters[-1]["preset"] = 9 | lzma.PRESET_EXTREME
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


def _decompress(blob: bytes | memoryview, size: int, *, lc: int, x86: bool, what: str) -> bytes:
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_filters(size, lc=lc, x86=x86))
    try:
        data = decoder.decompress(blob, max_length=size + 1)
    except (lzma.LZMAError, MemoryError) as exc:
        raise PatchError(f"bsdiff-lzma blob is corrupt ({what}: {exc})") from None
    if len(data) != size:
        raise PatchError(f"bsdiff-lzma blob is corrupt ({what}: {len(data)} bytes, {size} declared)")
    if not decoder.eof:
        raise PatchError(f"bsdiff-lzma blob is truncated ({what})")
    if decoder.unused_data:
        raise PatchError(f"bsdiff-lzma blob has trailing bytes after its {what}")
    return data


def control_limit(new_size: int) -> int:
    """The most control bytes a blob for a ``new_size``-byte file may declare (bsdiff emits a tuple per match
    of at least 8 bytes, 3 varints of at most 10 bytes each)."""
    return 4 * new_size + 4096


def encode(control: bytes, diff: bytes, extra: bytes, *, new_size: int, old_size: int, x86: bool = False) -> bytes:
    """A blob from ``bsdiff4.core.diff``'s output (24-byte sign-magnitude control tuples, diff and extra bytes)."""
    if len(control) % 24:
        raise PatchError("bsdiff control block is not a whole number of tuples")
    values = [bsdiff4.core.decode_int64(control[i : i + 8]) for i in range(0, len(control), 8)]
    tuples = [values[i : i + 3] for i in range(0, len(values), 3)]
    ctrl = b"".join(
        [b"".join(_uvarint(x) for x, _, _ in tuples), b"".join(_uvarint(y) for _, y, _ in tuples),
         b"".join(_uvarint(_zigzag(z)) for _, _, z in tuples)]
    )
    if len(ctrl) > control_limit(new_size) or len(diff) + len(extra) != new_size:
        raise PatchError("bsdiff output is over this engine's limits for the file")
    ctrl_c, diff_c = _compress(ctrl, lc=0), _compress(diff, lc=1)
    extra_c, flags = _compress(extra, lc=1), 0
    if x86:
        other = _compress(extra, lc=1, x86=True)
        if len(other) < len(extra_c):
            extra_c, flags = other, _X86
    sizes = (new_size, old_size, len(tuples), len(ctrl), len(diff), len(extra), len(ctrl_c), len(diff_c))
    head = MAGIC + bytes([flags]) + b"".join(_uvarint(n) for n in sizes)
    return head + ctrl_c + diff_c + extra_c


def read_header(patch: bytes | memoryview) -> tuple[int, int]:
    """Return (new_size, old_size) a blob declares; PatchError if it is not a bsdiff-lzma blob."""
    if len(patch) < 3 or bytes(patch[:2]) != MAGIC:
        raise PatchError("not a bsdiff-lzma blob")
    reader = _Reader(patch, 3)
    return reader.uvarint("new size"), reader.uvarint("old size")


def decode(patch: bytes | memoryview, *, expected_size: int, old_size: int) -> tuple[bytes, bytes, bytes]:
    """The checked (control, diff, extra) for ``bsdiff4.core.patch``; PatchError for anything inconsistent."""
    if len(patch) < 3 or bytes(patch[:2]) != MAGIC:
        raise PatchError("not a bsdiff-lzma blob")
    flags = patch[2]
    if flags & ~_X86:
        raise PatchError(f"bsdiff-lzma blob with unsupported flags {flags:#04x}")
    r = _Reader(patch, 3)
    new_size, declared_old = r.uvarint("new size"), r.uvarint("old size")
    count, ctrl_len, diff_len, extra_len = (r.uvarint(w) for w in ("tuples", "control", "diff", "extra"))
    ctrl_c_len, diff_c_len = r.uvarint("control stream"), r.uvarint("diff stream")
    if new_size != expected_size:
        raise PatchError(f"patch declares {new_size} output bytes, expected {expected_size}")
    if declared_old != old_size:
        raise BasisMismatch(f"patch expects a {declared_old}-byte basis, the basis has {old_size} bytes")
    if diff_len + extra_len != new_size or ctrl_len > control_limit(new_size) or 3 * count > ctrl_len:
        raise PatchError("bsdiff-lzma blob declares inconsistent sizes")
    start = r.pos
    if start + ctrl_c_len + diff_c_len > len(patch):
        raise PatchError("bsdiff-lzma blob is truncated")
    view = memoryview(patch)
    ctrl = _decompress(view[start : start + ctrl_c_len], ctrl_len, lc=0, x86=False, what="control")
    diff = _decompress(view[start + ctrl_c_len : start + ctrl_c_len + diff_c_len], diff_len, lc=1, x86=False,
                       what="diff")
    extra = _decompress(view[start + ctrl_c_len + diff_c_len :], extra_len, lc=1, x86=bool(flags & _X86),
                        what="extra")
    cr = _Reader(ctrl)
    xs = [cr.uvarint("control") for _ in range(count)]
    ys = [cr.uvarint("control") for _ in range(count)]
    zs = [_unzigzag(cr.uvarint("control")) for _ in range(count)]
    if cr.pos != len(ctrl):
        raise PatchError("bsdiff-lzma blob is corrupt (control: trailing bytes)")
    if sum(xs) != diff_len or sum(ys) != extra_len:
        raise PatchError("bsdiff-lzma blob is corrupt (control does not add up to its streams)")
    limit = old_size + new_size
    oldpos = 0
    parts = []
    for x, y, z in zip(xs, ys, zs, strict=True):
        oldpos += x + z
        if abs(z) > limit or abs(oldpos) > limit:
            raise PatchError("bsdiff-lzma blob is corrupt (control seeks outside the files)")
        parts.append(bsdiff4.core.encode_int64(x) + bsdiff4.core.encode_int64(y) + bsdiff4.core.encode_int64(z))
    return b"".join(parts), diff, extra


def diff_bytes(old: bytes, new: bytes, *, level: int = 19) -> bytes:
    """A bsdiff-lzma blob turning ``old`` into ``new``. ``level`` is for the engines' common API."""
    control, diff, extra = bsdiff4.core.diff(old, new)
    return encode(control, diff, extra, new_size=len(new), old_size=len(old), x86=hdiffx.looks_x86(new))


def apply_bytes(old: bytes, patch: bytes, *, expected_size: int) -> bytes:
    """Apply a blob in memory after every header and control check (the caller checks the SHA-256)."""
    if expected_size > MAX_OUTPUT_BYTES:
        raise PatchError(f"{expected_size} bytes is over the in-memory patch limit of {MAX_OUTPUT_BYTES}")
    control, diff, extra = decode(patch, expected_size=expected_size, old_size=len(old))
    try:
        result = bsdiff4.core.patch(old, expected_size, control, diff, extra)
    except (ValueError, TypeError, MemoryError) as exc:
        raise PatchError(f"bsdiff failed: {exc}") from None
    if len(result) != expected_size:
        raise PatchError(f"patch produced {len(result)} bytes, expected {expected_size}")
    return bytes(result)


def diff_file(*, old: Path, new: Path, out: Path, level: int = 19) -> int:
    """Write a bsdiff-lzma blob from ``old`` to ``new`` atomically; return its size."""
    return hdiff.write_diff(diff_bytes, old=old, new=new, out=out, level=level)


def apply_file(
    *,
    old: Path | None,
    patch: Path,
    out: Path,
    expected_size: int,
    expected_sha256: str,
    old_sha256: str | None = None,
    patch_sha256: str | None = None,
) -> None:
    """Apply a bsdiff-lzma blob; write ``out`` atomically only if the result has the expected size and SHA-256."""
    if old is None:
        raise PatchError("a bsdiff-lzma blob needs the old file")
    hdiff.apply_in_memory(
        old=old,
        patch=patch,
        out=out,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        old_sha256=old_sha256,
        patch_sha256=patch_sha256,
        max_patch_bytes=hdiffx.decoded_limit(expected_size),
        header=read_header,
        apply=apply_bytes,
    )


__all__ = ["MAGIC", "MAX_FILE_BYTES", "NAME", "apply_bytes", "apply_file", "decode", "diff_bytes", "diff_file",
           "encode", "read_header"]
