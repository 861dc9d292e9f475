"""The ``hdiff-lzma`` engine: an uncompressed HDiffPatch diff (``HDIFF13&``), compressed whole as raw LZMA.

HDiffPatch's own compressed format compresses each of its streams (covers, RLE control, RLE
codes, new bytes) on its own; one LZMA stream over the whole uncompressed diff shares one model
and one dictionary, and a literal context tuned for the sparse, byte-oriented diff (lc=1, lp=0,
pb=0) beats the defaults. On the pygame-ce 2.5.6 -> 2.5.7 update, of the 27 native libraries
where ``hdiff`` (zstd, or LZMA/LZMA2 per stream) beat zstd-patch, it beats hdiff on 25, by up to
5% (the update as a whole: 1.4% smaller, see ``mistcore.delta``). Settings compared on the
update's 25 changed same-path ELF files (182,584 bytes with the chosen ones): without the x86
BCJ filter +0.5% (so BCJ is tried, beside plain LZMA, when the new file looks like x86 code),
pb=1 +0.3%, liblzma's default lc=3 pb=2 +1.3%, LZMA2 instead of LZMA1 +11 bytes. Preset 9
extreme with the dictionary covering the diff: as small as plain preset 9 on native code, 12%
smaller on regular data such as offset tables; LZMA costs about half of hdiff's compression time.

Blob: a 4-byte header, then one raw LZMA stream (LZMA1 with its end marker, or LZMA2)::

    0-1  magic "HX"
    2    bits 0-4: log2 of the LZMA dictionary size (12..26); bit 5: LZMA2 (else LZMA1);
         bit 6: x86 BCJ filter before LZMA; bit 7: reserved, 0
    3    the LZMA properties byte, (pb * 5 + lp) * 9 + lc, as in .lzma files

Everything the decoder needs is in the header, and only a small whitelist is accepted (lc 0-3,
lp 0, pb 0-2, a dictionary no larger than the decoded diff may be, LZMA1 or LZMA2 with or
without x86 BCJ): the
header of a hostile blob cannot make liblzma allocate more than the output allows. Decoding is
bounded: the decoded diff may be at most ``decoded_limit(expected_size)`` (2 x the new file + 1
MiB; HDiffPatch's diff is about the new file's size when nothing matches, and the builder does
not use this engine for a diff over the limit), a blob decoding to more is refused as a
bomb, a truncated stream or trailing bytes as corrupt. The decoded diff must be an uncompressed
``HDIFF13&`` diff declaring the expected output size and the basis's size (``hdiff.read_header``)
before ``hdiffpatch.apply`` runs; as HDiffPatch silently produces wrong bytes from a wrong basis
or a corrupt diff, the result's size and SHA-256 are checked before ``out`` is written.
"""

from __future__ import annotations

import lzma
from pathlib import Path
from typing import Any, Literal

from mistcore.engines import hdiff
from mistcore.errors import PatchError

NAME = "hdiff-lzma"
MAGIC = b"HX"
HEADER_SIZE = 4
# In-memory limit of one apply, as for hdiff.
MAX_OUTPUT_BYTES = hdiff.MAX_OUTPUT_BYTES
MIN_DICT_LOG, MAX_DICT_LOG = 12, 26
# The literal context the builder uses (measured best on native-library diffs, see the docstring).
LC, LP, PB = 1, 0, 0
_ALLOWED_LC, _ALLOWED_LP, _ALLOWED_PB = frozenset(range(4)), frozenset({0}), frozenset(range(3))
_LZMA2, _X86, _RESERVED = 0x20, 0x40, 0x80
_UNCOMPRESSED = b"HDIFF13&\0"  # an HDIFF13 diff whose compressor name is empty


def decoded_limit(expected_size: int) -> int:
    """The most bytes a blob for an ``expected_size``-byte file may decode to."""
    return 2 * expected_size + (1 << 20)


def dict_log(data_size: int) -> int:
    """log2 of the dictionary covering ``data_size`` bytes (at least 4 KiB, at most 64 MiB)."""
    return max(MIN_DICT_LOG, min(MAX_DICT_LOG, (max(data_size, 1) - 1).bit_length()))


def looks_x86(data: bytes) -> bool:
    """Whether ``data`` starts like x86 or x86-64 machine code (ELF, PE or Mach-O), where BCJ may help."""
    if data[:4] == b"\x7fELF" and len(data) >= 20:
        byteorder: Literal["little", "big"] = "little" if data[5] == 1 else "big"
        return int.from_bytes(data[18:20], byteorder) in (3, 62)  # EM_386, EM_X86_64
    if data[:2] == b"MZ" and len(data) >= 64:
        pe = int.from_bytes(data[60:64], "little")
        return data[pe : pe + 4] == b"PE\0\0" and int.from_bytes(data[pe + 4 : pe + 6], "little") in (0x14C, 0x8664)
    if data[:4] in (b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe") and len(data) >= 8:  # Mach-O, little-endian
        return int.from_bytes(data[4:8], "little") in (7, 0x01000007)  # CPU_TYPE_X86(_64)
    return False


def looks_executable(data: bytes) -> bool:
    """Whether ``data`` starts like an executable or shared library for any CPU (ELF, PE, Mach-O)."""
    if data[:4] == b"\x7fELF":
        return True
    if data[:2] == b"MZ" and len(data) >= 64:
        pe = int.from_bytes(data[60:64], "little")
        return data[pe : pe + 4] == b"PE\0\0"
    return data[:4] in (b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")  # Mach-O, fat


def _filters(
    *, log: int, lzma2: bool, x86: bool, lc: int, lp: int, pb: int, preset: int | None
) -> list[dict[str, Any]]:
    options: dict[str, Any] = {"id": lzma.FILTER_LZMA2 if lzma2 else lzma.FILTER_LZMA1}
    if preset is not None:
        options["preset"] = preset
    options.update(dict_size=1 << log, lc=lc, lp=lp, pb=pb)
    return ([{"id": lzma.FILTER_X86}] if x86 else []) + [options]


def compress(
    raw_diff: bytes,
    *,
    x86: bool = False,
    lzma2: bool = False,
    lc: int = LC,
    lp: int = LP,
    pb: int = PB,
    preset: int = 9 | lzma.PRESET_EXTREME,
    log: int | None = None,
) -> bytes:
    """One blob of ``raw_diff`` with exactly these parameters (no checks: see ``encode``); the
    dictionary covers ``raw_diff`` unless ``log`` says otherwise."""
    log = dict_log(len(raw_diff)) if log is None else log
    header = MAGIC + bytes([log | (_LZMA2 if lzma2 else 0) | (_X86 if x86 else 0), (pb * 5 + lp) * 9 + lc])
    filters = _filters(log=log, lzma2=lzma2, x86=x86, lc=lc, lp=lp, pb=pb, preset=preset)
    return header + lzma.compress(raw_diff, format=lzma.FORMAT_RAW, filters=filters)


def encode(raw_diff: bytes, *, new_size: int, x86: bool = False) -> bytes:
    """The smallest blob of an uncompressed HDIFF13 diff: LZMA1, and LZMA1 after x86 BCJ when ``x86``.

    PatchError if ``raw_diff`` is not an uncompressed diff to ``new_size`` bytes, or decodes to
    more than ``decoded_limit(new_size)`` (the apply would refuse it).
    """
    if not raw_diff.startswith(_UNCOMPRESSED) or hdiff.read_header(raw_diff)[0] != new_size:
        raise PatchError(f"not an uncompressed HDIFF13 diff to {new_size} bytes")
    if len(raw_diff) > decoded_limit(new_size):
        raise PatchError(f"a {len(raw_diff)}-byte diff is over this engine's limit for a {new_size}-byte file")
    best = compress(raw_diff)
    if x86:
        other = compress(raw_diff, x86=True)
        if len(other) < len(best):
            best = other
    return best


def read_header(patch: bytes, *, expected_size: int) -> list[dict[str, Any]]:
    """The LZMA filter chain a blob declares; PatchError unless it is whitelisted for ``expected_size``."""
    if len(patch) < HEADER_SIZE or not patch.startswith(MAGIC):
        raise PatchError("not an hdiff-lzma blob")
    flags, props = patch[2], patch[3]
    log = flags & 0x1F
    lc, rest = props % 9, props // 9
    lp, pb = rest % 5, rest // 5
    if flags & _RESERVED or lc not in _ALLOWED_LC or lp not in _ALLOWED_LP or pb not in _ALLOWED_PB:
        raise PatchError(f"hdiff-lzma blob with unsupported parameters (flags {flags:#04x}, properties {props:#04x})")
    if not MIN_DICT_LOG <= log <= min(MAX_DICT_LOG, dict_log(decoded_limit(expected_size))):
        raise PatchError(f"hdiff-lzma blob asks for a 2^{log}-byte dictionary, more than its output needs")
    return _filters(log=log, lzma2=bool(flags & _LZMA2), x86=bool(flags & _X86), lc=lc, lp=lp, pb=pb, preset=None)


def decode(patch: bytes, *, expected_size: int) -> bytes:
    """The uncompressed HDIFF13 diff in a blob, decoded within ``decoded_limit(expected_size)`` bytes.

    PatchError for a bad header, a bomb, a truncated or corrupt stream, trailing bytes, or a diff
    that is not an uncompressed HDIFF13 diff declaring ``expected_size`` output bytes.
    """
    if expected_size > MAX_OUTPUT_BYTES:
        raise PatchError(f"{expected_size} bytes is over the in-memory patch limit of {MAX_OUTPUT_BYTES}")
    filters = read_header(patch, expected_size=expected_size)
    limit = decoded_limit(expected_size)
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
    try:
        raw = decoder.decompress(memoryview(patch)[HEADER_SIZE:], max_length=limit + 1)
    except (lzma.LZMAError, MemoryError) as exc:
        raise PatchError(f"hdiff-lzma blob is corrupt: {exc}") from None
    if len(raw) > limit:
        raise PatchError(f"hdiff-lzma blob decodes to more than {limit} bytes (a bomb, or not for this file)")
    if not decoder.eof:
        raise PatchError("hdiff-lzma blob is truncated")
    if decoder.unused_data:
        raise PatchError("hdiff-lzma blob has trailing bytes")
    if not raw.startswith(_UNCOMPRESSED):
        raise PatchError("hdiff-lzma blob does not hold an uncompressed HDIFF13 diff")
    new_size, _ = hdiff.read_header(raw)
    if new_size != expected_size:
        raise PatchError(f"patch declares {new_size} output bytes, expected {expected_size}")
    return raw


def diff_bytes(old: bytes, new: bytes, *, level: int = 19) -> bytes:
    """An hdiff-lzma blob turning ``old`` into ``new``; PatchError if the diff is over the decoding limit.

    ``level`` is there for the engines' common API: the LZMA settings do not depend on it.
    """
    return encode(hdiff.uncompressed_diff(old, new), new_size=len(new), x86=looks_x86(new))


def apply_bytes(old: bytes, patch: bytes, *, expected_size: int) -> bytes:
    """Apply a blob in memory after the header, size and basis-size checks (the caller checks the SHA-256)."""
    return hdiff.apply_bytes(old, decode(patch, expected_size=expected_size), expected_size=expected_size)


def diff_file(*, old: Path, new: Path, out: Path, level: int = 19) -> int:
    """Write an hdiff-lzma blob from ``old`` to ``new`` atomically; return its size."""
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
    """Apply an hdiff-lzma blob; write ``out`` atomically only if the result has the expected size and SHA-256."""
    if old is None:
        raise PatchError("an hdiff-lzma blob needs the old file")
    # The builder's blobs are LZMA output of a diff under the decoding limit (incompressible data
    # grows by a fraction of a percent): a bigger file is refused before it is read into memory.
    hdiff.apply_in_memory(
        old=old,
        patch=patch,
        out=out,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        old_sha256=old_sha256,
        patch_sha256=patch_sha256,
        max_patch_bytes=decoded_limit(expected_size),
        decode=lambda blob: decode(blob, expected_size=expected_size),
    )


__all__ = [
    "MAGIC",
    "NAME",
    "apply_bytes",
    "apply_file",
    "compress",
    "decode",
    "decoded_limit",
    "diff_bytes",
    "diff_file",
    "encode",
    "looks_executable",
    "looks_x86",
    "read_header",
]
