"""librsync engine: round trip, wrong basis never hangs, signature validation, interop with Debian's rdiff."""

from __future__ import annotations

import hashlib
import random
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pyrsync
import pytest

from mistcore.engines import ENGINES, rdiff
from mistcore.errors import IntegrityError, PatchError, SignatureError
from mistcore.tests.helpers import mutate, structured_bytes

RDIFF = shutil.which("rdiff")
needs_rdiff = pytest.mark.skipif(RDIFF is None, reason="Debian's rdiff is not installed (apt-get install rdiff)")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def files(work: Path, rng: random.Random) -> tuple[Path, Path, bytes]:
    old = structured_bytes(rng, 700_000)
    new = mutate(rng, old, inserts=4, deletes=2)
    (work / "old").write_bytes(old)
    (work / "new").write_bytes(new)
    return work / "old", work / "new", new


def test_round_trip(work: Path, files: tuple[Path, Path, bytes]) -> None:
    old, new, data = files
    sig_size = rdiff.signature_file(basis=old, out=work / "sig")
    info = rdiff.validate_signature(work / "sig", max_bytes=sig_size, expected_file_size=old.stat().st_size)
    assert info.magic == pyrsync.RS_RK_BLAKE2_SIG_MAGIC and info.strong_len == rdiff.strong_len_for(700_000, 256)
    assert 8 <= info.strong_len <= 12  # librsync's minimum for the size plus 4 bytes, not its 32-byte maximum
    assert sig_size <= 12 + (700_000 // 256 + 1) * (4 + 12)
    delta_size = rdiff.delta_file(signature=work / "sig", new=new, out=work / "delta")
    assert delta_size < len(data) // 4
    rdiff.patch_file(
        basis=old,
        delta=work / "delta",
        out=work / "out",
        expected_size=len(data),
        expected_sha256=_sha(data),
        basis_sha256=_sha(old.read_bytes()),
        timeout=30,
    )
    assert (work / "out").read_bytes() == data
    ENGINES["rdiff"].apply_file(
        old=old,
        patch=work / "delta",
        out=work / "out2",
        expected_size=len(data),
        expected_sha256=_sha(data),
        patch_sha256=_sha((work / "delta").read_bytes()),
    )
    assert (work / "out2").read_bytes() == data


def test_custom_block_len(work: Path, files: tuple[Path, Path, bytes]) -> None:
    old, _, _ = files
    rdiff.signature_file(basis=old, out=work / "sig", block_len=1024)
    info = rdiff.validate_signature(work / "sig", max_bytes=10**7, expected_file_size=old.stat().st_size)
    assert info.block_len == 1024


def test_wrong_basis_terminates(work: Path, files: tuple[Path, Path, bytes], rng: random.Random) -> None:
    old, new, data = files
    rdiff.signature_file(basis=old, out=work / "sig")
    rdiff.delta_file(signature=work / "sig", new=new, out=work / "delta")
    basis = old.read_bytes()
    wrong = {
        "truncated": basis[: len(basis) // 2],  # would make librsync spin forever
        "empty": b"",
        "same size, other bytes": rng.randbytes(len(basis)),
        "one byte changed": basis[:1000] + bytes([basis[1000] ^ 1]) + basis[1001:],
    }
    for name, content in wrong.items():
        (work / "wrong").write_bytes(content)
        start = time.monotonic()
        with pytest.raises((IntegrityError, PatchError)):
            rdiff.patch_file(
                basis=work / "wrong",
                delta=work / "delta",
                out=work / "out",
                expected_size=len(data),
                expected_sha256=_sha(data),
                timeout=10,
            )
        assert time.monotonic() - start < 10, name
        assert not (work / "out").exists(), name
    with pytest.raises(IntegrityError, match="basis"):
        rdiff.patch_file(
            basis=work / "wrong",
            delta=work / "delta",
            out=work / "out",
            expected_size=len(data),
            expected_sha256=_sha(data),
            basis_sha256=_sha(basis),
        )
    assert sorted(p.name for p in work.iterdir()) == ["delta", "new", "old", "sig", "wrong"]


def test_hung_worker_is_killed_at_the_timeout(
    work: Path, files: tuple[Path, Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new, data = files
    rdiff.signature_file(basis=old, out=work / "sig")
    rdiff.delta_file(signature=work / "sig", new=new, out=work / "delta")
    # Stand-in for librsync spinning at 100% CPU inside C code.
    monkeypatch.setattr(rdiff, "WORKER_COMMAND", [sys.executable, "-c", "while True: pass", "--"])
    start = time.monotonic()
    with pytest.raises(PatchError, match="did not finish"):
        rdiff.patch_file(
            basis=old,
            delta=work / "delta",
            out=work / "out",
            expected_size=len(data),
            expected_sha256=_sha(data),
            timeout=1,
        )
    assert time.monotonic() - start < 5
    assert not (work / "out").exists()


def test_output_cap_and_corrupt_delta(work: Path, files: tuple[Path, Path, bytes]) -> None:
    old, new, data = files
    rdiff.signature_file(basis=old, out=work / "sig")
    rdiff.delta_file(signature=work / "sig", new=new, out=work / "delta")
    with pytest.raises(IntegrityError, match="more than"):
        rdiff.patch_file(
            basis=old,
            delta=work / "delta",
            out=work / "out",
            expected_size=1000,
            expected_sha256=_sha(data),
            timeout=10,
        )
    delta = (work / "delta").read_bytes()
    (work / "bad").write_bytes(delta[: len(delta) // 2])
    with pytest.raises(PatchError):
        rdiff.patch_file(
            basis=old,
            delta=work / "bad",
            out=work / "out",
            expected_size=len(data),
            expected_sha256=_sha(data),
            timeout=10,
        )
    (work / "bad").write_bytes(b"\x00\x00\x00\x00" + delta[4:])
    with pytest.raises(PatchError, match="magic"):
        rdiff.patch_file(
            basis=old,
            delta=work / "bad",
            out=work / "out",
            expected_size=len(data),
            expected_sha256=_sha(data),
            timeout=10,
        )
    assert not (work / "out").exists()


def _sig(magic: int, block_len: int, strong_len: int, blocks: int) -> bytes:
    return struct.pack(">III", magic, block_len, strong_len) + bytes((4 + strong_len) * blocks)


@pytest.mark.parametrize(
    ("content", "file_size", "message"),
    [
        (_sig(rdiff.SIGNATURE_MAGIC, 2048, 32, 3)[:-5], 6000, "truncated"),
        (_sig(rdiff.SIGNATURE_MAGIC, 2048, 32, 3)[:8], None, "header"),
        (_sig(0x12345678, 2048, 32, 3), 6000, "magic"),
        (_sig(pyrsync.RS_MD4_SIG_MAGIC, 2048, 16, 3), 6000, "magic"),
        (_sig(pyrsync.RS_DELTA_MAGIC, 2048, 32, 3), 6000, "magic"),
        (_sig(rdiff.SIGNATURE_MAGIC, 2048, 0, 3), 6000, "strong"),
        (_sig(rdiff.SIGNATURE_MAGIC, 2048, 33, 3), 6000, "strong"),
        (_sig(rdiff.SIGNATURE_MAGIC, 1, 32, 3), 6000, "block length"),
        (_sig(rdiff.SIGNATURE_MAGIC, 1 << 30, 32, 3), 6000, "block length"),
        (_sig(rdiff.SIGNATURE_MAGIC, 2048, 32, 4), 6000, "has 4 blocks"),
        # A "signature bomb": many tiny blocks claiming a small file.
        (_sig(rdiff.SIGNATURE_MAGIC, 64, 8, 20_000), 6000, "has 20000 blocks"),
    ],
)
def test_signature_validation_rejects(work: Path, content: bytes, file_size: int | None, message: str) -> None:
    (work / "sig").write_bytes(content)
    with pytest.raises(SignatureError, match=message):
        rdiff.validate_signature(work / "sig", max_bytes=10**7, expected_file_size=file_size)


def test_signature_size_and_block_caps(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (work / "sig").write_bytes(_sig(rdiff.SIGNATURE_MAGIC, 64, 8, 1000))
    with pytest.raises(SignatureError, match="over the limit"):
        rdiff.validate_signature(work / "sig", max_bytes=1000)
    monkeypatch.setattr(rdiff, "MAX_SIG_BLOCKS", 999)
    with pytest.raises(SignatureError, match="over the limit"):
        rdiff.validate_signature(work / "sig", max_bytes=10**7)
    assert rdiff.parse_signature_header(_sig(rdiff.SIGNATURE_MAGIC, 4096, 32, 0)).block_len == 4096


@needs_rdiff
@pytest.mark.needs_tool("rdiff")
def test_interop_mistcore_delta_applies_with_rdiff(work: Path, files: tuple[Path, Path, bytes]) -> None:
    old, new, data = files
    assert RDIFF is not None
    rdiff.signature_file(basis=old, out=work / "sig")
    rdiff.delta_file(signature=work / "sig", new=new, out=work / "delta")
    subprocess.run([RDIFF, "patch", str(old), str(work / "delta"), str(work / "out")], check=True, timeout=60)
    assert (work / "out").read_bytes() == data


@needs_rdiff
@pytest.mark.needs_tool("rdiff")
def test_interop_rdiff_delta_applies_with_mistcore(work: Path, files: tuple[Path, Path, bytes]) -> None:
    old, new, data = files
    assert RDIFF is not None
    subprocess.run([RDIFF, "signature", str(old), str(work / "sig")], check=True, timeout=60)
    rdiff.validate_signature(work / "sig", max_bytes=10**7, expected_file_size=old.stat().st_size)
    subprocess.run([RDIFF, "delta", str(work / "sig"), str(new), str(work / "delta")], check=True, timeout=60)
    rdiff.patch_file(
        basis=old,
        delta=work / "delta",
        out=work / "out",
        expected_size=len(data),
        expected_sha256=_sha(data),
        timeout=30,
    )
    assert (work / "out").read_bytes() == data
    # And an rdiff signature (with the older BLAKE2 rollsum) drives a mistcore delta.
    subprocess.run([RDIFF, "signature", "--rollsum=rollsum", str(old), str(work / "sig2")], check=True, timeout=60)
    assert rdiff.validate_signature(work / "sig2", max_bytes=10**7).magic == pyrsync.RS_BLAKE2_SIG_MAGIC
    rdiff.delta_file(signature=work / "sig2", new=new, out=work / "delta2")
    subprocess.run([RDIFF, "patch", str(old), str(work / "delta2"), str(work / "out2")], check=True, timeout=60)
    assert (work / "out2").read_bytes() == data
