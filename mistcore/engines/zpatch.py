"""The ``zstd-patch`` engine: the new file zstd-compressed with the old file as a raw-content dictionary.

This is what ``zstd --patch-from=OLD`` does: matches may point anywhere into the old file, so an
update costs about what changed. Like the CLI, the old file is given to the compressor as a *prefix*
(``ZSTD_CCtx_refPrefix``: the old bytes sit in the window as if they came just before the new ones,
searched by the same match finder), not as a raw-content dictionary: python-zstandard offers only the
latter, whose separately indexed dictionary made blobs up to 1.4% larger than the CLI's on small files,
so compression goes through ``backports.zstd`` (the standard library's ``compression.zstd`` from
Python 3.14), the one binding that exposes prefixes. Decoding is the same either way (a raw-content
dictionary is a prefix to the decoder) and stays on python-zstandard. The blob is one zstd frame
(RFC 8878) with the content size, no
checksum (every apply checks the result's SHA-256, which is stronger) and without its 4-byte magic
number: small changed files are this engine's strength, and there 4 + 4 bytes per file are 0.6% of
an update (pygame-ce: 161 blobs averaging 300 bytes). Put back the magic and ``zstd -d --long=31
--patch-from=OLD`` decodes it. Compression uses the ``level`` table with long-distance matching and
a window covering old + new (``window_log``), single-threaded; level 22 is 0.1% smaller than 19.

Decoding treats the blob as hostile (see ``mistcore.zstdio``): the frame header is read first and
the blob refused unless it declares exactly ``expected_size`` bytes, no dictionary id and a window
no larger than this engine would have chosen for the two sizes (at most 2 GiB, zstd's limit); the
frame is then decoded through a bounded, truncation-checked stream reader (never the one-shot
``decompress()``, which allocates what the header says) straight into the atomic output file.
The old file is held in memory (as zstd needs its dictionary whole); the delta builder uses this
engine for files up to 4 MiB, where it is as good as ``zstd --patch-from`` (see ``mistcore.delta``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, cast

import zstandard
from backports import zstd as _zstd
from backports.zstd import CompressionParameter as _C

from mistcore.engines import hdiff
from mistcore.errors import ArchiveError, BasisMismatch, IntegrityError, PatchError
from mistcore.fsutil import CHUNK, HashingWriter, atomic_write, sha256_bytes
from mistcore.zstdio import BoundedZstdReader

NAME = "zstd-patch"
# In-memory limits of one apply (the same as hdiff's); the window can never exceed zstd's 2 GiB.
MAX_OUTPUT_BYTES = 4 << 30
MAX_BASIS_BYTES = 4 << 30
MAX_WINDOW_LOG = zstandard.WINDOWLOG_MAX
MAGIC = b"\x28\xb5\x2f\xfd"  # the zstd frame magic (0xFD2FB528 little-endian), left out of the blob
_HEADER_MAX = 14  # a frame header without its magic: descriptor, window, dictionary id, content size


class _Reframed:
    """Reads a blob as the zstd frame it was cut from: the magic number first, then the blob's bytes."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._f = fileobj
        self._head = MAGIC

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._f.read(n)
        if 0 <= n < len(self._head):
            data, self._head = self._head[:n], self._head[n:]
            return data
        data, self._head = self._head, b""
        return data + self._f.read(-1 if n < 0 else n - len(data))


def window_log(old_size: int, new_size: int) -> int:
    """The window (log2) a patch between files of these sizes uses: the old and new file together."""
    return max(zstandard.WINDOWLOG_MIN, min(MAX_WINDOW_LOG, (old_size + new_size).bit_length()))


def read_header(patch_head: bytes) -> tuple[int, int]:
    """Return (content_size, window_size) of the frame starting the blob; PatchError if it is not usable."""
    try:
        params = zstandard.get_frame_parameters(MAGIC + patch_head[:_HEADER_MAX])
    except zstandard.ZstdError as exc:
        raise PatchError(f"not a zstd-patch blob ({exc})") from None
    if params.content_size in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        raise PatchError("zstd-patch blob declares no output size")
    if params.dict_id != 0:
        raise PatchError("zstd-patch blob names a trained dictionary, not the old file")
    return int(params.content_size), int(params.window_size)


def _check_header(patch_head: bytes, *, old_size: int, expected_size: int) -> None:
    content_size, window_size = read_header(patch_head)
    if content_size != expected_size:
        raise PatchError(f"patch declares {content_size} output bytes, expected {expected_size}")
    limit = 1 << window_log(old_size, expected_size)
    if window_size > limit:
        raise PatchError(f"patch asks for a {window_size}-byte window, more than the {limit} bytes its files need")


def _dictionary(old: bytes) -> zstandard.ZstdCompressionDict:
    # RAWCONTENT: the old file is plain content to copy from, whatever its first bytes look like.
    return zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def _frame(old: bytes, new: bytes, level: int) -> bytes:
    options: dict[int, int] = {
        _C.compression_level: level,
        _C.window_log: window_log(len(old), len(new)),
        _C.enable_long_distance_matching: 1,
        _C.content_size_flag: 1,
        _C.checksum_flag: 0,
        _C.dict_id_flag: 0,
        _C.nb_workers: 0,
    }
    # The binding refuses content under 8 bytes (zstd would ignore it anyway): such a file is compressed alone.
    prefix = _zstd.ZstdDict(old, is_raw=True).as_prefix if len(old) >= 8 else None
    cctx = _zstd.ZstdCompressor(options=options, zstd_dict=prefix)
    cctx.set_pledged_input_size(len(new))
    frame = cctx.compress(new, _zstd.ZstdCompressor.FLUSH_FRAME)
    if not frame.startswith(MAGIC):
        raise PatchError("zstd wrote a frame without its magic number")
    return frame[len(MAGIC) :]


# Where the level-19 blob is over this share of the new file (mostly fresh bytes, few matches), level 17 is
# tried too: btultra2's first statistics pass (levels 19+) then encodes literals a little worse than btopt's
# (generated fresh data: 0.1-0.3% smaller at 17), and level 17 costs less than 19.
FRESH_SHARE = 0.25
# basis_ratio: a fast level, and at most this much of each file (a renamed pack of several GB is judged by its start).
PROBE_LEVEL = 3
PROBE_BYTES = 64 << 20


def basis_ratio(old: bytes, new: bytes, *, level: int = PROBE_LEVEL) -> float:
    """How much of ``new`` the old file explains, cheaply: the size of a fast zstd patch over the size of ``new``
    compressed alone at the same level (about 0.001 for a renamed copy, 1.0 for an unrelated file). A few ms per
    MB, against seconds for the real engines: the delta builder asks it before diffing against a basis it only
    guessed from a file name."""
    old, new = old[:PROBE_BYTES], new[:PROBE_BYTES]
    if not new:
        return 0.0
    alone = len(_frame(b"", new, level))
    return len(_frame(old, new, level)) / max(alone, 1)


def diff_bytes(old: bytes, new: bytes, *, level: int = 19) -> bytes:
    """``new`` compressed against ``old`` (``zstd --patch-from`` at ``level``): a zstd frame minus its magic."""
    blob = _frame(old, new, level)
    if level >= 19 and len(blob) > FRESH_SHARE * len(new):
        other = _frame(old, new, 17)
        if len(other) < len(blob):
            blob = other
    return blob


def _decompressor(old: bytes, expected_size: int) -> zstandard.ZstdDecompressor:
    # max_window_size is in bytes (the docstring says KiB): the decoder refuses a larger window itself.
    return zstandard.ZstdDecompressor(
        dict_data=_dictionary(old), max_window_size=1 << window_log(len(old), expected_size)
    )


def _decode(old: bytes, blob: IO[bytes], out: HashingWriter, *, expected_size: int) -> None:
    source = cast(IO[bytes], _Reframed(blob))
    reader = BoundedZstdReader(source, max_output=expected_size, decompressor=_decompressor(old, expected_size))
    try:
        while chunk := reader.read(CHUNK):
            out.write(chunk)
    except ArchiveError as exc:
        raise PatchError(f"zstd-patch blob is corrupt: {exc}") from None
    if out.count != expected_size:
        raise IntegrityError(f"patch produced {out.count} bytes, expected {expected_size}")


def apply_bytes(old: bytes, patch: bytes, *, expected_size: int) -> bytes:
    """Apply a patch in memory after checking its header; PatchError on a bad blob, IntegrityError on a bad size."""
    _check_header(patch, old_size=len(old), expected_size=expected_size)
    buf = io.BytesIO()
    _decode(old, io.BytesIO(patch), HashingWriter(buf), expected_size=expected_size)
    return buf.getvalue()


def diff_file(*, old: Path, new: Path, out: Path, level: int = 19) -> int:
    """Write a zstd-patch blob from ``old`` to ``new`` atomically; return its size."""
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
    """Apply a zstd-patch blob; write ``out`` atomically only if the result has the expected size and SHA-256."""
    if old is None:
        raise PatchError("a zstd-patch blob needs the old file")
    if expected_size > MAX_OUTPUT_BYTES:
        raise PatchError(f"{expected_size} bytes is over the in-memory patch limit of {MAX_OUTPUT_BYTES}")
    old_size = os.path.getsize(old)
    if old_size > MAX_BASIS_BYTES:
        raise PatchError(f"{old}: basis of {old_size} bytes is over the in-memory patch limit")
    with open(patch, "rb") as fin:
        head = fin.read(_HEADER_MAX)
        # The header first: a bomb or a patch for another file is refused before the basis is read.
        _check_header(head, old_size=old_size, expected_size=expected_size)
        if patch_sha256 is not None:
            digest = HashingWriter(None)
            digest.write(head)
            while chunk := fin.read(CHUNK):
                digest.write(chunk)
            if digest.hexdigest() != patch_sha256:
                raise IntegrityError(f"{patch}: patch file is corrupt (SHA-256 mismatch)")
        fin.seek(0)
        old_bytes = Path(old).read_bytes()
        if len(old_bytes) != old_size:
            raise IntegrityError(f"{old}: the basis file changed while it was being read")
        if old_sha256 is not None and sha256_bytes(old_bytes) != old_sha256:
            raise BasisMismatch(f"{old}: the basis file is not the expected version (SHA-256 mismatch)")
        with atomic_write(out) as fout:
            result = HashingWriter(fout, limit=expected_size)
            _decode(old_bytes, cast(IO[bytes], fin), result, expected_size=expected_size)
            if result.hexdigest() != expected_sha256:
                raise IntegrityError(f"{out}: patched result has the wrong SHA-256 (wrong basis or corrupt patch)")


__all__ = ["MAGIC", "NAME", "apply_bytes", "apply_file", "diff_bytes", "diff_file", "read_header", "window_log"]
