"""hdiff-lzma engine: round trips, wrong basis, corrupt and hostile blobs, and its choice by the delta builder."""

from __future__ import annotations

import lzma
import random
import struct
from pathlib import Path
from typing import Any

import hdiffpatch
import pytest
import zstandard

from mistcore.delta import (
    MANIFEST_NAME,
    PATCH_ENGINES,
    DeltaManifest,
    apply_delta_to_stage,
)
from mistcore.engines import DIRECT_ENGINES, ENGINES, hdiff, hdiffx, lzpatch, zpatch
from mistcore.errors import IntegrityError, PatchError
from mistcore.fsutil import clone_tree
from mistcore.tests.helpers import (
    apply_engine,
    assert_damaged_blobs_refused,
    assert_delta_applies,
    assert_wrong_basis_refused,
    mutate,
    sha_hex,
    structured_bytes,
    write_tree,
)
from mistcore.tests.helpers import delta_between as _delta

_ELF_X86_64 = b"\x7fELF\x02\x01" + bytes(12) + b"\x3e\x00"



def _index(rng: random.Random, entries: int = 30_000) -> tuple[bytes, bytes]:
    """A pack's offset table before and after data was inserted a third of the way in: every later
    offset moves by 16. Many small, regular differences: the case hdiff-lzma beats hdiff on."""
    offsets = sorted(rng.randrange(1 << 30) for _ in range(entries))
    old = b"".join(struct.pack("<IH", v, i % 7) for i, v in enumerate(offsets))
    new = b"".join(struct.pack("<IH", v + (16 if i > entries // 3 else 0), i % 7) for i, v in enumerate(offsets))
    return old, new


@pytest.fixture
def pair(work: Path, rng: random.Random) -> tuple[Path, Path, bytes]:
    old = structured_bytes(rng, 400_000)
    new = mutate(rng, old)
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    return work / "old", work / "new", new




def test_round_trip(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    size = hdiffx.diff_file(old=old, new=new, out=work / "p")
    patch = (work / "p").read_bytes()
    assert size == len(patch) and patch.startswith(hdiffx.MAGIC)
    assert size < len(zstandard.ZstdCompressor(level=19).compress(data)) // 10
    apply_engine(hdiffx, work, old, work / "p", data, old_sha256=sha_hex(old.read_bytes()), patch_sha256=sha_hex(patch))
    assert (work / "out").read_bytes() == data
    assert hdiffx.apply_bytes(old.read_bytes(), patch, expected_size=len(data)) == data
    # The blob is the uncompressed diff HDiffPatch applies directly.
    raw = hdiffx.decode(patch, expected_size=len(data))
    assert raw == hdiff.uncompressed_diff(old.read_bytes(), data)
    assert hdiff.read_header(raw) == (len(data), old.stat().st_size)
    assert hdiffpatch.apply(old.read_bytes(), raw) == data


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"", b""),
        (b"", b"brand new"),
        (b"was here", b""),
        (b"x", b"xy"),
        (b"a" * 9, b"a" * 9),
        (_ELF_X86_64 + bytes(100), _ELF_X86_64 + bytes(99) + b"\x01"),  # tries x86 BCJ too
    ],
)
def test_empty_and_tiny_files(work: Path, old: bytes, new: bytes) -> None:
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    hdiffx.diff_file(old=work / "old", new=work / "new", out=work / "p")
    apply_engine(hdiffx, work, work / "old", work / "p", new)
    assert (work / "out").read_bytes() == new
    assert hdiffx.apply_bytes(old, hdiffx.diff_bytes(old, new, level=3), expected_size=len(new)) == new


def test_every_whitelisted_chain_decodes(work: Path, rng: random.Random) -> None:
    old, new = _index(rng, 3000)
    raw = hdiff.uncompressed_diff(old, new)
    sizes = {}
    for lzma2 in (False, True):
        for x86 in (False, True):
            for lc, lp, pb in ((0, 0, 0), (1, 0, 0), (3, 0, 2)):
                blob = hdiffx.compress(raw, lzma2=lzma2, x86=x86, lc=lc, lp=lp, pb=pb)
                assert hdiffx.apply_bytes(old, blob, expected_size=len(new)) == new
                sizes[lzma2, x86, lc, lp, pb] = len(blob)
    # The builder's blob is the smaller of plain LZMA1 and, for x86 code, LZMA1 after BCJ.
    assert len(hdiffx.encode(raw, new_size=len(new))) == sizes[False, False, 1, 0, 0]
    assert len(hdiffx.encode(raw, new_size=len(new), x86=True)) == min(sizes[False, x86, 1, 0, 0] for x86 in (0, 1))  # type: ignore[index]
    with pytest.raises(PatchError, match="uncompressed HDIFF13"):
        hdiffx.encode(hdiff.compress_diff(raw, new_size=len(new)), new_size=len(new))
    with pytest.raises(PatchError, match="uncompressed HDIFF13"):
        hdiffx.encode(raw, new_size=len(new) + 1)


def test_x86_detection() -> None:
    elf = bytearray(64)
    elf[:6] = b"\x7fELF\x02\x01"
    for machine, expected in ((62, True), (3, True), (183, False), (40, False)):  # x86-64, i386, aarch64, arm
        elf[18:20] = machine.to_bytes(2, "little")
        assert hdiffx.looks_x86(bytes(elf)) is expected
    pe = bytearray(256)
    pe[:2], pe[60:64], pe[128:132] = b"MZ", (128).to_bytes(4, "little"), b"PE\0\0"
    for machine, expected in ((0x8664, True), (0x14C, True), (0xAA64, False)):
        pe[132:134] = machine.to_bytes(2, "little")
        assert hdiffx.looks_x86(bytes(pe)) is expected
    assert hdiffx.looks_x86(b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + bytes(24))
    assert not hdiffx.looks_x86(b"\xcf\xfa\xed\xfe\x0c\x00\x00\x01" + bytes(24))  # arm64
    for other in (b"", b"\x7fELF", b"MZ", b"#!/bin/sh\n", bytes(100)):
        assert not hdiffx.looks_x86(other)


def test_wrong_basis_is_caught_and_nothing_written(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    assert_wrong_basis_refused(hdiffx, work, old, new, data)


def test_corrupt_or_truncated_blob_never_writes_wrong_bytes(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    hdiffx.diff_file(old=old, new=new, out=work / "p")
    patch = (work / "p").read_bytes()
    assert_damaged_blobs_refused(hdiffx, work, old, data, cuts=(len(patch) - 1, len(patch) // 2, 10, hdiffx.HEADER_SIZE, 3, 0))
    # A zstd hdiff patch where an uncompressed one belongs, and a blob of something else.
    raw = hdiff.uncompressed_diff(old.read_bytes(), data)
    (work / "bad").write_bytes(hdiffx.compress(hdiff.compress_diff(raw, new_size=len(data))))
    with pytest.raises(PatchError, match="uncompressed HDIFF13"):
        apply_engine(hdiffx, work, old, work / "bad", data)
    (work / "bad").write_bytes(hdiffx.compress(b"not a diff at all"))
    with pytest.raises(PatchError, match="uncompressed HDIFF13"):
        apply_engine(hdiffx, work, old, work / "bad", data)
    assert not (work / "out").exists()


def test_a_bomb_is_refused_within_the_cap(work: Path) -> None:
    # 100 MB of zeros, raw LZMA with a dictionary the header may declare for a 1000-byte output.
    bomb = hdiffx.compress(bytes(100_000_000), preset=1, log=20)
    assert len(bomb) < 20_000
    content = b"tiny output".ljust(1000, b".")
    (work / "old").write_bytes(b"o" * 1000)
    (work / "bomb").write_bytes(bomb)
    with pytest.raises(PatchError, match="decodes to more than"):
        apply_engine(hdiffx, work, work / "old", work / "bomb", content)
    with pytest.raises(PatchError, match=f"more than {hdiffx.decoded_limit(10 << 20)} bytes"):
        hdiffx.decode(bomb, expected_size=10 << 20)

    # Decoding stops at the cap: never more than cap + 1 bytes are asked of the decoder.
    seen: list[int] = []
    real = lzma.LZMADecompressor

    class Spy:
        def __init__(self, **kw: Any) -> None:
            self._d = real(**kw)

        def decompress(self, data: bytes, max_length: int = -1) -> bytes:
            seen.append(max_length)
            out = self._d.decompress(data, max_length=max_length)
            seen.append(len(out))
            return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hdiffx.lzma, "LZMADecompressor", Spy)
        with pytest.raises(PatchError, match="decodes to more than"):
            hdiffx.decode(bomb, expected_size=1000)
    assert seen == [hdiffx.decoded_limit(1000) + 1] * 2
    # A big dictionary in the header is refused before decoding (liblzma would allocate it).
    with pytest.raises(PatchError, match="dictionary"):
        hdiffx.decode(hdiffx.compress(bytes(1000), log=26), expected_size=1000)
    assert not (work / "out").exists()


def test_unknown_parameters_are_refused_before_decoding(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = b"o" * 1000, b"o" * 500 + b"n" * 500
    (work / "old").write_bytes(old)
    good = hdiffx.diff_bytes(old, new)
    assert good[:2] == b"HX" and good[2] & 0x1F == hdiffx.MIN_DICT_LOG and good[3] == 1  # lc=1, lp=0, pb=0

    def no_decoding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the header should have been refused before any decoding")

    monkeypatch.setattr(hdiffx.lzma, "LZMADecompressor", no_decoding)
    cases = {
        "reserved flag": good[:2] + bytes([good[2] | 0x80]) + good[3:],
        "dictionary 2^11": good[:2] + bytes([11]) + good[3:],
        "dictionary 2^22": good[:2] + bytes([22]) + good[3:],  # more than 1000 bytes of output may need
        "dictionary 2^27": good[:2] + bytes([27]) + good[3:],
        "dictionary 2^31": good[:2] + bytes([31]) + good[3:],
        "lc=4": good[:3] + bytes([4]) + good[4:],
        "lp=1": good[:3] + bytes([1 * 9 + 1]) + good[4:],
        "pb=3": good[:3] + bytes([3 * 45 + 1]) + good[4:],
        "properties over 224": good[:3] + bytes([225]) + good[4:],
        "another magic": b"HY" + good[2:],
        "a zstd-patch blob": zpatch.diff_bytes(old, new),
    }
    for name, blob in cases.items():
        (work / "bad").write_bytes(blob)
        with pytest.raises(PatchError, match="hdiff-lzma blob"):
            apply_engine(hdiffx, work, work / "old", work / "bad", new)
        assert not (work / "out").exists(), name
    with pytest.raises(PatchError, match="limit"):
        hdiffx.apply_file(
            old=work / "old", patch=work / "bad", out=work / "out", expected_size=1 << 40, expected_sha256="0" * 64
        )
    (work / "big").write_bytes(bytes(hdiffx.decoded_limit(10) + 1))
    with pytest.raises(PatchError, match="implausibly large"):
        hdiffx.apply_file(old=work / "old", patch=work / "big", out=work / "out", expected_size=10, expected_sha256="0" * 64)
    monkeypatch.undo()
    apply_engine(hdiffx, work, work / "old", _write(work / "good", good), new)
    assert (work / "out").read_bytes() == new


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# The delta builder.


def _versions(rng: random.Random) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """A pack index whose offsets shift (hdiff-lzma's case), a settings file, a library."""
    index_old, index_new = _index(rng)
    settings = b"\n".join(b"key%d = %d  # since 2.5.6" % (i, rng.randrange(10**6)) for i in range(300))
    lib = structured_bytes(rng, 100_000)
    v1 = {"data/pack.idx": index_old, "config/settings.ini": settings, "lib/libgame.so": lib}
    v2 = {"data/pack.idx": index_new, "config/settings.ini": settings.replace(b"2.5.6", b"2.5.7"), "lib/libgame.so": mutate(rng, lib)}
    return v1, v2



@pytest.fixture
def no_lzma_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose system liblzma cannot be loaded: the builder falls back from lzma-patch to hdiff-lzma."""
    monkeypatch.setattr(lzpatch, "_lib", False)
    assert not lzpatch.available()


@pytest.mark.usefixtures("no_lzma_patch")
def test_builder_picks_hdiff_lzma_when_smaller_and_the_delta_applies(work: Path, rng: random.Random) -> None:
    # given two versions where a pack index's offsets shift, on a machine that cannot encode lzma-patch
    v1, v2 = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    # when the delta is built at the server's level
    delta = _delta(work, "v1", "v2")
    # then every changed file took the smallest of the three in-memory engines, the index hdiff-lzma
    ops = {op.path: op for op in delta.ops}
    for path in v2:
        old_bytes, new_bytes = v1[path], v2[path]
        sizes = {  # in the builder's order: a tie goes to the earlier engine
            hdiff.NAME: len(hdiff.diff_bytes(old_bytes, new_bytes)),
            hdiffx.NAME: len(hdiffx.diff_bytes(old_bytes, new_bytes)),
            zpatch.NAME: len(zpatch.diff_bytes(old_bytes, new_bytes)),
        }
        engine = min(sizes, key=lambda name: sizes[name])
        assert (ops[path].op, ops[path].engine, ops[path].blob_size) == ("patch", engine, sizes[engine]), sizes
        if path == "data/pack.idx":
            assert engine == hdiffx.NAME and sizes[hdiffx.NAME] < 0.95 * sizes[hdiff.NAME], sizes
    index = ops["data/pack.idx"]
    assert str(index.blob).startswith("patches/") and str(index.blob).endswith(".hdiffx")
    assert hdiffx.NAME in PATCH_ENGINES and hdiffx.NAME in DIRECT_ENGINES and ENGINES[hdiffx.NAME] is hdiffx
    assert DeltaManifest.from_json((work / "v1-v2" / MANIFEST_NAME).read_bytes()) == delta

    # and it applies, on the server (chain replay) and in the patcher (bundle, stage, commit)
    assert_delta_applies(work, "v1-v2", "v1", "v2")


def test_builder_below_the_top_level_does_not_use_lzma(work: Path, rng: random.Random) -> None:
    v1, v2 = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    delta = _delta(work, "v1", "v2", level=9)
    assert not {hdiffx.NAME, lzpatch.NAME} & {op.engine for op in delta.ops}


@pytest.mark.usefixtures("no_lzma_patch")
def test_stage_refuses_an_hdiff_lzma_patch_on_a_modified_file(work: Path, rng: random.Random) -> None:
    v1, v2 = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    delta = _delta(work, "v1", "v2")
    assert {op.path: op.engine for op in delta.ops}["data/pack.idx"] == hdiffx.NAME
    clone_tree(work / "v1", work / "install")
    modified = bytearray(v1["data/pack.idx"])
    modified[600:606] = b"\xff" * 6  # same size: only the hashes can tell
    (work / "install" / "data/pack.idx").unlink()
    (work / "install" / "data/pack.idx").write_bytes(bytes(modified))
    with pytest.raises(IntegrityError, match="data/pack.idx"):
        apply_delta_to_stage(
            delta=delta, delta_dir=work / "v1-v2", source_root=work / "install", stage_dir=work / "stage"
        )
    assert not (work / "stage" / "data/pack.idx").exists()
