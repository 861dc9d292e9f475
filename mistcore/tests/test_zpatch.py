"""zstd-patch engine: round trips, wrong basis, corrupt and hostile blobs, and its choice by the delta builder."""

from __future__ import annotations

import io
import json
import random
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mistcore.delta import (
    MANIFEST_NAME,
    DeltaManifest,
    apply_delta_dir,
    apply_delta_to_stage,
    bundle_delta,
    commit_stage,
    unpack_bundle,
)
from mistcore.engines import DIRECT_ENGINES, ENGINES, hdiff, hdiffx, lzpatch, zpatch
from mistcore.errors import IntegrityError, ManifestError, PatchError
from mistcore.fsutil import clone_tree
from mistcore.tests.helpers import (
    apply_engine,
    assert_bit_flips_refused,
    assert_wrong_basis_refused,
    mutate,
    sha_hex,
    snapshot,
    structured_bytes,
    write_tree,
)
from mistcore.tests.helpers import delta_between as _delta


@pytest.fixture
def pair(work: Path, rng: random.Random) -> tuple[Path, Path, bytes]:
    old = structured_bytes(rng, 400_000)
    new = mutate(rng, old)
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    return work / "old", work / "new", new



def _frame(content: bytes, *, window_exponent: int | None, declared_size: int | None) -> bytes:
    """A hand-made blob (a zstd frame without magic) holding ``content`` as one raw block, with the header we choose."""
    if declared_size is None:
        fcs_flag, fcs = 0, b""
    elif declared_size < 1 << 32:
        fcs_flag, fcs = 2, struct.pack("<I", declared_size)
    else:
        fcs_flag, fcs = 3, struct.pack("<Q", declared_size)
    single_segment = window_exponent is None
    descriptor = (fcs_flag << 6) | (0x20 if single_segment else 0)
    header = bytes([descriptor])  # the blob leaves out the frame's magic number
    if not single_segment:
        assert window_exponent is not None
        header += bytes([window_exponent << 3])  # window = 1 << (10 + exponent)
    block = ((len(content) << 3) | 1).to_bytes(3, "little")  # last block, raw
    return header + fcs + block + content


def test_round_trip_is_a_zstd_frame_without_its_magic(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    size = zpatch.diff_file(old=old, new=new, out=work / "p")
    patch = (work / "p").read_bytes()
    assert size == len(patch) < len(zstandard.ZstdCompressor(level=19).compress(data)) // 10
    assert zpatch.read_header(patch)[0] == len(data)
    apply_engine(zpatch, work, old, work / "p", data, old_sha256=sha_hex(old.read_bytes()), patch_sha256=sha_hex(patch))
    assert (work / "out").read_bytes() == data
    assert zpatch.apply_bytes(old.read_bytes(), patch, expected_size=len(data)) == data
    assert not patch.startswith(zpatch.MAGIC)
    if shutil.which("zstd"):  # what `zstd --patch-from` reads once the magic is back: handy when debugging
        (work / "p.zst").write_bytes(zpatch.MAGIC + patch)
        out = subprocess.run(
            ["zstd", "-d", "-c", "--long=31", f"--patch-from={old}", str(work / "p.zst")],
            capture_output=True,
            check=True,
        )
        assert out.stdout == data
        (work / "p.zst").unlink()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"", b""),
        (b"", b"brand new"),
        (b"was here", b""),
        (b"x", b"xy"),
        (b"1234567", b"12345678"),  # a dictionary under 8 bytes: zstd ignores it when compressing
        (b"a" * 9, b"a" * 9),
    ],
)
def test_empty_and_tiny_files(work: Path, old: bytes, new: bytes) -> None:
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    zpatch.diff_file(old=work / "old", new=work / "new", out=work / "p")
    apply_engine(zpatch, work, work / "old", work / "p", new)
    assert (work / "out").read_bytes() == new
    assert zpatch.apply_bytes(old, zpatch.diff_bytes(old, new), expected_size=len(new)) == new


def test_wrong_basis_is_caught_and_nothing_written(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    assert_wrong_basis_refused(zpatch, work, old, new, data, short=False)


def test_corrupt_or_truncated_patch_never_writes_wrong_bytes(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    zpatch.diff_file(old=old, new=new, out=work / "p")
    patch = (work / "p").read_bytes()
    assert_bit_flips_refused(work, patch, lambda bad: apply_engine(zpatch, work, old, bad, data), trials=60)
    for cut in (len(patch) // 2, len(patch) - 1, 10, 3):
        (work / "bad").write_bytes(patch[:cut])
        with pytest.raises((IntegrityError, PatchError)):
            apply_engine(zpatch, work, old, work / "bad", data)
    with pytest.raises(IntegrityError, match="corrupt"):
        apply_engine(zpatch, work, old, work / "p", data, patch_sha256=sha_hex(b"another patch"))
    (work / "bad").write_bytes(b"garbage that is no zstd frame")
    with pytest.raises(PatchError, match="zstd-patch"):
        apply_engine(zpatch, work, old, work / "bad", data)
    (work / "bad").write_bytes(patch + zpatch.MAGIC + patch)  # a second frame would be more output than expected
    with pytest.raises((IntegrityError, PatchError)):
        apply_engine(zpatch, work, old, work / "bad", data)
    assert not (work / "out").exists()


def test_hostile_sizes_and_windows_are_refused_before_decoding(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = b"tiny output"
    (work / "old").write_bytes(b"o" * 1000)
    # A sane hand-made frame decodes (so the refusals below come from the header checks).
    (work / "ok").write_bytes(_frame(content, window_exponent=0, declared_size=len(content)))
    apply_engine(zpatch, work, work / "old", work / "ok", content)
    assert (work / "out").read_bytes() == content
    (work / "out").unlink()

    def no_decoding(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the header should have been refused before any decoding")

    monkeypatch.setattr(zpatch, "_decompressor", no_decoding)
    monkeypatch.setattr(Path, "read_bytes", no_decoding)  # nor the basis read into memory
    cases = {
        "declares": _frame(content, window_exponent=0, declared_size=1 << 40),  # 1 TiB bomb
        "window": _frame(content, window_exponent=20, declared_size=len(content)),  # 1 GiB window for 11 bytes
        "no output size": _frame(content, window_exponent=0, declared_size=None),
    }
    for message, blob in cases.items():
        (work / "bad").write_bytes(blob)
        with pytest.raises(PatchError, match=message):
            apply_engine(zpatch, work, work / "old", work / "bad", content)
    with pytest.raises(PatchError, match="limit"):
        zpatch.apply_file(
            old=work / "old", patch=work / "ok", out=work / "out", expected_size=1 << 40, expected_sha256="0" * 64
        )
    assert not (work / "out").exists()
    monkeypatch.undo()
    # The decoder enforces the same window cap by itself whenever it would need a window buffer
    # (output smaller than the frame; a frame fitting the output buffer is decoded straight into it).
    longer = b"x" * 4096
    big_window = _frame(longer, window_exponent=20, declared_size=len(longer))
    with pytest.raises(zstandard.ZstdError, match="too much memory"):
        zpatch._decompressor(b"o" * 1000, len(longer)).stream_reader(io.BytesIO(zpatch.MAGIC + big_window)).read(100)


def test_blob_reads_back_as_a_whole_frame_in_any_read_sizes() -> None:
    for size in (1, 2, 3, 4, 5, 7, -1):
        reader = zpatch._Reframed(io.BytesIO(b"frame body"))
        chunks = []
        while chunk := reader.read(size):
            chunks.append(chunk)
        assert b"".join(chunks) == zpatch.MAGIC + b"frame body"


def test_window_covers_both_files() -> None:
    assert zpatch.window_log(0, 0) == zstandard.WINDOWLOG_MIN
    assert 1 << zpatch.window_log(3 << 20, 5 << 20) >= 8 << 20
    assert zpatch.window_log(1 << 40, 1) == zstandard.WINDOWLOG_MAX


# The delta builder.


def _versions(rng: random.Random) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes]]:
    """A version file and a settings file whose version stamps change (the first is zstd-patch's best case: a
    small text file, where its framing is the smallest), a library, a removal."""
    words = b"alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    settings = b"\n".join(
        b"%s = %d  # %s (since 2.5.6)" % (rng.choice(words), rng.randrange(10**6), b" ".join(rng.choices(words, k=6)))
        for _ in range(400)
    )
    lib = structured_bytes(rng, 200_000)
    stamp = b'__version__ = "2.5.6"\nVERSION_TUPLE = (2, 5, 6)\n' * 3
    v1 = {"config/settings.ini": settings, "lib/libgame.so": lib, "data/keep.bin": rng.randbytes(5000),
          "game/version.py": stamp}
    v2 = dict(v1)
    v2["config/settings.ini"] = settings.replace(b"2.5.6", b"2.5.7")
    v2["game/version.py"] = stamp.replace(b"2.5.6", b"2.5.7").replace(b"5, 6", b"5, 7")
    v2["lib/libgame.so"] = mutate(rng, lib)
    v3 = dict(v2)
    v3["config/settings.ini"] = settings.replace(b"2.5.6", b"2.5.8")
    v3["game/version.py"] = stamp.replace(b"2.5.6", b"2.5.8").replace(b"5, 6", b"5, 8")
    del v3["data/keep.bin"]
    return v1, v2, v3



def test_builder_picks_zstd_patch_when_smaller_and_it_round_trips(work: Path, rng: random.Random) -> None:
    # given three versions where a text file is edited twice and a library once
    for name, files in zip(("v1", "v2", "v3"), _versions(rng), strict=True):
        write_tree(work / name, dict(files))
    # when the deltas are built
    d12, d23 = _delta(work, "v1", "v2"), _delta(work, "v2", "v3")
    # then each changed file took the smallest of the in-memory engines
    for delta, (a, b) in ((d12, ("v1", "v2")), (d23, ("v2", "v3"))):
        for op in delta.ops:
            if op.op != "patch":
                continue
            old_bytes, new_bytes = (work / a / op.path).read_bytes(), (work / b / op.path).read_bytes()
            sizes = {  # in the builder's order: a tie goes to the earlier engine
                hdiff.NAME: len(hdiff.diff_bytes(old_bytes, new_bytes)),
                lzpatch.NAME: len(lzpatch.diff_bytes(old_bytes, new_bytes)),
                zpatch.NAME: len(zpatch.diff_bytes(old_bytes, new_bytes)),
            }
            assert op.blob_size == min(sizes.values()), (op.path, sizes)
            assert op.engine == min(sizes, key=lambda name: sizes[name])
            suffix = {hdiff.NAME: ".hdiff", lzpatch.NAME: ".lzpatch", zpatch.NAME: ".zpatch"}[op.engine]
            assert str(op.blob).endswith(suffix)
    for delta in (d12, d23):
        assert {op.path: op.engine for op in delta.ops if op.op == "patch"}["game/version.py"] == zpatch.NAME
    assert DeltaManifest.from_json((work / "v1-v2" / MANIFEST_NAME).read_bytes()) == d12

    # Chain replay on the server: apply_delta_dir forward, delta after delta.
    clone_tree(work / "v1", work / "replay")
    apply_delta_dir(delta_dir=work / "v1-v2", install_root=work / "replay", work_dir=work / "tmp1")
    apply_delta_dir(delta_dir=work / "v2-v3", install_root=work / "replay", work_dir=work / "tmp2")
    assert snapshot(work / "replay") == snapshot(work / "v3")

    # The patcher: the bundle as downloaded, unpacked, staged, then committed.
    clone_tree(work / "v1", work / "install")
    for name in ("v1-v2", "v2-v3"):
        bundle_delta(delta_dir=work / name, dst=work / f"{name}.tar.zst")
        delta = unpack_bundle(src=work / f"{name}.tar.zst", dest=work / f"{name}-unpacked", max_total_bytes=10**8)
        written = apply_delta_to_stage(
            delta=delta, delta_dir=work / f"{name}-unpacked", source_root=work / "install", stage_dir=work / "stage"
        )
        commit_stage(install_root=work / "install", stage_dir=work / "stage", written=written, removed=delta.removed)
    assert snapshot(work / "install") == snapshot(work / "v3")


def test_builder_leaves_files_over_the_limit_to_hdiff(work: Path, rng: random.Random) -> None:
    v1, v2, _ = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    delta = _delta(work, "v1", "v2", zpatch_max_bytes=1000)
    over = {op.engine for op in delta.ops if op.op == "patch" and (op.target_size or 0) > 1000}
    assert over and over <= {hdiff.NAME, hdiffx.NAME, lzpatch.NAME}
    assert {op.path: op.engine for op in delta.ops}["game/version.py"] == zpatch.NAME  # 144 bytes: under the limit


def test_stage_refuses_a_zstd_patch_on_a_modified_file(work: Path, rng: random.Random) -> None:
    v1, v2, _ = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    delta = _delta(work, "v1", "v2")
    clone_tree(work / "v1", work / "install")
    assert {op.path: op.engine for op in delta.ops}["game/version.py"] == zpatch.NAME
    (work / "install" / "game/version.py").unlink()
    (work / "install" / "game/version.py").write_bytes(v1["game/version.py"].replace(b"VERSION", b"VARSION"))
    with pytest.raises(IntegrityError, match="game/version.py"):
        apply_delta_to_stage(
            delta=delta, delta_dir=work / "v1-v2", source_root=work / "install", stage_dir=work / "stage"
        )
    assert not (work / "stage" / "game/version.py").exists()


def test_manifest_names_unknown_engines_clearly(work: Path, rng: random.Random) -> None:
    v1, v2, _ = _versions(rng)
    write_tree(work / "v1", dict(v1))
    write_tree(work / "v2", dict(v2))
    _delta(work, "v1", "v2")
    doc = json.loads((work / "v1-v2" / MANIFEST_NAME).read_bytes())
    patch = next(op for op in doc["ops"] if op["op"] == "patch")
    assert zpatch.NAME in DIRECT_ENGINES and ENGINES[zpatch.NAME] is zpatch
    patch["engine"] = "zstd-patch-v9"
    with pytest.raises(ManifestError, match="does not know engine 'zstd-patch-v9'; update the patcher"):
        DeltaManifest.from_json(json.dumps(doc).encode())
    patch["engine"] = "rdiff"
    with pytest.raises(ManifestError, match="not allowed in a direct delta"):
        DeltaManifest.from_json(json.dumps(doc).encode())
    patch["engine"] = 7
    with pytest.raises(ManifestError, match="engine must be a string"):
        DeltaManifest.from_json(json.dumps(doc).encode())


def _stub_text(rng: random.Random, lines: int) -> bytes:
    """Lines like a typing stub (`def name(self, arg: type) -> type: ...`), the shape of pygame-ce's .pyi files."""
    words = ["color", "rect", "surface", "vector", "alpha", "blend", "index", "width", "height", "value", "other"]
    types = ["int", "float", "str", "bool", "Color", "Rect", "Sequence[int]", "Optional[Surface]", "None"]
    out = []
    for _ in range(lines):
        name = "_".join(rng.sample(words, rng.randint(1, 3)))
        args = ", ".join(f"{rng.choice(words)}: {rng.choice(types)}" for _ in range(rng.randint(0, 3)))
        out.append(f"    def {name}(self{', ' if args else ''}{args}) -> {rng.choice(types)}: ...\n")
    return "".join(out).encode()


@pytest.mark.needs_tool("zstd")
@pytest.mark.parametrize("shape", ["grown", "edited", "fresh"])
@pytest.mark.parametrize("seed", range(6))
def test_never_larger_than_the_zstd_cli_patch_from(work: Path, shape: str, seed: int) -> None:
    # given an old file and a new one that keeps it and adds several times as much (a stub file that grew:
    # where python-zstandard's raw-content dictionary lost ~1% to the CLI's prefix), edits it in place, or is
    # mostly fresh data (where zstd's levels 19+ encode literals a little worse than the CLI did)
    rng = random.Random(seed)
    if shape == "fresh":
        old = structured_bytes(rng, 60_000)
        new = structured_bytes(rng, 200_000) + old[:20_000] + structured_bytes(rng, 50_000)
    else:
        old = _stub_text(rng, 60 + 40 * seed)
        if shape == "edited":
            new = bytes(mutate(rng, old))
        else:
            new = old[: len(old) // 2] + _stub_text(rng, 200) + old[len(old) // 2 :]
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    # when Mist and `zstd -19 --long=31 --patch-from` both encode it
    blob = zpatch.diff_bytes(old, new)
    subprocess.run(["zstd", "-q", "-f", "-19", "--long=31", f"--patch-from={work / 'old'}", str(work / "new"),
                    "-o", str(work / "cli.zst")], check=True, capture_output=True)
    cli = (work / "cli.zst").stat().st_size
    # then Mist's blob is no larger than the CLI's file (which carries 8 bytes Mist never sends: the frame's magic
    # and its checksum; the rest is within a few bytes, the CLI being an older zstd)
    assert len(blob) <= cli, (len(blob), cli)
    assert zpatch.apply_bytes(old, blob, expected_size=len(new)) == new
