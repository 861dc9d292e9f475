"""The ``zstd`` engine: the blob is the whole new file as one zstd frame; no basis is needed.

Decompression is capped at ``expected_size`` and checked for truncation (``mistcore.zstdio``),
then the size and SHA-256 are verified before the file is renamed into place.
"""

from __future__ import annotations

from pathlib import Path

from mistcore.errors import IntegrityError
from mistcore.fsutil import sha256_file
from mistcore.zstdio import compress_file, decompress_file

NAME = "zstd"


def diff_file(*, old: Path | None, new: Path, out: Path, level: int = 19) -> int:
    """Compress ``new`` whole into ``out``; ``old`` is ignored. Returns the blob size."""
    return compress_file(new, out, level=level)


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
    """Decompress the blob into ``out`` atomically if it has the expected size and SHA-256."""
    if patch_sha256 is not None and sha256_file(patch) != patch_sha256:
        raise IntegrityError(f"{patch}: blob is corrupt (SHA-256 mismatch)")
    decompress_file(
        Path(patch),
        Path(out),
        max_output=expected_size,
        expected_size=expected_size,
        expected_sha256=expected_sha256,
    )
