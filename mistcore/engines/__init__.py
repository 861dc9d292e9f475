"""Per-file patch engines, by the name recorded in delta and indirect manifests.

Every engine module has ``apply_file(*, old, patch, out, expected_size, expected_sha256,
old_sha256=None, patch_sha256=None)``, which writes ``out`` atomically and only after the result's
size and SHA-256 match (``IntegrityError`` or ``PatchError`` otherwise, and no ``out`` file):

- ``hdiff``: one in-memory HDiffPatch patch (``engines/hdiff.py``);
- ``hdiff-lzma``: the same diff uncompressed, then compressed whole as raw LZMA with tuned
  literal context (and x86 BCJ for x86 code); in memory, decoding bounded (``engines/hdiffx.py``);
- ``lzma-patch``: raw LZMA2 with the old file as its dictionary, over the new file or over the
  uncompressed HDiffPatch diff (x86 BCJ for x86 code); decoded by the standard library, encoded
  through the system liblzma (``engines/lzpatch.py``);
- ``x86-split``: x86-64 code split into streams of like fields (op bytes, branch targets, displacements,
  immediates), each LZMA2-coded with the old file's same stream as its dictionary (``engines/x86split.py``);
- ``bsdiff-lzma``: bsdiff's matching, its streams re-encoded under raw LZMA; in memory, for files up
  to 16 MiB; wins where a binary changed a little and moved a lot (``engines/bsdiffx.py``);
- ``zstd-patch``: the new file zstd-compressed with the old file as its dictionary, what
  ``zstd --patch-from`` does; in memory, for files up to 4 MiB (``engines/zpatch.py``);
- ``hdiff-window``: HDiffPatch in bounded-memory windows for big files (``engines/windowed.py``);
- ``zstd``: the whole new file, zstd-compressed; ``old`` is ignored (``engines/full.py``);
- ``rdiff``: a librsync delta, applied in a child process with a timeout (``engines/rdiff.py``).
"""

from __future__ import annotations

from types import ModuleType

from mistcore.engines import bsdiffx, full, hdiff, hdiffx, lzpatch, rdiff, windowed, x86split, zpatch

ENGINES: dict[str, ModuleType] = {
    hdiff.NAME: hdiff,
    hdiffx.NAME: hdiffx,
    lzpatch.NAME: lzpatch,
    x86split.NAME: x86split,
    bsdiffx.NAME: bsdiffx,
    zpatch.NAME: zpatch,
    windowed.NAME: windowed,
    full.NAME: full,
    rdiff.NAME: rdiff,
}

# Engines a direct delta may use (rdiff belongs to indirect updates).
DIRECT_ENGINES = frozenset(
    {hdiff.NAME, hdiffx.NAME, lzpatch.NAME, x86split.NAME, bsdiffx.NAME, zpatch.NAME, windowed.NAME, full.NAME}
)

__all__ = ["DIRECT_ENGINES", "ENGINES"]
