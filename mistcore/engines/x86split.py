"""The ``x86-split`` engine: x86-64 machine code split into streams of like fields, each LZMA2-coded against the
same stream of the old file.

An x86 instruction is prefixes and an opcode (the op bytes), then a displacement and an immediate. Coded as
one stream (``lzma-patch``, x86 BCJ), a call's 4-byte target interrupts the run of opcodes that the compiler
repeats, and the opcodes interrupt the targets. Split into streams, each is a much more regular text for LZMA:
op bytes; call targets made absolute (calls to one function repeat); 32-bit jumps left relative (they stay
inside their function: absolute, they were 4% larger on libharfbuzz); RIP-relative targets made absolute;
other 32-bit and 8-bit displacements; wide and 8-bit immediates; 8-bit jumps. The old file's streams, split
the same way, are their dictionaries. The rest of the file (headers, data, symbol tables) is one more stream,
with the rest of the old file as dictionary.

Measured on the pygame-ce 2.5.6 -> 2.5.7 update, whose native libraries each gained a fifth to half of new
code: 19 files took x86-split, 174,091 bytes fewer than lzma-patch gave them (libharfbuzz 360,372 ->
301,986, libfluidsynth 216,708 -> 190,207, pygame's video module 47,634 -> 36,353), the update's blobs
1,371,177 -> 1,197,086 bytes; the patcher splits the old file and joins the new one at about 4 MB of code
a second in pure Python (the whole update applies in 1.6 s instead of 0.7 s). Where little code changed, one stream
matches the old file better (libjpeg: 11,628 bytes as lzma-patch, 15,682 split): the delta builder keeps
whichever blob is smaller.

The split is this module's own, and needs nothing else on either side, so server and patcher cannot
disagree on it: ``_parse`` reads an instruction's op bytes only (prefixes, opcode, ModRM, SIB) and from them
alone says how many there are and how long the displacement and the immediate are. It need not be the
CPU's view of an instruction (data in the code, or opcodes it does not know, only cost compression); what
it must be is a function of the op bytes, since the decoder has the op bytes before it has the fields. The
last ``_RAW_TAIL`` bytes of the code are op bytes one by one, so no instruction runs past the end.

Blob::

    0-1  magic "XS"
    2    format version, 0
    then LEB128 varints: the new file's size, the old file's size,
         the old code's offset and length, the new code's offset and length
    then the old file's CRC-32 (4 bytes, big-endian): a wrong basis is named as such, before any decoding
    then for each stream in ``STREAMS`` order: its LZMA properties byte ((pb * 5 + lp) * 9 + lc),
         its decoded size and its coded size (varints)
    then the streams' raw LZMA2 chunks, one after the other

Each stream's dictionary holds the old file's same stream and the stream itself (a size decoding derives,
never reads). Decoding treats the blob as hostile: only whitelisted properties; the sizes must add up to the
new file's before anything is decoded, the code regions must lie inside the files, each stream is decoded
bounded by its declared size (``lzpatch.decode_primed``), and every stream must be used up exactly. As with
every engine, the result's size and SHA-256 are checked before ``out`` is written.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mistcore.engines import hdiff, hdiffx, lzpatch
from mistcore.errors import BasisMismatch, PatchError

NAME = "x86-split"
MAGIC = b"XS"
VERSION = 0
PRESET = 6  # as lzma-patch over a new file: 9 extreme was within 0.2% on every stream measured
# The streams, and their LZMA (lc, lp, pb), chosen on pygame-ce's libraries: 4-byte targets and displacements
# are aligned (lp 2, pb 2: 8% smaller than lc 3 on call targets), 8-bit fields have no useful literal context.
STREAMS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("rest", (0, 2, 2)),
    ("ops", (3, 0, 0)),
    ("branch", (0, 2, 2)),
    ("branch8", (3, 0, 0)),
    ("jump", (0, 2, 2)),
    ("rip", (0, 2, 2)),
    ("disp", (0, 2, 2)),
    ("disp8", (0, 0, 0)),
    ("imm", (0, 0, 1)),
    ("imm8", (0, 0, 0)),
)
_ALLOWED_PROPS = frozenset((pb * 5 + lp) * 9 + lc for _, (lc, lp, pb) in STREAMS)
# What the builder gives this engine (old file + new file): each stream's encoder holds ~11 bytes per byte.
MAX_BUILD_BYTES = lzpatch.MAX_BUILD_BYTES
MAX_FILE_BYTES = lzpatch.MAX_DICT_BYTES // 2
MIN_CODE_BYTES = 4096  # smaller code sections are not split: ten streams cost ~40 bytes of framing
# More than the longest instruction _parse describes (16 bytes: 4 prefixes, EVEX and opcode, ModRM, SIB, a 32-bit
# displacement, an 8-bit immediate), so an instruction starting before the raw tail ends inside the code.
_RAW_TAIL = 32
_MAX_PREFIXES = 4

# --- The parse: op bytes -> (op byte count, displacement kind, immediate kind) ----------------------------------

# Immediate kinds.
_I0, _I8, _I16, _IZ, _IV, _I24, _REL8, _REL32, _MOFFS, _JREL32 = range(10)
# Displacement kinds.
_D0, _D8, _D32, _RIP = range(4)
_PREFIX = frozenset((0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67, 0xF0, 0xF2, 0xF3, *range(0x40, 0x50)))


def _one_byte_map() -> tuple[list[bool], list[int]]:
    """ModRM presence and immediate kind of each one-byte opcode in 64-bit mode."""
    modrm, imm = [False] * 256, [_I0] * 256
    for row in range(0, 0x40, 8):  # add, or, adc, sbb, and, sub, xor, cmp
        for op in range(row, row + 4):
            modrm[op] = True
        imm[row + 4], imm[row + 5] = _I8, _IZ
    for op in (0x63, 0x69, 0x6B, *range(0x80, 0x90), 0xC0, 0xC1, 0xC6, 0xC7, *range(0xD0, 0xD4),
               *range(0xD8, 0xE0), 0xF6, 0xF7, 0xFE, 0xFF):
        modrm[op] = True
    for op in (0x6A, 0x6B, 0x80, 0x82, 0x83, 0xA8, *range(0xB0, 0xB8), 0xC0, 0xC1, 0xC6, 0xCD, 0xD4, 0xD5,
               *range(0xE4, 0xE8)):
        imm[op] = _I8
    for op in (0x68, 0x69, 0x81, 0xA9, 0xC7):
        imm[op] = _IZ
    for op in range(0xB8, 0xC0):
        imm[op] = _IV
    for op in (0xC2, 0xCA):
        imm[op] = _I16
    imm[0xC8] = _I24
    for op in (*range(0x70, 0x80), *range(0xE0, 0xE4), 0xEB):
        imm[op] = _REL8
    imm[0xE8] = _REL32
    imm[0xE9] = _JREL32
    for op in range(0xA0, 0xA4):
        imm[op] = _MOFFS
    return modrm, imm


def _two_byte_map() -> tuple[list[bool], list[int]]:
    """ModRM presence and immediate kind of each 0F xx opcode (also VEX and EVEX map 1)."""
    modrm, imm = [True] * 256, [_I0] * 256
    for op in (0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0E, *range(0x30, 0x38), 0x39,
               *range(0x3B, 0x40), 0x77, *range(0x80, 0x90), 0xA0, 0xA1, 0xA2, 0xA8, 0xA9, 0xAA,
               *range(0xC8, 0xD0)):
        modrm[op] = False
    for op in (0x0F, *range(0x70, 0x74), 0xA4, 0xAC, 0xBA, 0xC2, 0xC4, 0xC5, 0xC6):
        imm[op] = _I8
    for op in range(0x80, 0x90):
        imm[op] = _JREL32
    return modrm, imm


_MODRM1, _IMM1 = _one_byte_map()
_MODRM2, _IMM2 = _two_byte_map()
_IMM_VEX1 = [k if k == _I8 else _I0 for k in _IMM2]  # VEX/EVEX map 1: the same imm8 opcodes, no branches


def _parse(buf: bytes | bytearray, pos: int) -> tuple[int, int, int, int]:
    """(op bytes, displacement kind, immediate kind, immediate size) of the instruction whose op bytes start at
    ``buf[pos]``, read from its op bytes alone (IndexError where they run past ``buf``).

    Most instructions are a one-byte opcode, with or without REX, then at most a ModRM byte: those are looked
    up in ``_FAST`` (which a test checks against ``_parse_general``); the rest go through ``_parse_general``."""
    b = buf[pos]
    if 0x40 <= b < 0x50:  # REX
        table = _FAST[2] if b >= 0x48 else _FAST[1]
        b = buf[pos + 1]
        at = pos + 2
    else:
        table, at = _FAST[0], pos + 1
    entry = table[b]
    if entry is None:
        return _parse_general(buf, pos)
    if isinstance(entry, tuple):
        return entry
    found = entry[buf[at]]
    return _parse_general(buf, pos) if found is None else found


_Parsed = tuple[int, int, int, int]
_Entry = _Parsed | list[_Parsed | None] | None


def _fast_tables() -> tuple[list[_Entry], list[_Entry], list[_Entry]]:
    """Without REX, with REX, with REX.W: for each one-byte opcode that is no prefix and no escape, its parse
    (no ModRM), or the parse for each ModRM byte (None where a SIB byte with mod 0 follows: its base decides)."""
    modrm_part: list[tuple[int, int] | None] = []  # (ModRM and SIB bytes, displacement kind) of each ModRM
    for m in range(256):
        mod, rm = m >> 6, m & 7
        if mod == 3:
            modrm_part.append((1, _D0))
        elif mod == 0 and rm == 4:
            modrm_part.append(None)
        else:
            disp = _D8 if mod == 1 else _D32 if mod == 2 else _RIP if rm == 5 else _D0
            modrm_part.append((2 if rm == 4 else 1, disp))
    shared: dict[_Parsed, _Parsed] = {}
    tables: tuple[list[_Entry], list[_Entry], list[_Entry]] = ([None] * 256, [None] * 256, [None] * 256)
    for op in range(256):
        if op in _PREFIX or op in (0x0F, 0xC4, 0xC5, 0x62, 0xF6, 0xF7):
            continue
        kind = _IMM1[op]
        for rex, table in enumerate(tables):
            size = _imm_size(kind, opsize16=False, addr32=False, rex_w=rex == 2)
            nops = 1 + (rex > 0)
            if not _MODRM1[op]:
                table[op] = shared.setdefault((nops, _D0, kind, size), (nops, _D0, kind, size))
                continue
            row: list[_Parsed | None] = []
            for part in modrm_part:
                if part is None:
                    row.append(None)
                else:
                    parsed = (nops + part[0], part[1], kind, size)
                    row.append(shared.setdefault(parsed, parsed))
            table[op] = row
    return tables


def _parse_general(buf: bytes | bytearray, pos: int) -> tuple[int, int, int, int]:
    """``_parse`` for any instruction (IndexError where its op bytes run past ``buf``)."""
    i = pos
    opsize16 = addr32 = rex_w = False
    while i - pos < _MAX_PREFIXES and buf[i] in _PREFIX:
        byte = buf[i]
        if byte == 0x66:
            opsize16 = True
        elif byte == 0x67:
            addr32 = True
        elif byte >= 0x40 and byte < 0x50:
            rex_w = bool(byte & 8)
        i += 1
    op = buf[i]
    i += 1
    has_modrm: bool
    if op == 0x0F:
        op2 = buf[i]
        i += 1
        if op2 == 0x38:
            i += 1
            has_modrm, kind = True, _I0
        elif op2 == 0x3A:
            i += 1
            has_modrm, kind = True, _I8
        else:
            has_modrm, kind = _MODRM2[op2], _IMM2[op2]
    elif op in (0xC4, 0xC5, 0x62):
        if op == 0xC5:
            mmap, i = 1, i + 1
        elif op == 0xC4:
            mmap, i = buf[i] & 0x1F, i + 2
        else:
            mmap, i = buf[i] & 0x07, i + 3
        op2 = buf[i]
        i += 1
        has_modrm = not (mmap == 1 and op2 == 0x77)  # vzeroupper, vzeroall
        kind = _I8 if mmap == 3 else _IMM_VEX1[op2] if mmap == 1 else _I0
    else:
        has_modrm, kind = _MODRM1[op], _IMM1[op]
        if op in (0xF6, 0xF7) and (buf[i] >> 3) & 7 < 2:  # test r/m, imm
            kind = _I8 if op == 0xF6 else _IZ
    disp = _D0
    if has_modrm:
        modrm = buf[i]
        i += 1
        mod, rm = modrm >> 6, modrm & 7
        if mod != 3:
            base = rm
            if rm == 4:
                base = buf[i] & 7
                i += 1
            if mod == 1:
                disp = _D8
            elif mod == 2 or (mod == 0 and base == 5):
                disp = _RIP if mod == 0 and rm == 5 else _D32
    size = _imm_size(kind, opsize16=opsize16, addr32=addr32, rex_w=rex_w)
    return i - pos, disp, kind, size


def _imm_size(kind: int, *, opsize16: bool, addr32: bool, rex_w: bool) -> int:
    """The size of an immediate of ``kind`` after these prefixes."""
    if kind == _I0:
        return 0
    if kind in (_I8, _REL8):
        return 1
    if kind == _I16:
        return 2
    if kind == _I24:
        return 3
    if kind == _IZ:
        return 2 if opsize16 and not rex_w else 4
    if kind == _IV:
        return 8 if rex_w else 2 if opsize16 else 4
    if kind in (_REL32, _JREL32):
        return 4
    return 4 if addr32 else 8  # _MOFFS


_FAST = _fast_tables()
_DISP_SIZE = (0, 1, 4, 4)


def split(code: bytes, base: int) -> dict[str, bytes]:
    """The code streams of ``code`` (found at file offset ``base``): everything but ``rest``."""
    ops, branch, branch8, rip, disp, disp8, imm, imm8, jump = (bytearray() for _ in range(9))
    pos, stop = 0, len(code) - _RAW_TAIL
    mask = 0xFFFFFFFF
    parse, disp_size = _parse, _DISP_SIZE
    while pos < stop:
        nops, dkind, ikind, isize = parse(code, pos)
        field = pos + nops
        ops += code[pos:field]
        if not dkind and not isize:  # most instructions: no field
            pos = field
            continue
        total = nops + disp_size[dkind] + isize
        if dkind == _D8:
            disp8.append(code[field])
            field += 1
        elif dkind == _D32:
            disp += code[field : field + 4]
            field += 4
        elif dkind == _RIP:
            target = (base + pos + total + int.from_bytes(code[field : field + 4], "little", signed=True)) & mask
            rip += target.to_bytes(4, "big")
            field += 4
        if ikind == _REL32:
            target = (base + pos + total + int.from_bytes(code[field : field + 4], "little", signed=True)) & mask
            branch += target.to_bytes(4, "big")
        elif ikind == _JREL32:
            jump += code[field : field + 4]
        elif ikind == _REL8:
            branch8.append(code[field])
        elif isize == 1:
            imm8.append(code[field])
        elif isize:
            imm += code[field : field + isize]
        pos += total
    ops += code[pos:]
    return {"ops": bytes(ops), "branch": bytes(branch), "branch8": bytes(branch8), "jump": bytes(jump),
            "rip": bytes(rip), "disp": bytes(disp), "disp8": bytes(disp8), "imm": bytes(imm), "imm8": bytes(imm8)}


def join(streams: dict[str, bytes], base: int, size: int) -> bytes:
    """The ``size`` bytes of code at file offset ``base`` that ``split`` turned into ``streams``; PatchError
    unless every stream is used up exactly."""
    ops = streams["ops"]
    branch, branch8, rip, jump = streams["branch"], streams["branch8"], streams["rip"], streams["jump"]
    disp, disp8, imm, imm8 = streams["disp"], streams["disp8"], streams["imm"], streams["imm8"]
    out = bytearray()
    # pos: where the instruction starts in the code (out is that long unless a stream ran short: then the
    # stream's position passes its end, which the checks after the loop catch)
    pos = p = pb = pb8 = pr = pd = pd8 = pi = pi8 = pj = 0
    stop = size - _RAW_TAIL
    mask = 0xFFFFFFFF
    parse, disp_size = _parse, _DISP_SIZE
    try:
        while pos < stop:
            nops, dkind, ikind, isize = parse(ops, p)
            out += ops[p : p + nops]
            p += nops
            if not dkind and not isize:
                pos += nops
                continue
            total = nops + disp_size[dkind] + isize
            if dkind == _D8:
                out.append(disp8[pd8])
                pd8 += 1
            elif dkind == _D32:
                out += disp[pd : pd + 4]
                pd += 4
            elif dkind == _RIP:
                target = int.from_bytes(rip[pr : pr + 4], "big")
                pr += 4
                out += ((target - base - pos - total) & mask).to_bytes(4, "little")
            if ikind == _REL32:
                target = int.from_bytes(branch[pb : pb + 4], "big")
                pb += 4
                out += ((target - base - pos - total) & mask).to_bytes(4, "little")
            elif ikind == _JREL32:
                out += jump[pj : pj + 4]
                pj += 4
            elif ikind == _REL8:
                out.append(branch8[pb8])
                pb8 += 1
            elif isize == 1:
                out.append(imm8[pi8])
                pi8 += 1
            elif isize:
                out += imm[pi : pi + isize]
                pi += isize
            pos += total
    except IndexError:
        raise PatchError("x86-split blob's streams end early") from None
    out += ops[p:]
    used = {"branch": pb, "branch8": pb8, "jump": pj, "rip": pr, "disp": pd, "disp8": pd8, "imm": pi, "imm8": pi8}
    if len(out) != size or any(len(streams[name]) != n for name, n in used.items()):
        raise PatchError("x86-split blob's streams do not add up to its code")
    return bytes(out)


# --- Where the code is ---------------------------------------------------------------------------------------


def code_region(data: bytes) -> tuple[int, int] | None:
    """(offset, length) of the largest x86-64 code section of an ELF or PE file, or None."""
    sections: list[tuple[int, int]] = []
    try:
        if data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1 and int.from_bytes(data[18:20], "little") == 62:
            shoff = int.from_bytes(data[0x28:0x30], "little")
            entsize, count = int.from_bytes(data[0x3A:0x3C], "little"), int.from_bytes(data[0x3C:0x3E], "little")
            for n in range(count if entsize >= 64 else 0):
                head = data[shoff + n * entsize : shoff + n * entsize + 64]
                kind, flags = int.from_bytes(head[4:8], "little"), int.from_bytes(head[8:16], "little")
                if kind == 1 and flags & 4:  # SHT_PROGBITS, SHF_EXECINSTR
                    sections.append((int.from_bytes(head[24:32], "little"), int.from_bytes(head[32:40], "little")))
        elif data[:2] == b"MZ":
            pe = int.from_bytes(data[60:64], "little")
            if data[pe : pe + 4] != b"PE\0\0" or int.from_bytes(data[pe + 4 : pe + 6], "little") != 0x8664:
                return None
            count = int.from_bytes(data[pe + 6 : pe + 8], "little")
            table = pe + 24 + int.from_bytes(data[pe + 20 : pe + 22], "little")
            for n in range(count):
                head = data[table + n * 40 : table + n * 40 + 40]
                if int.from_bytes(head[36:40], "little") & 0x20000020:  # code, or executable
                    sections.append((int.from_bytes(head[20:24], "little"), int.from_bytes(head[16:20], "little")))
    except IndexError:
        return None
    inside = [(off, size) for off, size in sections if size >= MIN_CODE_BYTES and off + size <= len(data)]
    return max(inside, key=lambda s: s[1]) if inside else None


# --- Blobs -----------------------------------------------------------------------------------------------------


def _streams(data: bytes, region: tuple[int, int]) -> list[bytes]:
    """The file's streams in ``STREAMS`` order."""
    off, size = region
    code = split(data[off : off + size], off)
    return [data[:off] + data[off + size :], *(code[name] for name, _ in STREAMS[1:])]


def _serial(calls: list[Callable[[], Any]]) -> list[Any]:
    return [call() for call in calls]


def encode(old: bytes, new: bytes, *, run: Callable[[list[Callable[[], Any]]], list[Any]] = _serial) -> bytes | None:
    """The blob from ``old`` to ``new``, or None where it cannot be made (no x86-64 code section in either file,
    over ``MAX_FILE_BYTES``, no liblzma here). ``run`` runs independent calls, as in ``lzpatch.smallest``."""
    if not lzpatch.available() or max(len(old), len(new)) > MAX_FILE_BYTES:
        return None
    old_region, new_region = code_region(old), code_region(new)
    if old_region is None or new_region is None:
        return None
    olds, news = run([lambda: _streams(old, old_region), lambda: _streams(new, new_region)])

    def one(n: int) -> Callable[[], bytes | None]:
        lc, lp, pb = STREAMS[n][1]
        log = lzpatch.dict_log(len(olds[n]) + len(news[n]))
        return lambda: lzpatch.encode_lzma2(olds[n], news[n], log=log, lc=lc, lp=lp, pb=pb, preset=PRESET)

    bodies = run([one(n) for n in range(len(STREAMS))])
    if any(body is None for body in bodies):
        return None
    head = bytearray(MAGIC + bytes([VERSION]))
    for value in (len(new), len(old), *old_region, *new_region):
        head += lzpatch.varint(value)
    head += zlib.crc32(old).to_bytes(4, "big")
    for (_, (lc, lp, pb)), stream, body in zip(STREAMS, news, bodies, strict=True):
        head += bytes([(pb * 5 + lp) * 9 + lc]) + lzpatch.varint(len(stream)) + lzpatch.varint(len(body))
    return bytes(head) + b"".join(bodies)


def sizes(blob: bytes, *, expected_size: int) -> tuple[int, int]:
    """(new size, old size) a blob declares, checked."""
    head = _header(blob, expected_size=expected_size)
    return head[0], head[1]


def _header(blob: bytes, *, expected_size: int) -> tuple[int, int, int, tuple[int, int], tuple[int, int],
                                                           list[tuple[int, int, int, int, int]], int]:
    """(new size, old size, old CRC-32, old region, new region, [(lc, lp, pb, size, coded size) per stream],
    body offset)."""
    if len(blob) < 3 or not blob.startswith(MAGIC):
        raise PatchError("not an x86-split blob")
    if blob[2] != VERSION:
        raise PatchError(f"x86-split blob of format {blob[2]}: update the patcher")
    pos = 3
    values = []
    for _ in range(6):
        value, pos = lzpatch.read_varint(blob, pos, what="x86-split blob")
        values.append(value)
    new_size, old_size, old_off, old_len, new_off, new_len = values
    if new_size != expected_size:
        raise PatchError(f"patch declares {new_size} output bytes, expected {expected_size}")
    if old_size == 0 or max(old_size, new_size) > MAX_FILE_BYTES:
        raise PatchError(f"x86-split blob for a {old_size}-byte basis (at most {MAX_FILE_BYTES})")
    if old_off + old_len > old_size or new_off + new_len > new_size:
        raise PatchError("x86-split blob's code lies outside its files")
    if pos + 4 > len(blob):
        raise PatchError("x86-split blob header is truncated")
    crc, pos = int.from_bytes(blob[pos : pos + 4], "big"), pos + 4
    streams = []
    for _ in STREAMS:
        if pos >= len(blob):
            raise PatchError("x86-split blob header is truncated")
        props = blob[pos]
        if props not in _ALLOWED_PROPS:
            raise PatchError(f"x86-split blob with unsupported LZMA properties {props:#04x}")
        size, pos = lzpatch.read_varint(blob, pos + 1, what="x86-split blob")
        coded, pos = lzpatch.read_varint(blob, pos, what="x86-split blob")
        lc, rest = props % 9, props // 9
        streams.append((lc, rest % 5, rest // 5, size, coded))
    if streams[0][3] != new_size - new_len or sum(s[3] for s in streams[1:]) > new_len:
        raise PatchError("x86-split blob's streams do not add up to the new file")
    if pos + sum(s[4] for s in streams) != len(blob):
        raise PatchError("x86-split blob is truncated or has trailing bytes")
    return new_size, old_size, crc, (old_off, old_len), (new_off, new_len), streams, pos


def apply_bytes(old: bytes, blob: bytes, *, expected_size: int) -> bytes:
    """Apply a blob in memory (the caller checks the result's SHA-256)."""
    new_size, old_size, crc, old_region, (new_off, new_len), streams, pos = _header(blob, expected_size=expected_size)
    if len(old) != old_size:
        raise BasisMismatch(f"x86-split blob expects a {old_size}-byte basis, the basis has {len(old)} bytes")
    if zlib.crc32(old) != crc:
        raise BasisMismatch("x86-split blob was made from another basis (its CRC-32 differs)")
    olds = _streams(old, old_region)
    decoded: dict[str, bytes] = {}
    for (name, _), dictionary, (lc, lp, pb, size, coded) in zip(STREAMS, olds, streams, strict=True):
        body = memoryview(blob)[pos : pos + coded]
        pos += coded
        decoded[name] = lzpatch.decode_primed(
            dictionary, body, log=lzpatch.dict_log(len(dictionary) + size), lc=lc, lp=lp, pb=pb, size=size,
            what=f"x86-split blob's {name} stream")
    rest = decoded.pop("rest")
    code = join(decoded, new_off, new_len)
    return rest[:new_off] + code + rest[new_off:]


def diff_bytes(old: bytes, new: bytes, *, level: int = 19) -> bytes:
    """The x86-split blob from ``old`` to ``new``; PatchError where none can be made. ``level`` is there for the
    engines' common API."""
    blob = encode(old, new)
    if blob is None:
        raise PatchError("x86-split cannot encode this pair (no x86-64 code section, too big, or no liblzma)")
    return blob


def diff_file(*, old: Path, new: Path, out: Path, level: int = 19) -> int:
    """Write the x86-split blob from ``old`` to ``new`` atomically; return its size."""
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
    """Apply an x86-split blob; write ``out`` atomically only if the result has the expected size and SHA-256."""
    if old is None:
        raise PatchError("an x86-split blob needs the old file")
    hdiff.apply_in_memory(
        old=old,
        patch=patch,
        out=out,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        old_sha256=old_sha256,
        patch_sha256=patch_sha256,
        max_patch_bytes=hdiffx.decoded_limit(expected_size) + 1024,
        header=lambda blob: sizes(blob, expected_size=expected_size),
        apply=apply_bytes,
    )


__all__ = ["MAGIC", "MAX_BUILD_BYTES", "NAME", "apply_bytes", "apply_file", "code_region", "diff_bytes",
           "diff_file", "encode", "join", "sizes", "split"]
