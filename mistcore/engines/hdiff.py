"""The ``hdiff`` engine: one HDiffPatch compressed diff (``HDIFF13&zstd``) per file, in memory.

Blob format: what ``hdiffpatch.diff(old, new, compression=ZStdConfig(level))`` returns, or the same
diff recompressed with lzma2 when that is smaller (``hdiffpatch.recompress``: lzma2 measured
5% smaller on real native-library updates); ``hdiffpatch.apply`` reads the compressor from the header,
so blobs recompressed with lzma (LZMA1) by earlier builders still apply. LZMA1 is no longer tried: it
only saves LZMA2's chunk headers (6 bytes per 64 KB of output: 9-40 bytes on each of pygame-ce's
native libraries, 0.02% of their hdiff patches; LZMA2 wins outright on fresh data, which it stores
raw) and cost a third of the compression time. The builder makes the uncompressed diff once (``uncompressed_diff``)
and compresses it here (``compress_diff``: the same bytes as a zstd ``diff``, in the same time)
and for the ``hdiff-lzma`` engine (``engines/hdiffx.py``).
Its header starts ``HDIFF13&<compressor>\\0`` followed by the new and old sizes as HDiffPatch
packed integers (7 bits per byte, most significant first, high bit = more bytes follow);
``read_header`` parses them so a patch declaring the wrong sizes is refused before HDiffPatch
allocates its output.

HDiffPatch needs both files in memory (diff peaks near new + 5 x old) and silently produces
wrong bytes from a wrong basis or a corrupt patch, so: only files under the configured limit
use this engine (bigger ones use ``hdiff-window``), and applying checks the basis hash when
known, the declared sizes, then the result's size and SHA-256 before anything is written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import hdiffpatch

from mistcore.errors import BasisMismatch, IntegrityError, PatchError
from mistcore.fsutil import atomic_write, sha256_bytes

NAME = "hdiff"
# A sane cap on the output of one in-memory apply; the delta builder keeps hdiff files far below.
MAX_OUTPUT_BYTES = 4 << 30
_MAGIC = b"HDIFF13&"


def read_header(patch: bytes) -> tuple[int, int]:
    """Return (new_size, old_size) declared by an HDIFF13 patch; PatchError if it is not one."""
    if not patch.startswith(_MAGIC):
        raise PatchError("not an HDiffPatch HDIFF13 patch")
    end = patch.find(b"\0", len(_MAGIC), len(_MAGIC) + 33)
    if end < 0:
        raise PatchError("corrupt HDiffPatch header (compressor name)")
    pos = end + 1
    sizes = []
    for _ in range(2):
        value = 0
        for _ in range(10):
            if pos >= len(patch):
                raise PatchError("corrupt HDiffPatch header (truncated)")
            byte = patch[pos]
            pos += 1
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        else:
            raise PatchError("corrupt HDiffPatch header (size field too long)")
        sizes.append(value)
    return sizes[0], sizes[1]


def uncompressed_diff(old: bytes, new: bytes, *, match_cache: bool = False) -> bytes:
    """HDiffPatch's uncompressed diff (``HDIFF13&\\0``) from ``old`` to ``new``: what ``compress_diff``
    and the ``hdiff-lzma`` engine compress, so one diff serves both.

    ``match_cache``: HDiffPatch's bloom filter over ``old`` (under a byte per byte of it) rejects candidate
    matches before the suffix-array search. The diff is byte for byte the same; it is faster where much of
    ``new`` is new (2.1 -> 0.8 s on a 10 MB pack of fresh data; a whole update 10-18% faster on generated
    games, the same on pygame-ce) and slower where nearly everything matches (a 64 MiB window of a big pack:
    6.2 -> 8.0 s), so the delta builder asks for it on whole changed files (up to its ``hdiff_max_bytes``, where
    it adds at most one byte per old byte to the ~6x the diff already holds), not the windowed engine's."""
    # validate=False: every apply verifies the result's SHA-256, which is the check that matters.
    return hdiffpatch.diff(old, new, compression=None, validate=False, big_cache_match=match_cache)


def compressions(raw_diff: bytes, *, new_size: int, level: int = 19) -> list[Callable[[], bytes | None]]:
    """The ways ``compress_diff`` compresses a diff, each a call returning an hdiff patch (None where that
    compressor refuses the diff): zstd, and at level 19 and up lzma2. Independent of each other (the
    delta builder may run them at once: hdiffpatch releases the GIL); the smallest result is the patch."""

    def zstd() -> bytes:
        return hdiffpatch.recompress(raw_diff, hdiffpatch.ZStdConfig(level=level))

    # The lzma window only needs to cover the patch stream (no longer than the diff, nor than the new file),
    # never more than 64 MiB: the encoder's memory (~11 bytes per byte of window) follows the diff, not the file.
    window = max(16, min(26, (min(new_size, len(raw_diff)) - 1).bit_length()))

    def lzma2() -> bytes | None:
        try:
            return hdiffpatch.recompress(raw_diff, hdiffpatch.Lzma2Config(level=9, window=window))
        except (hdiffpatch.HDiffPatchError, ValueError, MemoryError):
            return None

    return [zstd, lzma2] if level >= 19 else [zstd]


def smallest(patches: Iterable[bytes | None]) -> bytes:
    """The first of the smallest patches (zstd first, so a tie keeps zstd)."""
    found = [p for p in patches if p is not None]
    if not found:
        raise PatchError("no compressor accepted the diff")
    return min(found, key=len)


def compress_diff(raw_diff: bytes, *, new_size: int, level: int = 19) -> bytes:
    """An hdiff patch from an uncompressed diff: zstd, or lzma2 where that is smaller.

    Byte for byte what ``hdiffpatch.diff(old, new, compression=ZStdConfig(level))`` returns, for
    the same time (the diff is made once, compressing it is a small part of the work).
    """
    return smallest(call() for call in compressions(raw_diff, new_size=new_size, level=level))


def diff_bytes(old: bytes, new: bytes, *, level: int = 19) -> bytes:
    """An HDIFF13 patch turning ``old`` into ``new``: zstd, or lzma2 where that is smaller."""
    return compress_diff(uncompressed_diff(old, new), new_size=len(new), level=level)


def apply_bytes(old: bytes, patch: bytes, *, expected_size: int) -> bytes:
    """Apply a patch in memory after checking its declared sizes; PatchError on any engine failure."""
    new_size, old_size = read_header(patch)
    if new_size != expected_size:
        raise PatchError(f"patch declares {new_size} output bytes, expected {expected_size}")
    if old_size != len(old):
        raise IntegrityError(f"patch expects a {old_size}-byte basis, the basis has {len(old)} bytes")
    try:
        result = hdiffpatch.apply(old, patch)
    except (hdiffpatch.HDiffPatchError, MemoryError, ValueError) as exc:
        raise PatchError(f"HDiffPatch failed: {exc}") from None
    if len(result) != expected_size:
        raise IntegrityError(f"patch produced {len(result)} bytes, expected {expected_size}")
    return result


def write_diff(diff: Callable[..., bytes], *, old: Path, new: Path, out: Path, level: int) -> int:
    """``diff(old_bytes, new_bytes, level=level)`` written to ``out`` atomically; return its size.

    The ``diff_file`` of every in-memory engine (hdiff, hdiff-lzma, zstd-patch).
    """
    patch = diff(Path(old).read_bytes(), Path(new).read_bytes(), level=level)
    with atomic_write(out) as f:
        f.write(patch)
    return len(patch)


def diff_file(*, old: Path, new: Path, out: Path, level: int = 19) -> int:
    """Write a zstd-compressed HDiffPatch patch from ``old`` to ``new`` atomically; return its size."""
    return write_diff(diff_bytes, old=old, new=new, out=out, level=level)


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
    """Apply an hdiff patch; write ``out`` atomically only if the result has the expected size and SHA-256."""
    apply_in_memory(
        old=old,
        patch=patch,
        out=out,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        old_sha256=old_sha256,
        patch_sha256=patch_sha256,
        max_patch_bytes=MAX_OUTPUT_BYTES,
    )


def apply_in_memory(
    *,
    old: Path,
    patch: Path,
    out: Path,
    expected_size: int,
    expected_sha256: str,
    old_sha256: str | None,
    patch_sha256: str | None,
    max_patch_bytes: int,
    decode: Callable[[bytes], bytes] | None = None,
    header: Callable[[bytes], tuple[int, int]] = read_header,
    apply: Callable[..., bytes] = apply_bytes,
) -> None:
    """The checked in-memory apply of a patch, for ``hdiff``, ``hdiff-lzma`` and ``bsdiff-lzma``.

    ``decode`` turns the blob into the HDIFF13 patch (hdiff-lzma's bounded LZMA decoding); ``header``
    reads the (new size, old size) the patch declares and ``apply(old, patch, expected_size=)`` applies
    it (HDiffPatch's unless given). The declared basis size is checked before the basis is read, the
    basis SHA-256 when known, and ``out`` is written only if the result has the expected size and SHA-256.
    """
    if expected_size > MAX_OUTPUT_BYTES:
        raise PatchError(f"{expected_size} bytes is over the in-memory patch limit of {MAX_OUTPUT_BYTES}")
    if os.path.getsize(patch) > max_patch_bytes:
        raise PatchError(f"{patch}: patch file is implausibly large")
    patch_bytes = Path(patch).read_bytes()
    if patch_sha256 is not None and sha256_bytes(patch_bytes) != patch_sha256:
        raise IntegrityError(f"{patch}: patch file is corrupt (SHA-256 mismatch)")
    if decode is not None:
        patch_bytes = decode(patch_bytes)
    # Sizes from the header first: a wrong (or huge) basis is refused before it is read into memory.
    _, old_size = header(patch_bytes)
    if os.path.getsize(old) != old_size:
        raise BasisMismatch(f"{old}: patch expects a {old_size}-byte basis, the basis is not the expected version")
    old_bytes = Path(old).read_bytes()
    if old_sha256 is not None and sha256_bytes(old_bytes) != old_sha256:
        raise BasisMismatch(f"{old}: the basis file is not the expected version (SHA-256 mismatch)")
    result = apply(old_bytes, patch_bytes, expected_size=expected_size)
    if len(result) != expected_size:
        raise IntegrityError(f"patch produced {len(result)} bytes, expected {expected_size}")
    del patch_bytes, old_bytes
    if hashlib.sha256(result).hexdigest() != expected_sha256:
        raise IntegrityError(f"{out}: patched result has the wrong SHA-256 (wrong basis or corrupt patch)")
    with atomic_write(out) as f:
        f.write(result)


__all__ = [
    "NAME",
    "apply_bytes",
    "apply_file",
    "apply_in_memory",
    "compress_diff",
    "diff_bytes",
    "diff_file",
    "write_diff",
    "read_header",
    "uncompressed_diff",
]
