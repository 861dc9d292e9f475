"""bsdiff-lzma engine: round trips, wrong basis, corrupt and hostile blobs, and its choice by the delta builder."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import bsdiff4.core
import pytest

from mistcore import delta as mdelta
from mistcore.delta import (
    PATCH_ENGINES,
)
from mistcore.engines import DIRECT_ENGINES, ENGINES, bsdiffx, hdiff, hdiffx, zpatch
from mistcore.errors import BasisMismatch, PatchError
from mistcore.tests.helpers import (
    ELF_X86_64,
    apply_engine,
    assert_damaged_blobs_refused,
    assert_delta_applies,
    assert_wrong_basis_refused,
    mutate,
    relinked_library,
    sha_hex,
    structured_bytes,
    write_tree,
)
from mistcore.tests.helpers import delta_between as _delta


@pytest.fixture
def pair(work: Path) -> tuple[Path, Path, bytes]:
    old, new = relinked_library(random.Random(1))
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    return work / "old", work / "new", new




def test_round_trip_and_smaller_than_the_other_engines_on_a_relinked_library(
    work: Path, pair: tuple[Path, Path, bytes]
) -> None:
    old, new, data = pair
    size = bsdiffx.diff_file(old=old, new=new, out=work / "p")
    patch = (work / "p").read_bytes()
    assert size == len(patch) and patch.startswith(bsdiffx.MAGIC)
    assert bsdiffx.read_header(patch) == (len(data), old.stat().st_size)
    apply_engine(bsdiffx, work, old, work / "p", data, old_sha256=sha_hex(old.read_bytes()), patch_sha256=sha_hex(patch))
    assert (work / "out").read_bytes() == data
    old_bytes = old.read_bytes()
    assert bsdiffx.apply_bytes(old_bytes, patch, expected_size=len(data)) == data
    # the case it is for: a few bytes changed, every call across the insertion and every later address moved
    others = {m.NAME: len(m.diff_bytes(old_bytes, data)) for m in (hdiff, hdiffx, zpatch)}
    assert len(patch) < 0.95 * min(others.values()), (len(patch), others)
    if shutil.which("bsdiff"):  # and below bsdiff's own BSDIFF40 (three bzip2 streams)
        subprocess.run(["bsdiff", str(old), str(new), str(work / "classic")], check=True)
        assert len(patch) < (work / "classic").stat().st_size


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"x", b""),
        (b"x", b"brand new"),
        (b"1234567", b"12345678"),
        (b"a" * 9, b"a" * 9),
        (ELF_X86_64 + bytes(100), ELF_X86_64 + bytes(50) + b"\x01" * 60),
    ],
)
def test_empty_and_tiny_files(work: Path, old: bytes, new: bytes) -> None:
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    bsdiffx.diff_file(old=work / "old", new=work / "new", out=work / "p")
    apply_engine(bsdiffx, work, work / "old", work / "p", new)
    assert (work / "out").read_bytes() == new


def test_wrong_basis_is_caught_and_nothing_written(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    assert_wrong_basis_refused(bsdiffx, work, old, new, data)


def test_corrupt_or_truncated_blob_never_writes_wrong_bytes(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    bsdiffx.diff_file(old=old, new=new, out=work / "p")
    patch = (work / "p").read_bytes()
    assert_damaged_blobs_refused(bsdiffx, work, old, data, cuts=(len(patch) - 1, len(patch) // 2, 20, 5, 2, 0), trials=80)


def _forged(control: list[tuple[int, int, int]], diff: bytes, extra: bytes, *, new_size: int, old_size: int,
            flags: int = 0) -> bytes:
    """A blob with exactly these control tuples and streams, whatever they say (bsdiffx.encode checks nothing
    the decoder does not check again)."""
    raw = b"".join(bsdiff4.core.encode_int64(v) for t in control for v in t)
    blob = bsdiffx.encode(raw, diff, extra, new_size=len(diff) + len(extra), old_size=old_size)
    r = bsdiffx._Reader(blob, 3)
    r.uvarint("new"), r.uvarint("old")
    return bsdiffx.MAGIC + bytes([flags]) + bsdiffx._uvarint(new_size) + bsdiffx._uvarint(old_size) + blob[r.pos :]


def test_hostile_control_and_sizes_are_refused_before_bsdiff_runs(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = b"o" * 1000
    ran: list[int] = []
    real = bsdiff4.core.patch

    def spy(*args: Any) -> bytes:
        ran.append(1)
        return real(*args)

    monkeypatch.setattr(bsdiffx.bsdiff4.core, "patch", spy)
    good = _forged([(10, 5, 0)], bytes(10), b"n" * 5, new_size=15, old_size=1000)
    assert bsdiffx.apply_bytes(old, good, expected_size=15) == b"o" * 10 + b"n" * 5 and ran == [1]
    ran.clear()
    cases = {
        "sizes": _forged([(10, 5, 0)], bytes(10), b"n" * 5, new_size=16, old_size=1000),
        "seeks outside": _forged([(10, 5, -(1 << 40))], bytes(10), b"n" * 5, new_size=15, old_size=1000),
        "add up": _forged([(12, 5, 0)], bytes(10), b"n" * 5, new_size=15, old_size=1000),
        "unsupported flags": _forged([(10, 5, 0)], bytes(10), b"n" * 5, new_size=15, old_size=1000, flags=0x80),
        "basis": _forged([(10, 5, 0)], bytes(10), b"n" * 5, new_size=15, old_size=999),
    }
    for what, blob in cases.items():
        with pytest.raises(BasisMismatch if what == "basis" else PatchError) as info:
            bsdiffx.apply_bytes(old, blob, expected_size=15)
        assert any(w in str(info.value) for w in ("inconsistent", "declares", "outside", "add up", "flags", "basis")), (
            what, info.value)
    # a diff stream declared far larger than the output (a bomb) is refused before anything is decompressed
    bomb = bsdiffx.MAGIC + b"\0" + b"".join(bsdiffx._uvarint(n) for n in (15, 1000, 1, 3, 1 << 40, 15, 1, 1))
    with pytest.raises(PatchError, match="inconsistent"):
        bsdiffx.apply_bytes(old, bomb + b"\0" * 8, expected_size=15)
    assert ran == []


# The delta builder.



def test_builder_picks_bsdiff_lzma_for_a_relinked_library_and_the_delta_applies(work: Path) -> None:
    # given a library rebuilt with a small change, and data files that are no executables
    lib_old, lib_new = relinked_library(random.Random(2))
    rng = random.Random(3)
    data = structured_bytes(rng, 120_000)
    v1 = {"lib/libgame.so": lib_old, "data/level.pak": data}
    v2 = {"lib/libgame.so": lib_new, "data/level.pak": mutate(rng, data)}
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    # when the delta is built at the server's level
    delta = _delta(work, "v1", "v2")
    # then the library took bsdiff-lzma (the smallest of the four), the data file never tried it
    ops = {op.path: op for op in delta.ops}
    sizes = {m.NAME: len(m.diff_bytes(lib_old, lib_new)) for m in (hdiff, hdiffx, zpatch, bsdiffx)}
    lib = ops["lib/libgame.so"]
    assert (lib.op, lib.engine, lib.blob_size) == ("patch", bsdiffx.NAME, sizes[bsdiffx.NAME]), sizes
    assert str(lib.blob).endswith(".bsdiffx")
    assert ops["data/level.pak"].engine != bsdiffx.NAME
    assert bsdiffx.NAME in PATCH_ENGINES and bsdiffx.NAME in DIRECT_ENGINES and ENGINES[bsdiffx.NAME] is bsdiffx

    # and it applies, on the server (chain replay) and in the patcher (bundle, stage, commit)
    assert_delta_applies(work, "v1-v2", "v1", "v2")


def test_builder_tries_bsdiff_only_where_it_is_cheap_or_likely_to_win(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given an executable over the "always" size whose change is large (not a near copy), and one that is small
    rng = random.Random(4)
    big_old = ELF_X86_64 + structured_bytes(rng, 300_000)
    big_new = ELF_X86_64 + structured_bytes(rng, 300_000)  # a rewrite: any patch is most of the file
    small_old, small_new = relinked_library(random.Random(5), functions=100)
    write_tree(work / "v1", {"big.so": big_old, "small.so": small_old})
    write_tree(work / "v2", {"big.so": big_new, "small.so": small_new})
    tried: list[int] = []
    real = bsdiffx.diff_bytes

    def counted(old: bytes, new: bytes, **kw: Any) -> bytes:
        tried.append(len(new))
        return real(old, new, **kw)

    monkeypatch.setattr(bsdiffx, "diff_bytes", counted)
    monkeypatch.setattr(mdelta, "BSDIFF_ALWAYS_BYTES", 200_000)
    # when the delta is built
    _delta(work, "v1", "v2")
    # then bsdiff ran on the small executable only (the big one is a rewrite: no patch under 1/16 of it)
    assert tried == [len(small_new)]
    # and below the top level it never runs
    tried.clear()
    _delta(work, "v1", "v2", "low", level=3)
    assert tried == []
