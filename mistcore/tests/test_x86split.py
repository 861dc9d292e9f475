"""x86-split engine: the split is lossless on any bytes and on real machine code, round trips, decoding with the
standard library alone, wrong basis, damaged and hostile blobs, and its choice by the delta builder."""

from __future__ import annotations

import importlib
import random
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from mistcore.delta import PATCH_ENGINES
from mistcore.engines import DIRECT_ENGINES, ENGINES, bsdiffx, hdiff, lzpatch, x86split, zpatch
from mistcore.errors import BasisMismatch, PatchError
from mistcore.tests.helpers import (
    ELF_X86_64,
    apply_engine,
    assert_damaged_blobs_refused,
    assert_delta_applies,
    assert_wrong_basis_refused,
    corrupting,
    write_tree,
    x86_library,
    x86_release_pair,
)
from mistcore.tests.helpers import delta_between as _delta


@pytest.fixture
def release(work: Path, rng: random.Random) -> tuple[Path, Path, bytes]:
    old, new = x86_release_pair(rng)
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    return work / "old", work / "new", new


def _real_machine_code() -> list[Path]:
    """ELF x86-64 files of this machine's Python: the interpreter and compiled standard-library modules."""
    modules = [importlib.import_module(name) for name in ("_lzma", "_ctypes", "_decimal", "_struct")]
    candidates = [Path(sys.executable).resolve(), *(Path(getattr(m, "__file__", None) or "/nonexistent")
                                                   for m in modules)]
    return [p for p in candidates if p.is_file() and x86split.code_region(p.read_bytes()[:1 << 26]) is not None]


def test_the_split_is_lossless_on_real_machine_code() -> None:
    files = _real_machine_code()
    if not files:
        pytest.skip("SKIPPED: no ELF x86-64 file in this Python (not an x86-64 Linux machine)")
    for path in files:
        data = path.read_bytes()
        region = x86split.code_region(data)
        assert region is not None
        off, size = region
        code = data[off : off + size]
        streams = x86split.split(code, off)
        assert x86split.join(streams, off, size) == code, path
        # the fields really were split off: the op stream is well under the code, every field stream in use
        assert len(streams["ops"]) < 0.8 * size, path
        assert all(streams[name] for name in ("branch", "jump", "rip", "disp8", "imm8")), path


@pytest.mark.parametrize("seed", range(6))
def test_the_split_is_lossless_on_any_bytes(seed: int) -> None:
    """Data in the code, prefixes without end, escapes and VEX/EVEX headers cut by the end of the region: the
    parse reads op bytes only, so whatever the bytes, join(split(code)) is the code."""
    rng = random.Random(seed)
    tricky = [b"\x66" * 40, b"\x0f\x38", b"\x0f", b"\xc4\xe2", b"\x62\xf1\x7c", b"\xf7\x05", b"\xe8", b"\xa1",
              b"\x48\xb8", b"\xc8\x01", b"\x0f\x3a\x0f"]
    for size in (0, 1, 5, 31, 32, 33, 40, 200, 5000):
        pieces = bytearray()
        while len(pieces) < size:
            pieces += rng.choice(tricky) if rng.random() < 0.3 else rng.randbytes(rng.randint(1, 20))
        for cut in (bytes(pieces[:size]), bytes(pieces[:size]) + rng.choice(tricky)):
            base = rng.randrange(1 << 32)
            assert x86split.join(x86split.split(cut, base), base, len(cut)) == cut


def test_the_parse_tables_agree_with_the_general_parse() -> None:
    """The fast path (one-byte opcodes, with or without REX, and their ModRM) is the general parse, tabulated."""
    pad = bytes(range(16))
    checked = 0
    for prefix in (b"", b"\x41", b"\x48", b"\x4c"):
        for op in range(256):
            for m in range(256):
                for sib in (0x00, 0x25, 0xFF):
                    buf = prefix + bytes([op, m, sib]) + pad
                    try:
                        expected = x86split._parse_general(buf, 0)
                    except IndexError:
                        continue
                    assert x86split._parse(buf, 0) == expected, buf[:4].hex()
                    checked += 1
    assert checked > 700_000


def test_round_trip_and_smaller_than_every_other_engine_on_new_code(
    work: Path, release: tuple[Path, Path, bytes]
) -> None:
    old, new, data = release
    size = x86split.diff_file(old=old, new=new, out=work / "p")
    blob = (work / "p").read_bytes()
    assert size == len(blob) and blob.startswith(x86split.MAGIC)
    apply_engine(x86split, work, old, work / "p", data)
    assert (work / "out").read_bytes() == data
    # a library that gained a third of new code: the streams beat one LZMA stream with x86 BCJ and the rest
    old_bytes = old.read_bytes()
    others = {m.NAME: len(m.diff_bytes(old_bytes, data)) for m in (lzpatch, hdiff, zpatch, bsdiffx)}
    assert size < 0.95 * min(others.values()), (size, others)


def test_decoding_needs_only_the_standard_library(
    release: tuple[Path, Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new, data = release
    blob = x86split.diff_bytes(old.read_bytes(), data)
    monkeypatch.setattr(lzpatch, "_lib", False)  # no liblzma through ctypes: a patcher on any platform
    assert not lzpatch.available()
    assert x86split.apply_bytes(old.read_bytes(), blob, expected_size=len(data)) == data
    assert x86split.encode(old.read_bytes(), data) is None


def test_files_without_x86_64_code_are_not_encoded(rng: random.Random) -> None:
    old, new = x86_release_pair(rng, functions=40)
    i386 = bytearray(new)
    i386[18:20] = b"\x03\x00"  # EM_386: another instruction set
    no_sections = bytearray(new)
    struct.pack_into("<H", no_sections, 0x3C, 0)
    for other in (bytes(i386), bytes(no_sections), ELF_X86_64 + rng.randbytes(10_000), rng.randbytes(10_000)):
        assert x86split.code_region(other) is None
        assert x86split.encode(old, other) is None
    with pytest.raises(PatchError, match="cannot encode"):
        x86split.diff_bytes(old, rng.randbytes(10_000))


def test_a_pe_x86_64_code_section_is_found(rng: random.Random) -> None:
    """A Windows game's executable: PE32+, its code section found from the section table."""
    code = rng.randbytes(20_000)
    pe = bytearray(b"MZ" + bytes(62))
    struct.pack_into("<I", pe, 60, 64)
    pe += b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, 2, 0, 0, 0, 240, 0x22) + bytes(240)
    pe += b".rdata\0\0" + struct.pack("<IIIIIIHHI", 100, 0x1000, 512, 1024, 0, 0, 0, 0, 0x40000040)
    pe += b".text\0\0\0" + struct.pack("<IIIIIIHHI", len(code), 0x2000, len(code), 2048, 0, 0, 0, 0, 0x60000020)
    pe += bytes(2048 - len(pe)) + code
    assert x86split.code_region(bytes(pe)) == (2048, len(code))
    pe[0x44:0x46] = b"\x4c\x01"  # i386 PE: not ours
    assert x86split.code_region(bytes(pe)) is None


def test_wrong_basis_is_caught_and_nothing_written(work: Path, release: tuple[Path, Path, bytes]) -> None:
    assert_wrong_basis_refused(x86split, work, *release, knows_basis=True)


def test_damaged_blobs_are_refused_and_nothing_written(work: Path, release: tuple[Path, Path, bytes]) -> None:
    old, new, data = release
    x86split.diff_file(old=old, new=new, out=work / "p")
    assert_damaged_blobs_refused(x86split, work, old, data, cuts=(2, 3, 10, 60, -1, -100))


def _rebuilt(blob: bytes, new: bytes, *, version: int = x86split.VERSION, region: tuple[int, int] | None = None,
             props: int | None = None, stream_size: int | None = None) -> bytes:
    """``blob`` with its header rewritten: another format version, new-code region, first stream's properties or
    ops stream's declared size."""
    pos = 3
    values = []
    for _ in range(6):
        value, pos = lzpatch.read_varint(blob, pos)
        values.append(value)
    if region is not None:
        values[4:6] = region
    head = bytearray(x86split.MAGIC + bytes([version]))
    for value in values:
        head += lzpatch.varint(value)
    head += blob[pos : pos + 4]  # the old file's CRC-32
    pos += 4
    for n in range(len(x86split.STREAMS)):
        p = blob[pos]
        size, pos = lzpatch.read_varint(blob, pos + 1)
        coded, pos = lzpatch.read_varint(blob, pos)
        if n == 0 and props is not None:
            p = props
        if n == 1 and stream_size is not None:
            size = stream_size
        head += bytes([p]) + lzpatch.varint(size) + lzpatch.varint(coded)
    return bytes(head) + blob[pos:]


def test_hostile_headers_are_refused_before_decoding(
    work: Path, release: tuple[Path, Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new, data = release
    old_bytes = old.read_bytes()
    blob = x86split.diff_bytes(old_bytes, data)
    decoded: list[str] = []
    real = lzpatch.decode_primed

    def counting(*args: Any, **kw: Any) -> bytes:
        decoded.append(kw["what"])
        return real(*args, **kw)

    monkeypatch.setattr(lzpatch, "decode_primed", counting)
    cases = {
        "update the patcher": _rebuilt(blob, data, version=1),
        "outside": _rebuilt(blob, data, region=(len(data) - 10, 100)),
        "properties": _rebuilt(blob, data, props=(2 * 5 + 2) * 9 + 4),  # lc 4, lp 2, pb 2: not whitelisted
        "add up": _rebuilt(blob, data, stream_size=len(data)),
    }
    for message, bad in cases.items():
        with pytest.raises(PatchError, match=message):
            x86split.apply_bytes(old_bytes, bad, expected_size=len(data))
    assert decoded == []
    # a basis of another size is refused before the old file is split
    with pytest.raises(BasisMismatch, match="basis"):
        x86split.apply_bytes(old_bytes + b"!", blob, expected_size=len(data))
    assert decoded == []


def test_a_stream_that_decodes_past_its_size_is_refused(work: Path, release: tuple[Path, Path, bytes]) -> None:
    """A bomb in one stream: the ops stream declares 10 bytes fewer than its LZMA2 chunks decode to."""
    old, new, data = release
    old_bytes = old.read_bytes()
    blob = x86split.diff_bytes(old_bytes, data)
    ops = x86split._streams(data, x86split.code_region(data) or (0, 0))[1]
    with pytest.raises(PatchError, match="ops stream decodes to more"):
        x86split.apply_bytes(old_bytes, _rebuilt(blob, data, stream_size=len(ops) - 10), expected_size=len(data))


def _versions(rng: random.Random) -> tuple[dict[str, bytes], dict[str, bytes]]:
    old, new = x86_release_pair(rng)
    small_old, small_new = x86_release_pair(rng, functions=60)
    return ({"lib/libgame.so": old, "bin/game": small_old, "data/levels.txt": b"level one\n" * 300},
            {"lib/libgame.so": new, "bin/game": small_new, "data/levels.txt": b"level one\n" * 300 + b"two\n"})


def test_builder_picks_x86_split_on_new_code_and_the_delta_applies(work: Path, rng: random.Random) -> None:
    v1, v2 = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    delta = _delta(work, "v1", "v2")
    ops = {op.path: op for op in delta.ops}
    for path in ("lib/libgame.so", "bin/game"):
        assert ops[path].engine == x86split.NAME and str(ops[path].blob).endswith(".x86split")
        assert ops[path].blob_size == len(x86split.diff_bytes(v1[path], v2[path]))
    assert ops["data/levels.txt"].engine != x86split.NAME
    assert x86split.NAME in PATCH_ENGINES and x86split.NAME in DIRECT_ENGINES and ENGINES[x86split.NAME] is x86split
    assert_delta_applies(work, "v1-v2", "v1", "v2")


def test_builder_never_ships_a_blob_that_does_not_decode(
    work: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder's split and the patcher's join are checked against each other on every winning blob: a blob
    that decodes to other bytes is dropped for the next engine."""
    corrupting(monkeypatch, x86split, "encode")
    v1, v2 = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    delta = _delta(work, "v1", "v2")
    assert x86split.NAME not in {op.engine for op in delta.ops}
    assert {op.path: op.engine for op in delta.ops}["lib/libgame.so"] == lzpatch.NAME
    assert_delta_applies(work, "v1-v2", "v1", "v2")


def test_a_library_that_barely_changed_keeps_its_old_engine(work: Path, rng: random.Random) -> None:
    """One stream matches an old file better than eight: where little code changed, another engine wins."""
    old = [[(rng.randrange(27), rng.randrange(1 << 30)) for _ in range(30)] for _ in range(300)]
    new = [list(f) for f in old]
    new[150] = new[150][:10] + [(8, 3)] + new[150][10:]  # one more call in one function
    data = bytes(rng.randrange(4) for _ in range(64 << 10))
    v1, v2 = {"lib/libgame.so": x86_library(old, data)}, {"lib/libgame.so": x86_library(new, data)}
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    delta = _delta(work, "v1", "v2")
    (op,) = delta.ops
    assert op.engine != x86split.NAME
    assert op.blob_size is not None
    assert op.blob_size < len(x86split.diff_bytes(v1["lib/libgame.so"], v2["lib/libgame.so"]))
    assert_delta_applies(work, "v1-v2", "v1", "v2")
