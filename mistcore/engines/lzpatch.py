"""The ``lzma-patch`` engine: raw LZMA2 with the old file as its dictionary, over the new file or over a diff.

This is ``zstd --patch-from`` with LZMA's coder: the old file sits in the dictionary as if it came
just before the payload, so any match may point into it. LZMA's repeat distances and its
"literal after a match" coding (the byte the match would have continued with is the context of the
literal that breaks it) make the small, regular differences of recompiled code cheap, which zstd's
coder cannot; and the payload may be HDiffPatch's uncompressed diff instead of the new file, where
the covers already carry the long matches and the dictionary finds the short ones in the diff's
new bytes that HDiffPatch leaves as literals. Measured on the pygame-ce 2.5.6 -> 2.5.7 update (its
native libraries each one upstream release newer): the new file wins on the libraries with the most
new code (libharfbuzz 11.3 -> 12.1: 360,372 bytes against hdiff's 382,345 and zstd --patch-from's
391,642), the diff on those that changed less (libtiff 36,051 against hdiff-lzma's 37,517); the
update's blobs went from 1,442,760 to 1,371,177 bytes (28 files now lzma-patch).

Blob::

    0-1  magic "LP"
    2    bits 0-4: log2 of the LZMA dictionary (12..26), which covers the old file and the payload;
         bit 5: the payload is an uncompressed HDIFF13 diff (else it is the new file itself);
         bit 6: x86 BCJ; bit 7: reserved, 0
    3    the LZMA properties byte, (pb * 5 + lp) * 9 + lc, as in .lzma files
    then LEB128 varints: the new file's size, the old file's size, the payload's size
    then the LZMA2 chunks of the payload, ending with LZMA2's end marker

Decoding needs nothing but the standard library's ``lzma`` (so every patcher has it): the old file
is fed to an LZMA2 decoder first as *uncompressed* LZMA2 chunks (64 KiB each, the first one
resetting the dictionary), which fills the dictionary exactly as the encoder's preset dictionary
did, then the blob's chunks, whose output after the old file is the payload. With x86 BCJ both
sides use the old file as the BCJ filter turns it (``x86_encoded``), and the filter runs over the
whole stream, old file first. The standard library cannot give an encoder a preset dictionary, so
encoding (the server's worker only) calls the same system liblzma through ``ctypes``
(``available()`` says whether it could be loaded; without it the delta builder uses ``hdiff-lzma``).

Decoding treats the blob as hostile: only whitelisted parameters are accepted (lc 0-4, lp 0, pb
0-2, a dictionary no larger than the old file plus the payload need, at most 64 MiB); the payload
must be the new file's size (or, for a diff, at most ``hdiffx.decoded_limit`` of it); the old file must
have the declared size before it is read; the decoder stops one byte past the declared payload, so
a bomb is refused, and a truncated stream or trailing bytes are corrupt. A diff payload is then
applied by HDiffPatch after its own header checks. LZMA, like HDiffPatch, happily decodes a corrupt
blob or a wrong basis into wrong bytes, so as with every engine the result's size and SHA-256 are
checked before ``out`` is written.

The encoder holds about 11 bytes per byte of dictionary (bt4 match finder): the delta builder uses
this engine only where the old file and the payload together fit ``MAX_BUILD_BYTES`` (32 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import lzma
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mistcore.engines import hdiff, hdiffx
from mistcore.errors import BasisMismatch, PatchError

T = TypeVar("T")
Runner = Callable[[list[Callable[[], Any]]], list[Any]]

NAME = "lzma-patch"
MAGIC = b"LP"
MIN_DICT_LOG, MAX_DICT_LOG = 12, 26
# The old file and the payload together: the most a blob may need in the dictionary.
MAX_DICT_BYTES = 1 << MAX_DICT_LOG
# What the delta builder gives this engine (old file + payload): two encoders at once stay under 800 MB.
MAX_BUILD_BYTES = 32 << 20
# liblzma presets: over the new file 6 (as small as 9 extreme within 0.1% on native code, in half the time); over
# a diff 9 extreme (12% smaller than 6 on regular data such as a pack's shifted offset table, as for hdiff-lzma).
PRESET_FILE = 6
PRESET_DIFF = 9 | lzma.PRESET_EXTREME
# Literal context: the new file is code or data read byte by byte (lc 3); the diff's streams are sparse (lc 1,
# as hdiff-lzma). pb 0: x86 code and diffs have no 4-byte alignment worth modelling (measured on pygame-ce).
LC_FILE, LC_DIFF, LP, PB = 3, 1, 0, 0
_DIFF, _X86, _RESERVED = 0x20, 0x40, 0x80
_ALLOWED_LC, _ALLOWED_PB = frozenset(range(5)), frozenset(range(3))
# x86 BCJ over the new file is tried only where the plain new file was within this factor of the best blob.
X86_WORTH = 1.01
_CHUNK = 1 << 16  # the most one uncompressed LZMA2 chunk holds
_MAX_VARINT_BYTES = 10


def dict_log(total: int) -> int:
    """log2 of the dictionary covering ``total`` bytes (old file + payload), at least 4 KiB."""
    return max(MIN_DICT_LOG, (max(total, 1) - 1).bit_length())


def x86_encoded(data: bytes) -> bytes:
    """``data`` as the x86 BCJ filter turns it (relative call and jump targets made absolute)."""
    if not data:
        return b""
    packed = lzma.compress(
        data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 0}]
    )
    return lzma.decompress(packed, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 0}])


# --- Encoding: liblzma through ctypes (a preset dictionary) --------------------------------------------------


class _Options(ctypes.Structure):
    """liblzma's ``lzma_options_lzma`` (lzma/lzma12.h; the same layout since liblzma 5.0)."""

    _fields_ = [
        ("dict_size", ctypes.c_uint32),
        ("preset_dict", ctypes.c_void_p),
        ("preset_dict_size", ctypes.c_uint32),
        ("lc", ctypes.c_uint32),
        ("lp", ctypes.c_uint32),
        ("pb", ctypes.c_uint32),
        ("mode", ctypes.c_int),
        ("nice_len", ctypes.c_uint32),
        ("mf", ctypes.c_int),
        ("depth", ctypes.c_uint32),
        ("ext_flags", ctypes.c_uint32),
        ("ext_size_low", ctypes.c_uint32),
        ("ext_size_high", ctypes.c_uint32),
        ("reserved_int", ctypes.c_uint32 * 5),
        ("reserved_enum", ctypes.c_int * 4),
        ("reserved_ptr", ctypes.c_void_p * 2),
    ]


class _Filter(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("options", ctypes.c_void_p)]


_LZMA_VLI_UNKNOWN = 2**64 - 1
_LZMA_FILTER_LZMA2 = 0x21
_LZMA_OK = 0
_lib: Any = None
_lib_lock = threading.Lock()


def _liblzma() -> Any:
    """The system liblzma, or None when it cannot be loaded (then ``available()`` is False)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                name = ctypes.util.find_library("lzma") or "liblzma.so.5"
                lib = ctypes.CDLL(name)
                lib.lzma_lzma_preset.argtypes = [ctypes.POINTER(_Options), ctypes.c_uint32]
                lib.lzma_lzma_preset.restype = ctypes.c_ubyte
                lib.lzma_raw_encoder_memusage.argtypes = [ctypes.POINTER(_Filter)]
                lib.lzma_raw_encoder_memusage.restype = ctypes.c_uint64
                lib.lzma_raw_buffer_encode.argtypes = [
                    ctypes.POINTER(_Filter), ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                    ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_size_t,
                ]
                lib.lzma_raw_buffer_encode.restype = ctypes.c_int
                _lib = lib
            except (OSError, AttributeError):
                _lib = False
        return _lib or None


def available() -> bool:
    """Whether this machine can encode (decoding only needs the standard library)."""
    return _liblzma() is not None


def encode_lzma2(
    dictionary: bytes, data: bytes, *, log: int, lc: int, preset: int, lp: int = LP, pb: int = PB
) -> bytes | None:
    """Raw LZMA2 chunks of ``data`` with ``dictionary`` preset (none if it is empty); None if liblzma refuses."""
    lib = _liblzma()
    if lib is None:
        raise PatchError("lzma-patch cannot encode here: the system liblzma could not be loaded")
    options = _Options()
    if lib.lzma_lzma_preset(ctypes.byref(options), preset):
        return None
    keep = ctypes.c_char_p(dictionary)  # the bytes object's own buffer, alive as long as ``keep``
    options.dict_size = 1 << log
    options.preset_dict = ctypes.cast(keep, ctypes.c_void_p).value
    options.preset_dict_size = len(dictionary)
    options.lc, options.lp, options.pb = lc, lp, pb
    filters = (_Filter * 2)(
        _Filter(_LZMA_FILTER_LZMA2, ctypes.cast(ctypes.pointer(options), ctypes.c_void_p).value),
        _Filter(_LZMA_VLI_UNKNOWN, None),
    )
    # LZMA2 stores a chunk uncompressed when it would grow: 3 bytes per 64 KiB at worst, plus the end marker.
    capacity = len(data) + len(data) // 4096 + 4096
    out = ctypes.create_string_buffer(capacity)
    written = ctypes.c_size_t(0)
    ret = lib.lzma_raw_buffer_encode(filters, None, data, len(data), out, ctypes.byref(written), capacity)
    del keep
    if ret != _LZMA_OK:
        return None
    return ctypes.string_at(out, written.value)


def varint(value: int) -> bytes:
    """``value`` as a LEB128 varint (7 bits a byte, low first)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _blob(dictionary: bytes, data: bytes, *, old_size: int, new_size: int, diff: bool, x86: bool) -> bytes | None:
    """The blob of ``data`` (the payload, BCJ-filtered when ``x86``) with ``dictionary`` (the old file, likewise)."""
    log = dict_log(old_size + len(data))
    lc = LC_DIFF if diff else LC_FILE
    body = encode_lzma2(dictionary, data, log=log, lc=lc, preset=PRESET_DIFF if diff else PRESET_FILE)
    if body is None:
        return None
    flags = log | (_DIFF if diff else 0) | (_X86 if x86 else 0)
    head = MAGIC + bytes([flags, (PB * 5 + LP) * 9 + lc])
    return head + varint(new_size) + varint(old_size) + varint(len(data)) + body


def _x86_pair(old: bytes, payload: bytes, *, run: Runner) -> tuple[bytes, bytes] | None:
    """(the old file, the payload) as the decoder's BCJ filter sees them after the old file; None where an
    instruction straddles the end of the old file (the filter turns it differently with what follows).

    The patcher filters the old file alone (``x86_encoded(old)``). The filter looks at each byte once, in
    order, with at most 4 bytes of lookahead, and leaves the last 4 bytes of a stream as they are: so the old
    file filtered alone and as the head of old + payload can only differ where a call or jump opcode (E8, E9)
    sits in its last 4 bytes. Only then is it filtered alone too, to compare."""
    if b"\xe8" not in old[-4:] and b"\xe9" not in old[-4:]:
        whole = x86_encoded(old + payload)
        return whole[: len(old)], whole[len(old):]
    whole, filtered_old = run([lambda: x86_encoded(old + payload), lambda: x86_encoded(old)])
    if whole[: len(old)] != filtered_old:
        return None
    return filtered_old, whole[len(old):]


def _serial(calls: list[Callable[[], T]]) -> list[T]:
    return [call() for call in calls]


def encode(old: bytes, payload: bytes, *, new_size: int, diff: bool, x86: bool = False) -> bytes | None:
    """One blob: ``payload`` (the new file, or an uncompressed HDIFF13 diff when ``diff``) with ``old`` as the
    dictionary. None where it cannot be made: an empty old file, over ``MAX_DICT_BYTES``, liblzma refusing, or,
    with ``x86``, a call instruction straddling the end of the old file."""
    if not old or len(old) + len(payload) > MAX_DICT_BYTES:
        return None
    dictionary, data = old, payload
    if x86:
        pair = _x86_pair(old, payload, run=_serial)
        if pair is None:
            return None
        dictionary, data = pair
    return _blob(dictionary, data, old_size=len(old), new_size=new_size, diff=diff, x86=x86)


def smallest(
    old: bytes, new: bytes, raw_diff: bytes | None, *, x86: bool, max_total: int = MAX_DICT_BYTES,
    run: Runner = _serial, as_file: bool = True,
) -> bytes | None:
    """The smallest blob for one file, or None where none can be made (an empty old file, over ``max_total``
    bytes of dictionary, or no liblzma here). ``run`` runs independent calls (the delta builder's thread pool:
    ctypes and the lzma module release the GIL) and returns their results in order.

    Tried: the new file (unless ``as_file`` is False) and the diff (when given), then, for x86 code, the new
    file after x86 BCJ when the new file did not lose to the diff (on pygame-ce's libraries BCJ saved up to 7%
    over the plain new file, and the diff after BCJ never beat the better of the others by more than 0.8%)."""
    candidates = ((new, False),) if as_file else ()
    payloads = [(p, d) for p, d in (*candidates, (raw_diff, True)) if p is not None and len(old) + len(p) <= max_total]
    if not old or not payloads or not available():
        return None
    def one(payload: bytes, diff: bool) -> Callable[[], bytes | None]:
        return lambda: encode(old, payload, new_size=len(new), diff=diff)

    blobs = run([one(p, d) for p, d in payloads])
    whole: bytes | None = blobs[0] if not payloads[0][1] else None
    found = [b for b in blobs if b is not None]
    if x86 and whole is not None and all(len(whole) <= len(b) * X86_WORTH for b in found):
        pair = _x86_pair(old, new, run=run)
        if pair is not None:
            filtered = _blob(*pair, old_size=len(old), new_size=len(new), diff=False, x86=True)
            if filtered is not None:
                found.append(filtered)
    return min(found, key=len) if found else None


# --- Decoding: the standard library ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    log: int
    diff: bool
    x86: bool
    lc: int
    lp: int
    pb: int
    new_size: int
    old_size: int
    payload_size: int
    body: int  # where the LZMA2 chunks start


def read_varint(blob: bytes, pos: int, *, what: str = "lzma-patch blob") -> tuple[int, int]:
    """(the LEB128 varint at ``blob[pos]``, the position after it); PatchError naming ``what`` if it is cut short
    or longer than 10 bytes."""
    value = shift = 0
    for _ in range(_MAX_VARINT_BYTES):
        if pos >= len(blob):
            raise PatchError(f"{what} header is truncated")
        byte = blob[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos
    raise PatchError(f"{what} header has a size field that is too long")


def read_header(blob: bytes, *, expected_size: int) -> Header:
    """The parameters and sizes a blob declares; PatchError unless they are whitelisted for ``expected_size``."""
    if len(blob) < 4 or not blob.startswith(MAGIC):
        raise PatchError("not an lzma-patch blob")
    flags, props = blob[2], blob[3]
    lc, rest = props % 9, props // 9
    lp, pb = rest % 5, rest // 5
    if flags & _RESERVED or props >= 9 * 5 * 5 or lc not in _ALLOWED_LC or lp != 0 or pb not in _ALLOWED_PB:
        raise PatchError(f"lzma-patch blob with unsupported parameters (flags {flags:#04x}, properties {props:#04x})")
    new_size, pos = read_varint(blob, 4)
    old_size, pos = read_varint(blob, pos)
    payload_size, pos = read_varint(blob, pos)
    diff = bool(flags & _DIFF)
    if new_size != expected_size:
        raise PatchError(f"patch declares {new_size} output bytes, expected {expected_size}")
    limit = hdiffx.decoded_limit(expected_size) if diff else expected_size
    if payload_size > limit or (not diff and payload_size != expected_size):
        raise PatchError(f"lzma-patch blob declares a {payload_size}-byte payload for a {expected_size}-byte file")
    if old_size == 0 or old_size + payload_size > MAX_DICT_BYTES:
        raise PatchError(f"lzma-patch blob needs a {old_size + payload_size}-byte dictionary (at most {MAX_DICT_BYTES})")
    log = flags & 0x1F
    if not MIN_DICT_LOG <= log <= dict_log(old_size + payload_size):
        raise PatchError(f"lzma-patch blob asks for a 2^{log}-byte dictionary, more than it needs")
    return Header(log, diff, bool(flags & _X86), lc, lp, pb, new_size, old_size, payload_size, pos)


def sizes(blob: bytes, *, expected_size: int) -> tuple[int, int]:
    """(new size, old size) a blob declares, checked (``hdiff.apply_in_memory``'s ``header``)."""
    head = read_header(blob, expected_size=expected_size)
    return head.new_size, head.old_size


def decode(old: bytes, blob: bytes, *, expected_size: int) -> tuple[Header, bytes]:
    """The header and the payload of a blob, decoded with ``old`` as its dictionary, bounded by the header's checks."""
    head = read_header(blob, expected_size=expected_size)
    if len(old) != head.old_size:
        raise BasisMismatch(f"lzma-patch blob expects a {head.old_size}-byte basis, the basis has {len(old)} bytes")
    dictionary = x86_encoded(old) if head.x86 else old
    payload = decode_primed(dictionary, memoryview(blob)[head.body :], log=head.log, lc=head.lc, lp=head.lp,
                            pb=head.pb, x86=head.x86, size=head.payload_size, what="lzma-patch blob")
    return head, payload


def decode_primed(
    dictionary: bytes, body: bytes | memoryview, *, log: int, lc: int, lp: int, pb: int, size: int, what: str,
    x86: bool = False,
) -> bytes:
    """Exactly ``size`` bytes: raw LZMA2 ``body`` decoded after ``dictionary`` filled the decoder's dictionary
    (as the encoder's preset dictionary did); PatchError (naming ``what``) for a corrupt or truncated body, one
    with trailing bytes, or one that decodes to another size (the decoder stops one byte past ``size``)."""
    lzma2: dict[str, Any] = {"id": lzma.FILTER_LZMA2, "dict_size": 1 << log, "lc": lc, "lp": lp, "pb": pb}
    filters = ([{"id": lzma.FILTER_X86}] if x86 else []) + [lzma2]
    decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
    primed = 0
    try:
        for start in range(0, len(dictionary), _CHUNK):
            piece = dictionary[start : start + _CHUNK]
            control = 0x01 if start == 0 else 0x02  # uncompressed chunk, resetting the dictionary first
            primed += len(decoder.decompress(bytes([control]) + (len(piece) - 1).to_bytes(2, "big") + piece))
        # The BCJ decoder holds back the last few bytes of the dictionary until it sees what follows them.
        out = decoder.decompress(body, max_length=len(dictionary) - primed + size + 1)
    except (lzma.LZMAError, MemoryError) as exc:
        raise PatchError(f"{what} is corrupt: {exc}") from None
    payload = out[len(dictionary) - primed :]
    if primed + len(out) > len(dictionary) + size:
        raise PatchError(f"{what} decodes to more than its declared {size} bytes")
    if not decoder.eof:
        raise PatchError(f"{what} is truncated")
    if decoder.unused_data:
        raise PatchError(f"{what} has trailing bytes")
    if len(payload) != size:
        raise PatchError(f"{what} decodes to {len(payload)} bytes, it declares {size}")
    return payload


def apply_bytes(old: bytes, blob: bytes, *, expected_size: int) -> bytes:
    """Apply a blob in memory (the caller checks the result's SHA-256)."""
    head, payload = decode(old, blob, expected_size=expected_size)
    if head.diff:
        return hdiff.apply_bytes(old, payload, expected_size=expected_size)
    return payload


def diff_bytes(old: bytes, new: bytes, *, level: int = 19) -> bytes:
    """The smallest lzma-patch blob from ``old`` to ``new`` (every payload and filter); PatchError if none can be
    made. ``level`` is there for the engines' common API: the LZMA settings do not depend on it."""
    if not available():
        raise PatchError("lzma-patch cannot encode here: the system liblzma could not be loaded")
    blob = smallest(old, new, hdiff.uncompressed_diff(old, new), x86=hdiffx.looks_x86(new))
    if blob is None:
        raise PatchError("lzma-patch cannot encode this pair (an empty basis, or over the dictionary limit)")
    return blob


def diff_file(*, old: Path, new: Path, out: Path, level: int = 19) -> int:
    """Write the smallest lzma-patch blob from ``old`` to ``new`` atomically; return its size."""
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
    """Apply an lzma-patch blob; write ``out`` atomically only if the result has the expected size and SHA-256."""
    if old is None:
        raise PatchError("an lzma-patch blob needs the old file")
    hdiff.apply_in_memory(
        old=old,
        patch=patch,
        out=out,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        old_sha256=old_sha256,
        patch_sha256=patch_sha256,
        # LZMA2 grows incompressible data by a fraction of a percent: a bigger blob is refused unread.
        max_patch_bytes=hdiffx.decoded_limit(expected_size) + 64,
        header=lambda blob: sizes(blob, expected_size=expected_size),
        apply=apply_bytes,
    )


__all__ = [
    "MAGIC",
    "MAX_BUILD_BYTES",
    "NAME",
    "apply_bytes",
    "apply_file",
    "available",
    "decode",
    "decode_primed",
    "diff_bytes",
    "diff_file",
    "encode",
    "read_header",
    "read_varint",
    "sizes",
    "smallest",
    "varint",
    "x86_encoded",
]
