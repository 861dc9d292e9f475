"""hdiff, hdiff-window and zstd engines: round trips, wrong basis, corrupt patches, bounded memory."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from mistcore.engines import ENGINES, full, hdiff, windowed
from mistcore.errors import IntegrityError, PatchError
from mistcore.tests.helpers import (
    apply_engine,
    assert_bit_flips_refused,
    mutate,
    only_files,
    sha_hex,
    structured_bytes,
    write_big,
)
from mistcore.zstdio import compress_bytes


@pytest.fixture
def pair(work: Path, rng: random.Random) -> tuple[Path, Path, bytes]:
    old = structured_bytes(rng, 600_000)
    new = mutate(rng, old)
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    return work / "old", work / "new", new


def test_hdiff_round_trip(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    size = hdiff.diff_file(old=old, new=new, out=work / "p", level=19)
    assert size == (work / "p").stat().st_size < len(compress_bytes(data)) // 10
    assert hdiff.read_header((work / "p").read_bytes()) == (len(data), old.stat().st_size)
    hdiff.apply_file(
        old=old,
        patch=work / "p",
        out=work / "out",
        expected_size=len(data),
        expected_sha256=sha_hex(data),
        old_sha256=sha_hex(old.read_bytes()),
        patch_sha256=sha_hex((work / "p").read_bytes()),
    )
    assert (work / "out").read_bytes() == data


def test_hdiff_fast_matching_gives_the_same_diff(pair: tuple[Path, Path, bytes]) -> None:
    """The builder's diff uses HDiffPatch's match cache for speed: the bytes must be the plain search's."""
    import hdiffpatch

    old, new = pair[0].read_bytes(), pair[1].read_bytes()
    plain = hdiffpatch.diff(old, new, compression=None, validate=False)
    assert hdiff.uncompressed_diff(old, new, match_cache=True) == plain
    assert hdiffpatch.apply(old, plain) == new


def test_hdiff_blobs_of_every_compressor_apply(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    """Builders before this one also tried lzma (LZMA1) for hdiff blobs; patchers must keep applying those,
    and the builder's own choices (zstd, lzma2) as well."""
    import hdiffpatch

    old, new, data = pair
    raw = hdiff.uncompressed_diff(old.read_bytes(), data)
    made = [blob for call in hdiff.compressions(raw, new_size=len(data), level=19) if (blob := call()) is not None]
    assert len(made) == 2 and made[0].startswith(b"HDIFF13&zstd\0") and made[1].startswith(b"HDIFF13&lzma2\0")
    assert hdiff.compress_diff(raw, new_size=len(data), level=19) == min(made, key=len)
    legacy = hdiffpatch.recompress(raw, hdiffpatch.LzmaConfig(level=9, window=20))
    assert legacy.startswith(b"HDIFF13&lzma\0")
    for i, blob in enumerate([*made, legacy]):
        (work / f"p{i}").write_bytes(blob)
        hdiff.apply_file(old=old, patch=work / f"p{i}", out=work / f"out{i}", expected_size=len(data),
                         expected_sha256=sha_hex(data), old_sha256=sha_hex(old.read_bytes()), patch_sha256=sha_hex(blob))
        assert (work / f"out{i}").read_bytes() == data


def test_hdiff_wrong_basis_is_caught_and_nothing_written(
    work: Path, pair: tuple[Path, Path, bytes], rng: random.Random
) -> None:
    old, new, data = pair
    hdiff.diff_file(old=old, new=new, out=work / "p")
    other = bytearray(old.read_bytes())
    other[1000:1010] = b"0123456789"  # same size, different bytes: HDiffPatch alone would not notice
    (work / "other").write_bytes(bytes(other))
    with pytest.raises(IntegrityError, match="basis"):
        hdiff.apply_file(
            old=work / "other",
            patch=work / "p",
            out=work / "out",
            expected_size=len(data),
            expected_sha256=sha_hex(data),
            old_sha256=sha_hex(old.read_bytes()),
        )
    with pytest.raises(IntegrityError, match="SHA-256"):
        hdiff.apply_file(
            old=work / "other", patch=work / "p", out=work / "out", expected_size=len(data), expected_sha256=sha_hex(data)
        )
    (work / "short").write_bytes(old.read_bytes()[:-1])
    with pytest.raises(IntegrityError, match="basis"):
        hdiff.apply_file(
            old=work / "short", patch=work / "p", out=work / "out", expected_size=len(data), expected_sha256=sha_hex(data)
        )
    only_files(work, "old", "new", "p", "other", "short")


def test_hdiff_corrupt_patch_never_writes_wrong_bytes(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    hdiff.diff_file(old=old, new=new, out=work / "p")
    patch = (work / "p").read_bytes()
    assert_bit_flips_refused(work, patch, lambda bad: apply_engine(hdiff, work, old, bad, data), trials=40)
    (work / "bad").write_bytes(patch[: len(patch) // 2])
    with pytest.raises((IntegrityError, PatchError)):
        hdiff.apply_file(
            old=old, patch=work / "bad", out=work / "out", expected_size=len(data), expected_sha256=sha_hex(data)
        )
    with pytest.raises(PatchError, match="declares"):
        hdiff.apply_file(
            old=old, patch=work / "p", out=work / "out", expected_size=len(data) + 1, expected_sha256=sha_hex(data)
        )
    with pytest.raises(PatchError, match="limit"):
        hdiff.apply_file(old=old, patch=work / "p", out=work / "out", expected_size=1 << 40, expected_sha256=sha_hex(data))
    (work / "bad").write_bytes(b"garbage")
    with pytest.raises(PatchError, match="HDIFF13"):
        hdiff.apply_file(
            old=old, patch=work / "bad", out=work / "out", expected_size=len(data), expected_sha256=sha_hex(data)
        )
    assert not (work / "out").exists()


def test_hdiff_empty_files(work: Path) -> None:
    (work / "empty").write_bytes(b"")
    (work / "some").write_bytes(b"some bytes")
    for a, b in (("empty", "some"), ("some", "empty"), ("empty", "empty")):
        hdiff.diff_file(old=work / a, new=work / b, out=work / "p")
        data = (work / b).read_bytes()
        hdiff.apply_file(
            old=work / a, patch=work / "p", out=work / "o", expected_size=len(data), expected_sha256=sha_hex(data)
        )
        assert (work / "o").read_bytes() == data


def test_zstd_engine(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    _, new, data = pair
    full.diff_file(old=None, new=new, out=work / "blob", level=3)
    ENGINES["zstd"].apply_file(
        old=None, patch=work / "blob", out=work / "o", expected_size=len(data), expected_sha256=sha_hex(data)
    )
    assert (work / "o").read_bytes() == data
    with pytest.raises(IntegrityError):
        ENGINES["zstd"].apply_file(
            old=None, patch=work / "blob", out=work / "o2", expected_size=len(data), expected_sha256="0" * 64
        )
    assert not (work / "o2").exists()


def _shifted_pair(seed: int = 7) -> tuple[bytes, bytes]:
    # Shifts bigger than half of a small window: the case where aligning windows matters.
    rng = random.Random(seed)
    old = structured_bytes(rng, 4 << 20)
    m = 1 << 20
    new = old[:m] + rng.randbytes(48_000) + old[m : 3 * m] + old[3 * m + 200_000 :]
    return old, mutate(rng, new, inserts=2, deletes=1, edits=20)


def test_windowed_round_trip_with_shifts(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    size = windowed.diff_file(old=old, new=new, out=work / "w", window=64 << 10)
    assert size < len(compress_bytes(data)) // 5
    windowed.apply_file(
        old=old,
        patch=work / "w",
        out=work / "o",
        expected_size=len(data),
        expected_sha256=sha_hex(data),
        old_sha256=sha_hex(old.read_bytes()),
        patch_sha256=sha_hex((work / "w").read_bytes()),
    )
    assert (work / "o").read_bytes() == data


def test_windowed_vs_plain_hdiff_size(work: Path) -> None:
    old, new = _shifted_pair()
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    plain = hdiff.diff_file(old=work / "old", new=work / "new", out=work / "p")
    same_offset = windowed.diff_file(old=work / "old", new=work / "new", out=work / "w0", window=64 << 10, align=False)
    aligned = windowed.diff_file(old=work / "old", new=work / "new", out=work / "w1", window=64 << 10)
    # Figures quoted in engines/windowed.py's docstring.
    print(f"plain hdiff {plain}, windowed same-offset {same_offset}, windowed aligned {aligned}")
    assert aligned < plain * 1.5
    assert same_offset > aligned * 5
    for patch in ("w0", "w1"):
        windowed.apply_file(
            old=work / "old", patch=work / patch, out=work / "o", expected_size=len(new), expected_sha256=sha_hex(new)
        )
        assert (work / "o").read_bytes() == new


def test_windowed_copy_windows_skip_hdiff(work: Path, rng: random.Random) -> None:
    # 16 windows of 4 KiB; 3 KiB inserted in window 5: the windows after it are copies at drift -3 KiB.
    old = rng.randbytes(16 * 4096)
    new = old[: 5 * 4096] + rng.randbytes(3072) + old[5 * 4096 :]
    new = new[:40_000] + b"edited!" + new[40_007:]
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    size = windowed.diff_file(old=work / "old", new=work / "new", out=work / "w", window=4096)
    patch = (work / "w").read_bytes()
    header = len(windowed.MAGIC) + windowed._HEADER.size
    pos, kinds = header, []
    while pos < len(patch):
        old_offset, old_len, new_len, patch_len = windowed._WINDOW.unpack_from(patch, pos)
        kinds.append("copy" if patch_len == 0 else "diff")
        if patch_len == 0:
            assert old_len == new_len and old[old_offset : old_offset + old_len] == new[len(kinds) * 4096 - 4096 :][:new_len]
        pos += windowed._WINDOW.size + patch_len
    assert kinds.count("copy") >= 10, kinds
    assert kinds[:5] == ["copy"] * 5
    assert size < 3072 + 4 * 4096, size
    windowed.apply_file(
        old=work / "old", patch=work / "w", out=work / "o", expected_size=len(new), expected_sha256=sha_hex(new)
    )
    assert (work / "o").read_bytes() == new
    # A copy record pointing elsewhere in the basis gives other bytes: caught by the SHA-256, nothing written.
    first = bytearray(patch)
    windowed._WINDOW.pack_into(first, header, 4096, 4096, 4096, 0)
    (work / "bad").write_bytes(bytes(first))
    with pytest.raises(IntegrityError):
        windowed.apply_file(
            old=work / "old", patch=work / "bad", out=work / "o2", expected_size=len(new), expected_sha256=sha_hex(new)
        )
    assert not (work / "o2").exists()
    # A copy record whose lengths disagree is refused as a malformed patch.
    windowed._WINDOW.pack_into(first, header, 0, 4000, 4096, 0)
    (work / "bad").write_bytes(bytes(first))
    with pytest.raises(PatchError, match="copy window"):
        windowed.apply_file(
            old=work / "old", patch=work / "bad", out=work / "o2", expected_size=len(new), expected_sha256=sha_hex(new)
        )


def test_windowed_edge_sizes(work: Path, rng: random.Random) -> None:
    cases = {
        "empty->some": (b"", rng.randbytes(10_000)),
        "some->empty": (rng.randbytes(10_000), b""),
        "exact windows": (rng.randbytes(8192), rng.randbytes(3 * 4096)),
        "tiny": (b"a", b"b"),
    }
    for name, (old, new) in cases.items():
        (work / "old").write_bytes(old)
        (work / "new").write_bytes(new)
        windowed.diff_file(old=work / "old", new=work / "new", out=work / "w", window=4096)
        windowed.apply_file(
            old=work / "old", patch=work / "w", out=work / "o", expected_size=len(new), expected_sha256=sha_hex(new)
        )
        assert (work / "o").read_bytes() == new, name


def test_windowed_wrong_basis_and_corruption(work: Path, pair: tuple[Path, Path, bytes]) -> None:
    old, new, data = pair
    windowed.diff_file(old=old, new=new, out=work / "w", window=64 << 10)
    patch = (work / "w").read_bytes()
    other = bytearray(old.read_bytes())
    other[70_000:70_016] = bytes(16)
    (work / "other").write_bytes(bytes(other))
    with pytest.raises(IntegrityError):
        windowed.apply_file(
            old=work / "other", patch=work / "w", out=work / "o", expected_size=len(data), expected_sha256=sha_hex(data)
        )
    with pytest.raises(IntegrityError, match="basis"):
        windowed.apply_file(
            old=work / "other",
            patch=work / "w",
            out=work / "o",
            expected_size=len(data),
            expected_sha256=sha_hex(data),
            old_sha256=sha_hex(old.read_bytes()),
        )
    bad_cases = {
        "magic": b"MISTWIN2" + patch[8:],
        "truncated": patch[: len(patch) - 100],
        "trailing": patch + b"x",
        "window count": patch[:8] + patch[8:32] + (999).to_bytes(4, "big") + patch[36:],
    }
    rng = random.Random(3)
    for i in range(20):
        flipped = bytearray(patch)
        flipped[rng.randrange(36, len(patch))] ^= 0x10
        bad_cases[f"flip {i}"] = bytes(flipped)
    for name, bad in bad_cases.items():
        (work / "bad").write_bytes(bad)
        with pytest.raises((IntegrityError, PatchError)):
            windowed.apply_file(
                old=old, patch=work / "bad", out=work / "o", expected_size=len(data), expected_sha256=sha_hex(data)
            )
        assert not (work / "o").exists(), name
    with pytest.raises(PatchError, match="declares"):
        windowed.apply_file(
            old=old, patch=work / "w", out=work / "o", expected_size=len(data) - 1, expected_sha256=sha_hex(data)
        )


_MEMORY_PROBE = r"""
import json, resource, sys
from pathlib import Path
from mistcore.engines import windowed
from mistcore.fsutil import sha256_file

def peak_mib():
    # VmHWM restarts at exec; ru_maxrss would carry over the forking pytest process's peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

work = Path(sys.argv[1])
window = int(sys.argv[2])
base = peak_mib()
windowed.diff_file(old=work / "old", new=work / "new", out=work / "w", window=window, level=1)
after_diff = peak_mib()
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM so the apply peak is measured on its own
except OSError:
    pass
apply_base = peak_mib()
windowed.apply_file(old=work / "old", patch=work / "w", out=work / "o",
                    expected_size=(work / "new").stat().st_size, expected_sha256=sys.argv[3])
after_apply = peak_mib()
print(json.dumps({"base": base, "diff": after_diff, "apply_base": apply_base, "apply": after_apply,
                  "patch": (work / "w").stat().st_size}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units differ outside Linux")
def test_windowed_memory_is_bounded(work: Path) -> None:
    # 32 MiB files with 512 KiB windows: peak memory must track the window, not the file.
    size = 32 << 20
    write_big(work / "old", [("random", size)], seed=1)
    h = hashlib.sha256()
    with open(work / "old", "rb") as src, open(work / "new", "wb") as dst:
        # new = old[:8M] + 2 MiB inserted + old[8M:20M] + old[23M:] (3 MiB deleted), streamed.
        for start, length in ((0, 8 << 20), (None, 2 << 20), (8 << 20, 12 << 20), (23 << 20, size)):
            if start is None:
                chunk = random.Random(2).randbytes(length)
                dst.write(chunk)
                h.update(chunk)
                continue
            src.seek(start)
            left = length
            while left and (chunk := src.read(min(left, 1 << 20))):
                dst.write(chunk)
                h.update(chunk)
                left -= len(chunk)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(work), str(512 << 10), h.hexdigest()],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout)
    print(
        f"peak RSS MiB: baseline {m['base']:.1f}, diff peak {m['diff']:.1f}, apply peak {m['apply']:.1f} "
        f"(from {m['apply_base']:.1f}); patch {m['patch']} bytes"
    )
    assert m["diff"] - m["base"] < 16, m  # the file is 32 MiB, the window 512 KiB
    assert m["apply"] - m["base"] < 16, m
    assert m["patch"] < (2 << 20) + (1 << 20)  # about the inserted random bytes
    assert (work / "o").stat().st_size == (work / "new").stat().st_size
