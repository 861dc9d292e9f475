"""lzma-patch engine: round trips (new file and diff, with and without x86 BCJ), decoding with the standard library
alone, wrong basis, corrupt and hostile blobs, and its choice by the delta builder."""

from __future__ import annotations

import lzma
import random
from pathlib import Path
from typing import Any

import pytest

from mistcore.delta import MANIFEST_NAME, PATCH_ENGINES, DeltaManifest, apply_delta_to_stage
from mistcore.engines import DIRECT_ENGINES, ENGINES, hdiff, hdiffx, lzpatch, zpatch
from mistcore.errors import IntegrityError, PatchError
from mistcore.fsutil import clone_tree
from mistcore.tests.helpers import (
    ELF_X86_64,
    apply_engine,
    assert_damaged_blobs_refused,
    assert_delta_applies,
    assert_wrong_basis_refused,
    corrupting,
    mutate,
    relinked_library,
    sha_hex,
    structured_bytes,
    write_tree,
)
from mistcore.tests.helpers import delta_between as _delta


def _words(rng: random.Random, n: int = 3000) -> list[bytes]:
    return [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _text_pair(rng: random.Random) -> tuple[bytes, bytes]:
    """A text of a 3,000-word vocabulary, and the same with 200 new passages of those words inserted: most new
    bytes are short matches anywhere in the old file, LZMA's case (zstd-patch and hdiff are ~5-25% larger)."""
    words = _words(rng)
    old = b" ".join(rng.choice(words) for _ in range(60_000))
    new = bytearray(old)
    for _ in range(200):
        at = rng.randrange(len(new))
        new[at:at] = b" ".join(rng.choice(words) for _ in range(40))
    return old, bytes(new)


@pytest.fixture
def pair(work: Path, rng: random.Random) -> tuple[Path, Path, bytes]:
    old, new = _text_pair(rng)
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    return work / "old", work / "new", new


def test_round_trip(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    old_bytes = old.read_bytes()
    size = lzpatch.diff_file(old=old, new=new, out=work / "p")
    blob = (work / "p").read_bytes()
    assert size == len(blob) and blob.startswith(lzpatch.MAGIC)
    # the old file really is the dictionary: far smaller than the file compressed alone, and than the other engines
    assert size < len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)) // 4
    assert size < 0.97 * min(len(hdiff.diff_bytes(old_bytes, data)), len(zpatch.diff_bytes(old_bytes, data)))
    apply_engine(lzpatch, work, old, work / "p", data, old_sha256=sha_hex(old_bytes), patch_sha256=sha_hex(blob))
    assert (work / "out").read_bytes() == data
    assert lzpatch.apply_bytes(old_bytes, blob, expected_size=len(data)) == data
    head = lzpatch.read_header(blob, expected_size=len(data))
    payload = hdiff.uncompressed_diff(old_bytes, data) if head.diff else data
    assert (head.new_size, head.old_size, head.payload_size, head.x86) == (len(data), len(old_bytes), len(payload), False)
    assert 1 << head.log >= len(old_bytes) + len(payload)
    assert lzpatch.decode(old_bytes, blob, expected_size=len(data)) == (head, payload)


def test_every_payload_and_filter_round_trips(rng: random.Random) -> None:
    old, new = relinked_library(rng, 800)  # x86-64 code with calls (BCJ's case)
    assert hdiffx.looks_x86(new)
    raw = hdiff.uncompressed_diff(old, new)
    sizes = {}
    for diff, payload in ((False, new), (True, raw)):
        for x86 in (False, True):
            blob = lzpatch.encode(old, payload, new_size=len(new), diff=diff, x86=x86)
            assert blob is not None
            head, decoded = lzpatch.decode(old, blob, expected_size=len(new))
            assert (head.diff, head.x86, decoded) == (diff, x86, payload)
            assert lzpatch.apply_bytes(old, blob, expected_size=len(new)) == new
            sizes[diff, x86] = len(blob)
    # the builder's blob is the smallest of those it tries (BCJ over the diff is not tried)
    smallest = lzpatch.smallest(old, new, raw, x86=True)
    assert smallest is not None and len(smallest) == min(sizes[False, False], sizes[True, False], sizes[False, True])
    assert lzpatch.smallest(old, new, raw, x86=True, as_file=False) == lzpatch.encode(
        old, raw, new_size=len(new), diff=True)
    assert lzpatch.smallest(b"", new, raw, x86=True) is None  # nothing to put in the dictionary
    assert lzpatch.smallest(old, new, raw, x86=False, max_total=len(old) + 10) is None


def test_decoding_needs_only_the_standard_library(rng: random.Random, monkeypatch: pytest.MonkeyPatch) -> None:
    """The patcher decodes with the standard library's lzma module: no liblzma through ctypes."""
    old, new = relinked_library(rng, 300)
    blobs = [lzpatch.encode(old, new, new_size=len(new), diff=False, x86=x86) for x86 in (False, True)]
    monkeypatch.setattr(lzpatch, "_lib", False)
    assert not lzpatch.available()
    for blob in blobs:
        assert blob is not None and lzpatch.apply_bytes(old, blob, expected_size=len(new)) == new
    with pytest.raises(PatchError, match="liblzma"):
        lzpatch.diff_bytes(old, new)


def test_random_files_and_call_opcodes_at_the_seam() -> None:
    """Sizes around LZMA2's 64 KiB chunks, and x86 call opcodes (E8) at the end of the old file, where the BCJ
    filter may turn bytes differently with the payload behind them: such a pair is refused (None), never
    encoded wrong."""
    rng = random.Random(9)
    for trial in range(60):
        n = rng.choice([1, 4, 5, 4095, 65535, 65536, 65537, rng.randrange(1, 200_000)])
        old = bytes(0xE8 if rng.random() < 0.2 else rng.randrange(256) for _ in range(n))
        new = old[: rng.randrange(n + 1)] + b"\xe8" * rng.randrange(9) + rng.randbytes(rng.randrange(300))
        if not new:
            continue
        for x86 in (False, True):
            blob = lzpatch.encode(old, new, new_size=len(new), diff=False, x86=x86)
            if blob is None:  # only where a call straddles the seam
                assert x86 and b"\xe8" in old[-4:], trial
                continue
            assert lzpatch.apply_bytes(old, blob, expected_size=len(new)) == new, (trial, n, x86)
    tail = b"\x00" * 100 + b"\xe8\x01\x00"  # a call whose operand runs past the end of the old file
    assert lzpatch.encode(tail, b"\x00\x00" + bytes(50), new_size=52, diff=False, x86=True) is None


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"x", b"xy"), (b"a" * 9, b"a" * 9), (b"was here", b"now here too"), (ELF_X86_64 + bytes(100), ELF_X86_64 + bytes(99) + b"\x01")],
)
def test_tiny_files(work: Path, old: bytes, new: bytes) -> None:
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    lzpatch.diff_file(old=work / "old", new=work / "new", out=work / "p")
    apply_engine(lzpatch, work, work / "old", work / "p", new)
    assert (work / "out").read_bytes() == new


def test_an_empty_basis_cannot_be_encoded() -> None:
    assert lzpatch.encode(b"", b"new", new_size=3, diff=False) is None
    with pytest.raises(PatchError, match="empty basis"):
        lzpatch.diff_bytes(b"", b"brand new")


def test_wrong_basis_is_caught_and_nothing_written(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    assert_wrong_basis_refused(lzpatch, work, old, new, data)


def test_corrupt_or_truncated_blob_never_writes_wrong_bytes(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    lzpatch.diff_file(old=old, new=new, out=work / "p")
    blob = (work / "p").read_bytes()
    body = lzpatch.read_header(blob, expected_size=len(data)).body
    assert_damaged_blobs_refused(lzpatch, work, old, data, cuts=(len(blob) - 1, len(blob) // 2, body + 1, body, 5, 3, 0))
    # a diff payload that is not an uncompressed HDIFF13 diff
    not_a_diff = lzpatch.encode(old.read_bytes(), b"not a diff at all", new_size=len(data), diff=True)
    assert not_a_diff is not None
    (work / "bad").write_bytes(not_a_diff)
    with pytest.raises(PatchError, match="HDiffPatch|HDIFF13"):
        apply_engine(lzpatch, work, old, work / "bad", data)
    assert not (work / "out").exists()


def _with_header(blob: bytes, *, flags: int | None = None, props: int | None = None,
                 sizes: tuple[int, int, int] | None = None) -> bytes:
    """``blob`` (a sound 1,000-byte file's) with some of its header replaced."""
    head = lzpatch.read_header(blob, expected_size=1000)
    varints = b"".join(lzpatch.varint(v) for v in (sizes or (head.new_size, head.old_size, head.payload_size)))
    return (lzpatch.MAGIC + bytes([blob[2] if flags is None else flags, blob[3] if props is None else props])
            + varints + blob[head.body:])


def test_a_bomb_is_refused_within_the_cap(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 10 MB of zeros behind a 1,000-byte dictionary, under a header that declares a 1,000-byte file
    old, content = b"o" * 1000, b"tiny output".ljust(1000, b".")
    body = lzpatch.encode_lzma2(old, bytes(10_000_000), log=12, lc=3, preset=6)
    assert body is not None and len(body) < 20_000
    bomb = lzpatch.MAGIC + bytes([12, 3]) + b"".join(lzpatch.varint(v) for v in (1000, 1000, 1000)) + body
    (work / "old").write_bytes(old)
    (work / "bomb").write_bytes(bomb)
    with pytest.raises(PatchError, match="decodes to more than"):
        apply_engine(lzpatch, work, work / "old", work / "bomb", content)

    # decoding stops at the cap: the decoder is never asked for more than the declared payload + 1 byte
    seen: list[int] = []
    real = lzma.LZMADecompressor

    class Spy:
        def __init__(self, **kw: Any) -> None:
            self._d = real(**kw)

        def decompress(self, data: bytes, max_length: int = -1) -> bytes:
            out = self._d.decompress(data, max_length=max_length)
            if max_length >= 0:
                seen.append(max_length)
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(self._d, name)

    monkeypatch.setattr(lzpatch.lzma, "LZMADecompressor", Spy)
    with pytest.raises(PatchError, match="decodes to more than"):
        lzpatch.decode(old, bomb, expected_size=1000)
    assert seen == [1001]
    assert not (work / "out").exists()


def test_unknown_parameters_are_refused_before_decoding(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = b"o" * 1000, b"o" * 500 + b"n" * 500
    (work / "old").write_bytes(old)
    good = lzpatch.encode(old, new, new_size=len(new), diff=False)
    assert good is not None and good[:2] == b"LP" and good[2] & 0x1F == 12 and good[3] == lzpatch.LC_FILE

    def no_decoding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the header should have been refused before any decoding")

    monkeypatch.setattr(lzpatch.lzma, "LZMADecompressor", no_decoding)
    monkeypatch.setattr(lzpatch, "x86_encoded", no_decoding)
    cases = {
        "reserved flag": _with_header(good, flags=good[2] | 0x80),
        "dictionary 2^11": _with_header(good, flags=11),
        "dictionary 2^13": _with_header(good, flags=13),  # more than 1000 + 1000 bytes need
        "dictionary 2^31": _with_header(good, flags=31),
        "lc=5": _with_header(good, props=5),
        "lp=1": _with_header(good, props=1 * 9 + 3),
        "pb=3": _with_header(good, props=3 * 45 + 3),
        "properties over 224": _with_header(good, props=225),
        "another output size": _with_header(good, sizes=(999, 1000, 1000)),
        "a file payload of another size": _with_header(good, sizes=(1000, 1000, 999)),
        "a diff payload over the limit": _with_header(good, flags=good[2] | 0x20,
                                                       sizes=(1000, 1000, hdiffx.decoded_limit(1000) + 1)),
        "an empty basis": _with_header(good, sizes=(1000, 0, 1000)),
        "a dictionary over 64 MiB": _with_header(good, flags=26, sizes=(1000, 1 << 26, 1000)),
        "a size field of 11 bytes": good[:4] + b"\xff" * 10 + b"\x01" + good[5:],
        "a header cut short": good[:5],
        "another magic": b"LQ" + good[2:],
        "a zstd-patch blob": zpatch.diff_bytes(old, new),
    }
    for name, blob in cases.items():
        (work / "bad").write_bytes(blob)
        with pytest.raises(PatchError, match="lzma-patch blob|declares|basis"):
            apply_engine(lzpatch, work, work / "old", work / "bad", new)
        assert not (work / "out").exists(), name
    (work / "big").write_bytes(bytes(hdiffx.decoded_limit(10) + 65))
    with pytest.raises(PatchError, match="implausibly large"):
        lzpatch.apply_file(old=work / "old", patch=work / "big", out=work / "out", expected_size=10,
                           expected_sha256="0" * 64)
    monkeypatch.undo()
    (work / "good").write_bytes(good)
    apply_engine(lzpatch, work, work / "old", work / "good", new)
    assert (work / "out").read_bytes() == new


# The delta builder.


def _versions(rng: random.Random) -> tuple[dict[str, bytes], dict[str, bytes]]:
    text_old, text_new = _text_pair(rng)
    lib = structured_bytes(rng, 100_000)
    v1 = {"data/strings.txt": text_old, "lib/libgame.so": lib}
    v2 = {"data/strings.txt": text_new, "lib/libgame.so": mutate(rng, lib)}
    return v1, v2


def test_builder_picks_lzma_patch_when_smaller_and_the_delta_applies(work: Path, rng: random.Random) -> None:
    # given two versions where a text gained passages made of its own words
    v1, v2 = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    # when the delta is built at the server's level
    delta = _delta(work, "v1", "v2")
    # then each changed file took the smallest in-memory engine, the text lzma-patch
    ops = {op.path: op for op in delta.ops}
    for path in v2:
        sizes = {m.NAME: len(m.diff_bytes(v1[path], v2[path])) for m in (hdiff, lzpatch, zpatch)}  # builder order
        engine = min(sizes, key=lambda name: sizes[name])
        assert (ops[path].op, ops[path].engine, ops[path].blob_size) == ("patch", engine, sizes[engine]), sizes
    text = ops["data/strings.txt"]
    assert text.engine == lzpatch.NAME and str(text.blob).endswith(".lzpatch")
    assert lzpatch.NAME in PATCH_ENGINES and lzpatch.NAME in DIRECT_ENGINES and ENGINES[lzpatch.NAME] is lzpatch
    assert DeltaManifest.from_json((work / "v1-v2" / MANIFEST_NAME).read_bytes()) == delta
    # and it applies, on the server (chain replay) and in the patcher (bundle, stage, commit)
    assert_delta_applies(work, "v1-v2", "v1", "v2")


def test_builder_never_ships_a_blob_that_does_not_decode(
    work: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder is the system liblzma, the decoder the patcher's: the builder decodes the blob it picked and
    falls back to the next engine if the two disagree."""
    corrupting(monkeypatch, lzpatch, "smallest")
    v1, v2 = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    delta = _delta(work, "v1", "v2")
    assert lzpatch.NAME not in {op.engine for op in delta.ops}
    assert_delta_applies(work, "v1-v2", "v1", "v2")


def test_stage_refuses_an_lzma_patch_on_a_modified_file(work: Path, rng: random.Random) -> None:
    v1, v2 = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    delta = _delta(work, "v1", "v2")
    assert {op.path: op.engine for op in delta.ops}["data/strings.txt"] == lzpatch.NAME
    clone_tree(work / "v1", work / "install")
    modified = bytearray(v1["data/strings.txt"])
    modified[600:606] = b"zzzzzz"  # same size: only the hashes can tell
    (work / "install" / "data/strings.txt").unlink()
    (work / "install" / "data/strings.txt").write_bytes(bytes(modified))
    with pytest.raises(IntegrityError, match="data/strings.txt"):
        apply_delta_to_stage(
            delta=delta, delta_dir=work / "v1-v2", source_root=work / "install", stage_dir=work / "stage"
        )
    assert not (work / "stage" / "data/strings.txt").exists()

