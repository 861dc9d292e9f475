"""The ``rdiff`` engine: librsync signatures, deltas and patches, byte-compatible with Debian's ``rdiff``.

Signature file (librsync, big-endian)::

    u32 magic  u32 block_len  u32 strong_len   then per block of the basis:  u32 weak sum, strong_len bytes

``magic`` is one of librsync's BLAKE2 magics: ``RS_RK_BLAKE2_SIG_MAGIC`` (0x72730147, Rabin-Karp
rolling sum, what ``rdiff signature`` and ``rs_sig_args`` pick by default, used by
``signature_file``) or ``RS_BLAKE2_SIG_MAGIC`` (0x72730137). MD4 signatures are refused: a client
could craft MD4 collisions. The block count must be exactly ``ceil(basis_size / block_len)``
when the basis size is known, which with the byte cap stops "signature bombs" (librsync builds an
in-memory hash table over every block).

Delta file: librsync's delta format (magic 0x72730236 then literal/copy commands).

Patching runs librsync in a child process (``python -m mistcore.engines.rdiff_worker``) with a
hard timeout and an output byte cap: librsync can spin forever at 100% CPU when a delta copies
past the end of a wrong or truncated basis, and no signal handler can stop that C loop. The
result is then checked (size and SHA-256) before an atomic rename.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyrsync

from mistcore.errors import BasisMismatch, IntegrityError, PatchError, SignatureError
from mistcore.fsutil import _temp_name, atomic_write, fsync_dir, open_regular, sha256_file

NAME = "rdiff"
SIGNATURE_MAGIC = pyrsync.RS_RK_BLAKE2_SIG_MAGIC
ALLOWED_MAGICS = frozenset({pyrsync.RS_RK_BLAKE2_SIG_MAGIC, pyrsync.RS_BLAKE2_SIG_MAGIC})
DELTA_MAGIC = pyrsync.RS_DELTA_MAGIC
MIN_BLOCK_LEN = 64
MAX_BLOCK_LEN = 16 << 20
MAX_STRONG_LEN = 32  # BLAKE2b-256 truncated, librsync's own maximum
MIN_STRONG_LEN = 8
MAX_SIG_BLOCKS = 8 << 20
_SIG_HEADER = struct.Struct(">III")

# Child process exit codes (see rdiff_worker).
EXIT_OUTPUT_CAP = 3
EXIT_BASIS_OVERRUN = 4
EXIT_LIBRSYNC = 5

# Command that runs the worker; a frozen patcher may point this at its own entry point.
WORKER_COMMAND: list[str] | None = None


@dataclass(frozen=True)
class SigInfo:
    """Header fields of an rdiff signature."""

    magic: int
    block_len: int
    strong_len: int


def parse_signature_header(data: bytes) -> SigInfo:
    """Decode and range-check the 12-byte signature header; SignatureError if invalid."""
    if len(data) < _SIG_HEADER.size:
        raise SignatureError("signature is shorter than its 12-byte header")
    magic, block_len, strong_len = _SIG_HEADER.unpack(data[: _SIG_HEADER.size])
    if magic not in ALLOWED_MAGICS:
        raise SignatureError(f"signature has magic {magic:#x}, expected a librsync BLAKE2 signature")
    if not MIN_BLOCK_LEN <= block_len <= MAX_BLOCK_LEN:
        raise SignatureError(f"signature block length {block_len} is outside {MIN_BLOCK_LEN}..{MAX_BLOCK_LEN}")
    if not MIN_STRONG_LEN <= strong_len <= MAX_STRONG_LEN:
        raise SignatureError(f"signature strong sum length {strong_len} is outside {MIN_STRONG_LEN}..{MAX_STRONG_LEN}")
    return SigInfo(magic=magic, block_len=block_len, strong_len=strong_len)


def validate_signature(path: Path, *, max_bytes: int, expected_file_size: int | None = None) -> SigInfo:
    """Check a signature file's size, header and block count; SignatureError if anything is off."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise SignatureError(f"signature is {size} bytes, over the limit of {max_bytes}")
    with open(path, "rb") as f:
        info = parse_signature_header(f.read(_SIG_HEADER.size))
    body = size - _SIG_HEADER.size
    per_block = 4 + info.strong_len
    if body % per_block:
        raise SignatureError("signature is truncated (its size is not a whole number of blocks)")
    blocks = body // per_block
    if blocks > MAX_SIG_BLOCKS:
        raise SignatureError(f"signature has {blocks} blocks, over the limit of {MAX_SIG_BLOCKS}")
    if expected_file_size is not None:
        expected = -(-expected_file_size // info.block_len)
        if blocks != expected:
            raise SignatureError(
                f"signature has {blocks} blocks, but a {expected_file_size}-byte file with "
                f"{info.block_len}-byte blocks has {expected}"
            )
    return info


STRONG_MARGIN_BITS = 32  # over librsync's minimum: a false block match stays a one in four billion event


def strong_len_for(file_size: int, block_len: int) -> int:
    """The strong sum length for a basis: librsync's own minimum (rs_sig_args with strong_len -1: enough bits
    for the file's size and block count) plus STRONG_MARGIN_BITS, not its 32-byte maximum. A signature is
    4 + strong_len bytes per block (36 of every 256 bytes of a small file at the maximum); a false match could
    only give wrong bytes, which every caller refuses by sha256."""
    blocks = file_size // max(block_len, 1) + 1
    minimum = 2 + ((file_size + (1 << 24)).bit_length() - 1 + blocks.bit_length() - 1 + 7) // 8
    return max(MIN_STRONG_LEN, min(MAX_STRONG_LEN, minimum + STRONG_MARGIN_BITS // 8))


def signature_args(file_size: int, *, block_len: int | None = None) -> SigInfo:
    """librsync's recommended block length for a basis of ``file_size`` bytes, and a strong sum long enough
    for it (``strong_len_for``)."""
    magic, blen, _max = pyrsync.get_signature_args(file_size, SIGNATURE_MAGIC, block_len or 0, 0)
    return SigInfo(magic=magic, block_len=blen, strong_len=strong_len_for(file_size, blen))


def signature_file(*, basis: Path, out: Path, block_len: int | None = None) -> int:
    """Write the rdiff signature of ``basis`` to ``out`` atomically; return its size."""
    with open_regular(Path(basis)) as fin:
        info = signature_args(os.fstat(fin.fileno()).st_size, block_len=block_len)
        with atomic_write(out) as fout:
            pyrsync.signature(fin, fout, info.strong_len, info.magic, info.block_len)
    return os.path.getsize(out)


def delta_file(*, signature: Path, new: Path, out: Path) -> int:
    """Write the rdiff delta from a (validated) signature to ``new`` atomically; return its size."""
    # A cheap structural check; callers holding untrusted signatures run validate_signature first.
    validate_signature(signature, max_bytes=os.path.getsize(signature))
    with open(signature, "rb") as fsig, open_regular(Path(new)) as fnew, atomic_write(out) as fout:
        try:
            pyrsync.delta(fnew, fsig, fout)
        except Exception as exc:  # librsync's error class is not exported by pyrsync
            raise SignatureError(f"librsync could not use the signature: {exc}") from None
    return os.path.getsize(out)


def _worker_command() -> list[str]:
    if WORKER_COMMAND is not None:
        return list(WORKER_COMMAND)
    return [sys.executable, "-m", "mistcore.engines.rdiff_worker"]


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this very mistcore, wherever the parent's working directory is.
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
    return env


def patch_file(
    *,
    basis: Path,
    delta: Path,
    out: Path,
    expected_size: int,
    expected_sha256: str,
    timeout: float = 300,
    basis_sha256: str | None = None,
) -> None:
    """Apply an rdiff delta in a child process (timeout, output cap); rename ``out`` into place if verified."""
    if basis_sha256 is not None and sha256_file(basis) != basis_sha256:
        raise BasisMismatch(f"{basis}: the basis file is not the expected version (SHA-256 mismatch)")
    with open(delta, "rb") as f:
        head = f.read(4)
    if len(head) != 4 or struct.unpack(">I", head)[0] != DELTA_MAGIC:
        raise PatchError(f"{delta}: not an rdiff delta (bad magic)")
    out = Path(out)
    tmp = _temp_name(out)
    cmd = [*_worker_command(), str(basis), str(delta), str(tmp), str(expected_size)]
    try:
        try:
            proc = subprocess.run(
                cmd, env=_worker_env(), stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            # subprocess.run has already killed and reaped the child.
            raise PatchError(
                f"{out.name}: rdiff patch did not finish in {timeout} s (wrong basis or corrupt delta)"
            ) from None
        if proc.returncode == EXIT_OUTPUT_CAP:
            raise IntegrityError(f"{out.name}: rdiff patch produced more than {expected_size} bytes")
        if proc.returncode == EXIT_BASIS_OVERRUN:
            raise IntegrityError(f"{out.name}: the delta reads past the end of the basis (wrong basis file)")
        if proc.returncode != 0:
            detail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise PatchError(f"{out.name}: rdiff patch failed (exit {proc.returncode}): {detail[0]}")
        size = os.path.getsize(tmp)
        if size != expected_size:
            raise IntegrityError(f"{out.name}: rdiff patch produced {size} bytes, expected {expected_size}")
        if sha256_file(tmp) != expected_sha256:
            raise IntegrityError(f"{out.name}: patched result has the wrong SHA-256 (wrong basis or corrupt delta)")
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        if tmp.exists():
            os.unlink(tmp)


def apply_file(
    *,
    old: Path,
    patch: Path,
    out: Path,
    expected_size: int,
    expected_sha256: str,
    old_sha256: str | None = None,
    patch_sha256: str | None = None,
) -> None:
    """The common engine interface over ``patch_file``."""
    if patch_sha256 is not None and sha256_file(patch) != patch_sha256:
        raise IntegrityError(f"{patch}: delta file is corrupt (SHA-256 mismatch)")
    patch_file(
        basis=old,
        delta=patch,
        out=out,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        basis_sha256=old_sha256,
    )
