"""Direct deltas between two versions (``mist-delta/1``): build, bundle, stage and commit.

A delta folder holds ``delta_manifest.json`` plus the blobs it names::

    delta_manifest.json
    patches/000003.hdiff      HDiffPatch patch (engine "hdiff") or windowed patch (".hdiffw", "hdiff-window")
    patches/000004.hdiffx     uncompressed HDiffPatch diff in one raw LZMA stream (engine "hdiff-lzma")
    patches/000008.lzpatch    LZMA2 with the old file as dictionary, of the new file or the diff ("lzma-patch")
    patches/000009.x86split   x86-64 code split into streams, each LZMA2 with the old file's as dictionary ("x86-split")
    patches/000005.zpatch     zstd frame with the old file as prefix (engine "zstd-patch")
    patches/000006.bsdiffx    bsdiff's streams, re-encoded and LZMA-compressed (engine "bsdiff-lzma")
    new_files/000007.zst      a whole new file, zstd-compressed (engine "zstd")

``delta_manifest.json`` (sorted keys, no whitespace)::

    {"format": "mist-delta/1", "from_version": "1.0", "to_version": "1.1",
     "from_content_hash": "<hex>", "to_content_hash": "<hex>", "created_by": "mistcore/0.1.0",
     "download_size": <sum of the distinct blobs' sizes>,
     "ops": [{"op": ..., "path": ..., "target_size", "target_sha256", "executable", "source_path",
              "source_sha256", "source_size", "engine", "blob", "blob_size", "blob_sha256"}, ...]}

Every op has every key (null where it does not apply); ops are sorted by path, one per path.
What each op needs:

- ``copy``: the content already exists in the old version at ``source_path`` (a move, a rename,
  a duplicate, or only the executable bit changed): no blob, nothing on the wire.
- ``patch``: ``engine`` "hdiff", "hdiff-lzma", "lzma-patch", "x86-split", "zstd-patch", "bsdiff-lzma" or
  "hdiff-window" turns the old file
  ``source_path`` (the same path, or a similar old file for a renamed-and-changed file) into the
  target with ``blob``.
- ``add``: ``engine`` "zstd", ``blob`` is the whole file compressed; no basis needed. Used for new
  files and for changed files whose patch is not smaller than the compressed file.
- ``remove``: the old file at ``path`` (``source_sha256``/``source_size``) is deleted.

Unchanged files have no op. Identical new content is encoded once: later paths with the same
SHA-256 reuse the first one's blob. ``blob_size`` / ``target_size`` per op gives the patch
efficiency report. An engine this code does not know is refused when the manifest is read
("update the patcher") before any file is touched.

Choosing the engine of a changed file: files over ``hdiff_max_bytes`` use ``hdiff-window``.
Smaller ones get one uncompressed HDiffPatch diff, compressed as an ``hdiff`` patch (zstd, or LZMA2)
and, at level 19 and up, as an ``lzma-patch`` blob: raw LZMA2 with the old file as its dictionary,
over the diff and, where hdiff's patch is at least 1/``LZMA_FILE_SHARE`` (1/12) of the file or the
file is at most 256 KiB, over the new file itself (x86 BCJ too for x86 code). Where this machine
cannot encode lzma-patch (no loadable liblzma) or the old file and the diff are over its 32 MiB
dictionary, the diff goes in one raw LZMA stream without the dictionary (``hdiff-lzma``) instead.
Both are skipped when the hdiff patch is over 90% of the diff (fresh incompressible bytes, where
LZMA only adds its overhead), and on files that are not executables over ``HDIFFX_ANY_BYTES``, 1 MiB
(every hdiff-lzma win measured on pygame-ce was an executable or a file under 20 KB, and on a 10 MB
pack of data it lost by 1.6%). lzma-patch over the new file is the update's big win on libraries
with much new code (pygame-ce 2.5.6 -> 2.5.7, libharfbuzz 11.3 -> 12.1: 359,824 bytes against
hdiff's 382,345), over the diff it is hdiff-lzma plus the short matches the dictionary finds. The
whole update: 1,478,276 -> 1,406,710 bytes bundled (2.5.5 -> 2.5.7: 2,115,066 -> 1,985,178 bytes of
blobs); with zstd-patch left out where lzma-patch runs on an executable over 256 KiB (it never won
there) and the old file BCJ-filtered once, the build takes what it took before (8.6 -> 8.8 s, 15.1 ->
15.4 s on 2 cores; peak RSS 163 -> 170 MB). When neither file is over ``zpatch_max_bytes`` (4 MiB), a
``zstd-patch`` blob too (not on those executables); and for executables
(ELF, PE, Mach-O: what bsdiff is made for) a ``bsdiff-lzma`` blob where it is cheap or likely to win:
both files up to 256 KiB, or up to 16 MiB when the best patch so far is under 1/16 of the new file (a
binary that changed a little and moved a lot; bsdiff's suffix sort costs 16 bytes per old byte and
~0.3 s per MB). For x86-64 code (an ELF or PE code section) an ``x86-split`` blob too, where
lzma-patch runs: the code split into streams of like fields (op bytes, call targets, jumps,
displacements, immediates), each LZMA2-coded against the old file's same stream. It wins wherever much
code is new (19 files of the pygame-ce 2.5.6 -> 2.5.7 update; its blobs 1,371,177 -> 1,197,086 bytes;
the build 11.7 -> 15.6 s on 2 cores). The smallest wins (a tie goes to the earlier of hdiff,
lzma-patch or hdiff-lzma, x86-split, zstd-patch, bsdiff-lzma), then the whole compressed file if that
is not bigger; a winning lzma-patch or x86-split blob is decoded first, the patcher's way, and dropped
if it does not give the new file. The engines win on different files: zstd-patch on text and small
files (version stamps, docs, scripts: its repeat offsets and 8 bytes less framing), x86-split on x86-64
code with much new code, lzma-patch on other native code and on text with new passages, bsdiff-lzma on
executables that barely changed (a patch release of a library), hdiff on the rest. On the pygame-ce
2.5.6 -> 2.5.7 update (178 changed files, same path; before x86-split) against the best per-file tool (zstd --patch-from, 230,736 bytes): hdiff alone 0.928,
hdiff-lzma alone 0.900, zstd-patch alone 0.981, hdiff or zstd-patch 0.899, all three 0.871
(201,000 bytes: 161 zstd-patch, 17 hdiff-lzma); its 16 renamed-and-changed files 0.940 -> 0.929.
On gen-100M (generated data) hdiff-lzma never wins: 0.999 either way, the fresh random data of
one pack being most of it.

A file that has no old version at its own path but looks like a renamed one (``_SimilarIndex``: same
name elsewhere, same name with other digits, same extension and a near size) is diffed against that
guess only when a fast zstd patch (``zpatch.basis_ratio``, level 3, a few ms per MB) is under
``GUESSED_BASIS_MAX_RATIO`` of the file compressed alone: a renamed original measures ~0.001, another
level or track of the same size ~1.0, and diffing that with every engine cost the most of a backward
jump's time (gen-40M 5.0 -> 1.0: 12 look-alikes, about 4 of ~7 CPU seconds, for patches 0.1% smaller
than the file).
When one file's uncompressed diff is 1-16 MiB, its compressions (hdiff's zstd and LZMA2, zstd-patch)
run on two threads at once: a big changed pack is otherwise the build's critical path while the
other core idles (a 10 MB pack with 2.4 MB of new data, with hdiff-lzma and LZMA1 no longer tried: 2.6 -> 1.6 s,
the same blob).

Why 4 MiB (measured when zstd-patch loaded the old file as a raw-content dictionary, before it took
it as a prefix like the CLI; not re-measured since): zstd's long-distance matcher does not search
dictionaries, so matches came from the level-19 binary tree (2^23 positions): up to 4 + 4 MiB
zstd-patch is within 0.3% of ``zstd --patch-from``; above, it falls behind it and behind hdiff
(structured 16 MiB pair: 18.4 KB, zstd CLI 17.7 KB, hdiff 16.2 KB; 64 MiB: 16 MB vs 49 KB) and
costs more: 3 x hdiff's time at 16 MiB (2.1 s vs 0.7 s, +100 MB RSS), 5 x at 64 MiB. Below the cap
it costs about twice hdiff's CPU per small file. Whole delta builds, CPU seconds on 2 busy cores
(two runs each): gen-100M 5.1-6.9 without zstd-patch, 5.6-7.2 with the 4 MiB cap (RSS 176 -> 195
MB), 7.5-8.1 with a 16 MiB cap (RSS 289 MB) for the same bytes; pygame-ce 6.6-7.6 -> 10.1-11.2.
Level 17 would save a fifth of zstd-patch's time for 26 more bytes on pygame-ce; level 22 saves
0.1% of its bytes and nothing once the smaller engine is picked. Making the diff once for hdiff
and hdiff-lzma costs no more than the zstd diff alone (``hdiff.compress_diff``); hdiff-lzma's LZMA
adds about half of hdiff's compression time on the files it is tried on. Whole builds, CPU
seconds, median of 8 alternating runs on 2 idle cores: pygame-ce 8.1 -> 9.1 (wall 4.2 -> 4.7 s,
RSS 163 -> 158 MB), gen-100M 4.1 -> 4.1 (its big diffs are incompressible, so skipped).
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mistcore import __version__
from mistcore.engines import DIRECT_ENGINES, ENGINES, bsdiffx, hdiff, hdiffx, lzpatch, windowed, x86split, zpatch
from mistcore.errors import (
    ArchiveError,
    BasisMismatch,
    IntegrityError,
    ManifestError,
    MistCoreError,
    PatchError,
    UnsafePathError,
)
from mistcore.fsutil import (
    _rmtree,
    atomic_dir,
    atomic_write,
    copy_stream,
    deferred_fsync,
    open_regular,
    sha256_bytes,
    sha256_file,
)

# commit_stage lives in the journal (the lower layer) and is re-exported here.
from mistcore.journal import begin, commit, commit_stage, discard, recover
from mistcore.manifest import (
    FileRecord,
    Manifest,
    PathSet,
    canonical_json,
    diff_manifests,
    expect_bool,
    expect_keys,
    expect_sha256,
    expect_size,
    expect_str,
    load_json_object,
    validate_relpath,
    validate_version_name,
)
from mistcore.safetar import extract_tar_zst, pack_tar_zst
from mistcore.zstdio import OverLimit, compress_file_hashed

T = TypeVar("T")

DELTA_FORMAT = "mist-delta/1"
MANIFEST_NAME = "delta_manifest.json"
OP_KINDS = ("patch", "add", "copy", "remove")
PATCH_ENGINES = (hdiff.NAME, hdiffx.NAME, lzpatch.NAME, x86split.NAME, zpatch.NAME, bsdiffx.NAME, windowed.NAME)
# Engines whose winning blob is decoded before it is kept (their encoder is not the patcher's decoder).
_CHECKED_ENGINES = frozenset({lzpatch.NAME, x86split.NAME})
# bsdiff-lzma is tried on executables up to this size whatever the other engines did (bsdiff costs little
# there), and up to bsdiffx.MAX_FILE_BYTES when the best patch so far is under 1/BSDIFF_NEAR of the new file.
BSDIFF_ALWAYS_BYTES = 256 << 10
BSDIFF_NEAR = 16
ZPATCH_MAX_BYTES = 4 << 20
# A basis guessed from a file name is diffed only where a fast zstd patch against it is below this share of the
# file compressed alone (zpatch.basis_ratio): a renamed original measures ~0.001, an unrelated file of the same
# kind ~1.0, and diffing the latter costs every engine's time for nothing.
GUESSED_BASIS_MAX_RATIO = 0.97
# hdiff-lzma is tried on executables of any size and on other files up to this size (see diff_with_check).
HDIFFX_ANY_BYTES = 1 << 20
# lzma-patch compresses the new file itself (beside the diff) for files up to this size, or where hdiff's patch is
# at least 1/LZMA_FILE_SHARE of the file (see diff_with_check).
LZMA_FILE_ALWAYS_BYTES = 256 << 10
LZMA_FILE_SHARE = 12
# A delta bundle up to this many bytes of files is compressed at level 19, bigger ones at level 3 (bundle_delta).
BUNDLE_STRONG_MAX_BYTES = 16 << 20
# One file's compressions run on two threads when its uncompressed diff is within these bounds: below, thread
# start-up is not worth it and the pool's other files keep both cores busy; above, two lzma encoders at once
# (about 11 bytes per byte of dictionary each) would cost too much memory.
PARALLEL_MIN_BYTES = 1 << 20
PARALLEL_MAX_BYTES = 16 << 20
_PATCH_SUFFIX = {hdiff.NAME: "hdiff", hdiffx.NAME: "hdiffx", lzpatch.NAME: "lzpatch", x86split.NAME: "x86split",
                 zpatch.NAME: "zpatch", bsdiffx.NAME: "bsdiffx", windowed.NAME: "hdiffw"}
_OP_KEYS = (
    "op",
    "path",
    "target_size",
    "target_sha256",
    "executable",
    "source_path",
    "source_sha256",
    "source_size",
    "engine",
    "blob",
    "blob_size",
    "blob_sha256",
)

__all__ = [
    "DeltaManifest",
    "DeltaOp",
    "apply_delta_dir",
    "apply_delta_to_stage",
    "build_direct_delta",
    "bundle_delta",
    "commit_stage",
    "unpack_bundle",
]


@dataclass(frozen=True)
class DeltaOp:
    """One file-level step of a delta (see the module docstring for which fields each op uses)."""

    op: str
    path: str
    target_size: int | None = None
    target_sha256: str | None = None
    executable: bool = False
    source_path: str | None = None
    source_sha256: str | None = None
    source_size: int | None = None
    engine: str | None = None
    blob: str | None = None
    blob_size: int | None = None
    blob_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _OP_KEYS}

    @classmethod
    def from_dict(cls, obj: Any, where: str) -> DeltaOp:
        """Strictly parse one op."""
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: must be an object")
        expect_keys(obj, _OP_KEYS, where)
        kind = obj["op"]
        if kind not in OP_KINDS:
            raise ManifestError(f"{where}: unknown op {kind!r}")
        path = _path(obj["path"], where)
        where = f"{where} ({path})"
        need_target = kind != "remove"
        need_source = kind in ("patch", "copy", "remove")
        need_blob = kind in ("patch", "add")
        values: dict[str, Any] = {"op": kind, "path": path}
        for key in ("target_size", "target_sha256", "executable"):
            if need_target:
                values[key] = _CHECK[key](obj[key], where)
            elif obj[key] not in (None, False):
                raise ManifestError(f"{where}: a remove op has no {key}")
        for key in ("source_path", "source_sha256", "source_size"):
            if need_source and not (kind == "remove" and key == "source_path"):
                values[key] = _CHECK[key](obj[key], where)
            elif obj[key] is not None:
                raise ManifestError(f"{where}: a {kind} op has no {key}")
        for key in ("engine", "blob", "blob_size", "blob_sha256"):
            if need_blob:
                values[key] = _CHECK[key](obj[key], where)
            elif obj[key] is not None:
                raise ManifestError(f"{where}: a {kind} op has no {key}")
        op = cls(**values)
        if kind == "patch" and (op.engine not in PATCH_ENGINES or not (op.blob or "").startswith("patches/")):
            raise ManifestError(f"{where}: a patch op needs engine {'/'.join(PATCH_ENGINES)} and a blob under patches/")
        if kind == "add" and (op.engine != "zstd" or not (op.blob or "").startswith("new_files/")):
            raise ManifestError(f"{where}: an add op needs engine zstd and a blob under new_files/")
        if kind == "copy" and (op.source_sha256, op.source_size) != (op.target_sha256, op.target_size):
            raise ManifestError(f"{where}: a copy op's source must have the target's content")
        return op


def _path(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: path must be a string")
    try:
        return validate_relpath(value)
    except UnsafePathError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _engine(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: engine must be a string")
    if value not in DIRECT_ENGINES:
        if value in ENGINES:
            raise ManifestError(f"{where}: engine {value!r} is not allowed in a direct delta")
        # A newer server may use an engine this code predates: say what to do about it.
        raise ManifestError(f"{where}: this patcher does not know engine {value!r}; update the patcher")
    return value


_CHECK: dict[str, Callable[[Any, str], Any]] = {
    "target_size": expect_size,
    "target_sha256": expect_sha256,
    "executable": expect_bool,
    "source_path": _path,
    "source_sha256": expect_sha256,
    "source_size": expect_size,
    "engine": _engine,
    "blob": _path,
    "blob_size": expect_size,
    "blob_sha256": expect_sha256,
}


@dataclass
class DeltaManifest:
    """The ops turning one version into the next, with the content hashes of both ends."""

    from_version: str
    to_version: str
    from_content_hash: str
    to_content_hash: str
    ops: tuple[DeltaOp, ...]
    created_by: str = f"mistcore/{__version__}"

    def __post_init__(self) -> None:
        self.ops = tuple(sorted(self.ops, key=lambda o: (o.path, o.op)))

    @property
    def download_size(self) -> int:
        """Bytes of distinct blobs (a blob shared by duplicate files counts once)."""
        return sum({op.blob: op.blob_size or 0 for op in self.ops if op.blob is not None}.values())

    @property
    def written(self) -> list[str]:
        """Paths the delta writes (every op except remove)."""
        return [op.path for op in self.ops if op.op != "remove"]

    @property
    def removed(self) -> list[str]:
        """Paths the delta deletes."""
        return [op.path for op in self.ops if op.op == "remove"]

    def to_json(self) -> bytes:
        """Stable JSON bytes."""
        return canonical_json(
            {
                "format": DELTA_FORMAT,
                "from_version": self.from_version,
                "to_version": self.to_version,
                "from_content_hash": self.from_content_hash,
                "to_content_hash": self.to_content_hash,
                "created_by": self.created_by,
                "download_size": self.download_size,
                "ops": [op.to_dict() for op in self.ops],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> DeltaManifest:
        """Parse and strictly validate delta manifest JSON; ManifestError if anything is off."""
        obj = load_json_object(data, max_bytes=256 << 20, what="delta manifest")
        keys = {
            "format",
            "from_version",
            "to_version",
            "from_content_hash",
            "to_content_hash",
            "created_by",
            "download_size",
            "ops",
        }
        expect_keys(obj, keys, "delta manifest")
        if obj["format"] != DELTA_FORMAT:
            raise ManifestError(f"delta manifest: format must be {DELTA_FORMAT!r}, got {obj['format']!r}")
        if not isinstance(obj["ops"], list) or len(obj["ops"]) > 2_000_000:
            raise ManifestError("delta manifest: 'ops' must be a list of at most 2,000,000 ops")
        ops = [DeltaOp.from_dict(o, f"delta manifest ops[{i}]") for i, o in enumerate(obj["ops"])]
        targets = PathSet(error=ManifestError)
        removed: set[str] = set()
        blobs: dict[str, tuple[Any, ...]] = {}
        for op in ops:
            if op.op == "remove":
                if op.path in removed:
                    raise ManifestError(f"delta manifest: {op.path!r} is removed twice")
                removed.add(op.path)
            else:
                targets.add(op.path)
            if op.blob is not None:
                shape = (op.engine, op.blob_size, op.blob_sha256, op.source_sha256, op.target_sha256)
                if blobs.setdefault(op.blob, shape) != shape:
                    raise ManifestError(f"delta manifest: blob {op.blob!r} is used for different content")
        delta = cls(
            from_version=validate_version_name(obj["from_version"]),
            to_version=validate_version_name(obj["to_version"]),
            from_content_hash=expect_sha256(obj["from_content_hash"], "delta manifest from_content_hash"),
            to_content_hash=expect_sha256(obj["to_content_hash"], "delta manifest to_content_hash"),
            ops=tuple(ops),
            created_by=expect_str(obj["created_by"], "delta manifest created_by", max_len=200),
        )
        overlap = removed.intersection(delta.written)
        if overlap:
            raise ManifestError(f"delta manifest: {sorted(overlap)[0]!r} is both removed and written")
        if expect_size(obj["download_size"], "delta manifest download_size") != delta.download_size:
            raise ManifestError("delta manifest: download_size does not match the blobs")
        return delta


# Building.


@dataclass
class _Group:
    """Paths sharing one new content, encoded once."""

    index: int
    record: FileRecord
    paths: list[str]
    basis: FileRecord | None
    guessed: bool = False  # the basis is a differently named old file _SimilarIndex picked, not this path's own


@dataclass
class _Encoded:
    op: str
    engine: str
    blob: str
    blob_size: int
    blob_sha256: str
    basis: FileRecord | None = None


@dataclass(frozen=True)
class KnownBlob:
    """A blob of an existing delta folder that turns one content into another: reusable by any delta making
    the same move (a jump over several versions re-uses the push-time patch of a file that changed once)."""

    op: str  # "patch" (needs the basis) or "add" (the whole file)
    engine: str
    path: Path
    size: int
    sha256: str


def known_blobs(delta_dirs: Iterable[Path]) -> dict[tuple[str | None, str], KnownBlob]:
    """The blobs of these delta folders by (basis sha256, target sha256): patches by their basis, whole files
    (``add``) by ``None``. The first folder naming a move wins."""
    found: dict[tuple[str | None, str], KnownBlob] = {}
    for folder in delta_dirs:
        manifest = DeltaManifest.from_json((Path(folder) / MANIFEST_NAME).read_bytes())
        for op in manifest.ops:
            if op.op not in ("patch", "add") or op.blob is None or op.engine is None or op.target_sha256 is None:
                continue
            key = (op.source_sha256 if op.op == "patch" else None, op.target_sha256)
            found.setdefault(key, KnownBlob(op=op.op, engine=op.engine, path=_file_in(Path(folder), op.blob),
                                            size=int(op.blob_size or 0), sha256=str(op.blob_sha256)))
    return found


def _reused(group: _Group, known: KnownBlob | None, *, tmp: Path) -> _Encoded | None:
    """``known`` copied into this delta (checked against its recorded size and SHA-256), or None when there is
    no such blob or it is not intact (the caller then makes it anew)."""
    if known is None or group.record.size == 0:
        return None
    if known.op == "patch":
        if group.basis is None or known.engine not in _PATCH_SUFFIX:
            return None
        rel = f"patches/{group.index:06d}.{_PATCH_SUFFIX[known.engine]}"
    else:
        rel = f"new_files/{group.index:06d}.zst"
    try:
        _copy_verified(known.path, tmp / rel, size=known.size, sha256=known.sha256, what="a reused blob")
    except (OSError, MistCoreError):  # missing, replaced, truncated or corrupt: made anew
        Path(tmp / rel).unlink(missing_ok=True)
        return None
    return _Encoded(op=known.op, engine=known.engine, blob=rel, blob_size=known.size, blob_sha256=known.sha256,
                    basis=group.basis if known.op == "patch" else None)


class _SimilarIndex:
    """Finds an old file that probably is an earlier version of a new, differently named file."""

    def __init__(self, old: Manifest) -> None:
        self._by_name: dict[str, list[tuple[int, str]]] = {}
        self._by_pattern: dict[str, list[tuple[int, str]]] = {}
        self._by_ext: dict[str, list[tuple[int, str]]] = {}
        self._records = old.by_path()
        for rec in old.files:
            if rec.size == 0:
                continue
            name = rec.path.rsplit("/", 1)[-1]
            self._by_name.setdefault(name, []).append((rec.size, rec.path))
            self._by_pattern.setdefault(_pattern(name), []).append((rec.size, rec.path))
            ext = _ext(name)
            if ext:
                self._by_ext.setdefault(ext, []).append((rec.size, rec.path))
        for table in (self._by_name, self._by_pattern, self._by_ext):
            for rows in table.values():
                rows.sort()

    def find(self, path: str, size: int) -> FileRecord | None:
        """Same file name elsewhere, else the same name with other digits, else same extension and size +-50%."""
        name = path.rsplit("/", 1)[-1]
        for table, key, max_ratio in (
            (self._by_name, name, 8.0),
            (self._by_pattern, _pattern(name), 4.0),
            (self._by_ext, _ext(name), 2.0),
        ):
            rows = table.get(key) if key else None
            if rows:
                found = _nearest(rows, size, max_ratio)
                if found is not None:
                    return self._records[found]
        return None


def similar_bases(local: Manifest, wanted: list[FileRecord]) -> dict[str, str]:
    """For wanted files the local tree lacks at their own path, a local file that is probably an earlier
    version of each (a library renamed with a new build hash, a moved file: see _SimilarIndex). An indirect
    update signs that file in their place, so the server diffs against it instead of sending them whole."""
    index = _SimilarIndex(local)
    have = local.by_path()
    found = {}
    for rec in wanted:
        if rec.path in have or rec.size == 0:
            continue
        basis = index.find(rec.path, rec.size)
        if basis is not None:
            found[rec.path] = basis.path
    return found


_HASHLIKE = re.compile(r"^(?=[0-9a-f]*\d)[0-9a-f]{6,}$")


def _pattern(name: str) -> str:
    """The name with version numbers and build hashes blanked: libfoo-1a2b3c4d.so.1.2 -> libfoo-#.so.#.#."""
    tokens = re.split(r"([-_.+~])", name.lower())
    tokens = ["#" if _HASHLIKE.match(t) else t for t in tokens]
    return re.sub(r"\d+", "#", "".join(tokens))


def _ext(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


def _nearest(rows: list[tuple[int, str]], size: int, max_ratio: float) -> str | None:
    i = bisect.bisect_left(rows, (size, ""))
    best: tuple[float, str] | None = None
    for j in (i - 1, i):
        if 0 <= j < len(rows):
            other, path = rows[j]
            ratio = max(other, size, 1) / max(min(other, size), 1)
            if ratio <= max_ratio and (best is None or ratio < best[0]):
                best = (ratio, path)
    return None if best is None else best[1]


def _run_all(calls: list[Callable[[], T]], *, threads: int) -> list[T]:
    """Every call's result, in order; on ``threads`` threads at once when more than one."""
    if threads <= 1 or len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mist-encode") as pool:
        return list(pool.map(lambda call: call(), calls))


def diff_with_check(
    *,
    basis: FileRecord,
    old_file: Path,
    target: FileRecord,
    new_file: Path,
    out_stem: Path,
    hdiff_max_bytes: int,
    zpatch_max_bytes: int,
    window: int,
    level: int,
) -> tuple[str, Path]:
    """Write the best patch from basis to target at ``out_stem.<ext>``, verifying both; return (engine, path)."""
    if max(basis.size, target.size) <= hdiff_max_bytes:
        old_bytes = old_file.read_bytes()
        if sha256_bytes(old_bytes) != basis.sha256:
            raise IntegrityError(f"{basis.path}: old file does not match the old manifest")
        new_bytes = new_file.read_bytes()
        if sha256_bytes(new_bytes) != target.sha256:
            raise IntegrityError(f"{target.path}: new file does not match the new manifest")
        # One uncompressed diff, compressed for hdiff and for hdiff-lzma.
        raw = hdiff.uncompressed_diff(old_bytes, new_bytes, match_cache=True)
        executable = hdiffx.looks_executable(new_bytes)
        # A large diff's compressions (hdiff's zstd and lzma2, zstd-patch) run at once on two threads (each
        # releases the GIL): one big changed file is otherwise the whole build's critical path while the
        # other core idles. Up to PARALLEL_MAX_BYTES, so two lzma2 encoders stay small.
        parallel = PARALLEL_MIN_BYTES <= len(raw) <= PARALLEL_MAX_BYTES
        hdiff_calls = hdiff.compressions(raw, new_size=target.size, level=level)
        # zstd-patch is left out on executables over LZMA_FILE_ALWAYS_BYTES where lzma-patch runs: on the 27 such
        # files of the two pygame-ce updates it never won (lzma-patch or bsdiff-lzma beat it by 95 B to 96 KB),
        # and it was the build's most expensive engine there (4.3 of 21 CPU seconds).
        with_zpatch = max(basis.size, target.size) <= zpatch_max_bytes and not (
            executable and target.size > LZMA_FILE_ALWAYS_BYTES and level >= 19 and lzpatch.available())
        zpatch_calls = [lambda: zpatch.diff_bytes(old_bytes, new_bytes, level=level)] if with_zpatch else []
        results = _run_all([*hdiff_calls, *zpatch_calls], threads=2 if parallel else 1)
        hdiff_patch = hdiff.smallest(results[: len(hdiff_calls)])
        candidates = [(hdiff.NAME, hdiff_patch)]
        # The LZMA engines are tried at the top level, not where hdiff hardly compressed the diff (fresh random
        # bytes, where LZMA only adds its overhead), and on executables or files up to HDIFFX_ANY_BYTES: they win
        # on native code (LZMA's repeat distances and matched literals, BCJ); on a big pack of data hdiff-lzma
        # lost every time measured (gen-40M: 1.6% behind hdiff) and cost another LZMA pass. lzma-patch (LZMA with
        # the old file as its dictionary, over the new file and over the diff) replaces hdiff-lzma where this
        # machine can encode it: over the diff it is hdiff-lzma plus the dictionary (at worst a few bytes larger:
        # its header and LZMA2's chunk headers).
        if (level >= 19 and len(hdiff_patch) < 0.9 * len(raw) and len(raw) <= hdiffx.decoded_limit(target.size)
                and (executable or target.size <= HDIFFX_ANY_BYTES)):
            x86 = hdiffx.looks_x86(new_bytes)
            # Two or three LZMA passes, on two threads when the file is big enough (each encoder holds ~11 bytes
            # per byte of old + payload, so only up to PARALLEL_MAX_BYTES).
            both = PARALLEL_MIN_BYTES <= target.size and basis.size + max(len(raw), target.size) <= PARALLEL_MAX_BYTES
            # Over the new file only where much of it is new: where hdiff's patch is under 1/LZMA_FILE_SHARE of
            # the file, the diff always won (pygame-ce), and a pass over the whole file costs more than one
            # over the diff.
            as_file = target.size <= LZMA_FILE_ALWAYS_BYTES or len(hdiff_patch) * LZMA_FILE_SHARE >= target.size
            lz = lzpatch.smallest(old_bytes, new_bytes, raw, x86=x86, max_total=lzpatch.MAX_BUILD_BYTES,
                                  run=lambda calls: _run_all(calls, threads=2 if both else 1), as_file=as_file)
            if lz is not None:
                candidates.append((lzpatch.NAME, lz))
            else:  # no liblzma here, or the old file and the payloads are over lzma-patch's dictionary
                candidates.append((hdiffx.NAME, hdiffx.encode(raw, new_size=target.size, x86=x86)))
            # x86-64 code split into streams of like fields (x86split.py): 2-24% under lzma-patch on 19 libraries and
            # modules of pygame-ce 2.5.6 -> 2.5.7; None where a file has no x86-64 code section.
            if x86 and basis.size + target.size <= x86split.MAX_BUILD_BYTES:
                xs = x86split.encode(old_bytes, new_bytes, run=lambda calls: _run_all(calls, threads=2 if both else 1))
                if xs is not None:
                    candidates.append((x86split.NAME, xs))
        del raw
        if with_zpatch:
            zblob = results[-1]
            assert zblob is not None
            candidates.append((zpatch.NAME, zblob))
        # bsdiff is made for executables (approximate matches over code whose addresses moved): tried on
        # those, where it is cheap (small files) or likely to win (a patch under 1/16 of the file so far).
        largest = max(basis.size, target.size)
        best_so_far = min(len(c[1]) for c in candidates)
        if level >= 19 and basis.size > 0 and executable and (
            largest <= BSDIFF_ALWAYS_BYTES
            or (largest <= bsdiffx.MAX_FILE_BYTES and best_so_far * BSDIFF_NEAR <= target.size)
        ):
            try:
                candidates.append((bsdiffx.NAME, bsdiffx.diff_bytes(old_bytes, new_bytes, level=level)))
            except PatchError:
                pass  # over the engine's limits for this pair (a control block larger than it accepts)
        engine, patch = min(candidates, key=lambda c: len(c[1]))  # a tie goes to the earlier engine
        while engine in _CHECKED_ENGINES and not _decodes_to(engine, old_bytes, patch, new_bytes):
            # Their encoders are the system liblzma (and, for x86-split, the server's own split), their decoder
            # the patcher's: never ship a blob they disagree on.
            candidates = [c for c in candidates if c[0] != engine]
            engine, patch = min(candidates, key=lambda c: len(c[1]))
        del old_bytes, new_bytes
        del candidates, hdiff_patch, results
        out = out_stem.with_name(f"{out_stem.name}.{_PATCH_SUFFIX[engine]}")
        with atomic_write(out) as f:
            f.write(patch)
        return engine, out
    if sha256_file(old_file) != basis.sha256:
        raise IntegrityError(f"{basis.path}: old file does not match the old manifest")
    out = out_stem.with_name(f"{out_stem.name}.{_PATCH_SUFFIX[windowed.NAME]}")
    windowed.diff_file(old=old_file, new=new_file, out=out, window=window, level=level)
    if sha256_file(new_file) != target.sha256:
        raise IntegrityError(f"{target.path}: new file changed while it was being diffed")
    return windowed.NAME, out


def _decodes_to(engine: str, old: bytes, blob: bytes, new: bytes) -> bool:
    """Whether an lzma-patch or x86-split blob decodes (the patcher's way) to exactly ``new``."""
    try:
        return ENGINES[engine].apply_bytes(old, blob, expected_size=len(new)) == new
    except MistCoreError:
        return False


def _encode(
    group: _Group,
    *,
    old_root: Path,
    new_root: Path,
    tmp: Path,
    hdiff_max_bytes: int,
    zpatch_max_bytes: int,
    window: int,
    level: int,
    reuse: Mapping[tuple[str | None, str], KnownBlob] | None = None,
) -> _Encoded:
    target = group.record
    if reuse:
        key = (group.basis.sha256 if group.basis is not None else None, target.sha256)
        again = _reused(group, reuse.get(key), tmp=tmp)
        if again is not None:
            return again
    new_file = _file_in(new_root, target.path)
    full_rel = f"new_files/{group.index:06d}.zst"
    patch: _Encoded | None = None
    if group.basis is not None and target.size > 0 and (
        not group.guessed or _related(_file_in(old_root, group.basis.path), new_file)
    ):
        engine, patch_file = diff_with_check(  # checks the new file against the manifest too
            basis=group.basis,
            old_file=_file_in(old_root, group.basis.path),
            target=target,
            new_file=new_file,
            out_stem=tmp / "patches" / f"{group.index:06d}",
            hdiff_max_bytes=hdiff_max_bytes,
            zpatch_max_bytes=zpatch_max_bytes,
            window=window,
            level=level,
        )
        patch = _Encoded(
            op="patch",
            engine=engine,
            blob=f"patches/{patch_file.name}",
            blob_size=os.path.getsize(patch_file),
            blob_sha256=sha256_file(patch_file),
            basis=group.basis,
        )
    # The whole file is compressed only as far as it can still beat the patch: a few MB of output
    # settle it for a 4 GiB pack that would take half an hour at level 19.
    try:
        full_size, size, sha = compress_file_hashed(
            new_file, tmp / full_rel, level=level, limit=None if patch is None else patch.blob_size
        )
    except OverLimit:
        assert patch is not None
        return patch
    if (size, sha) != (target.size, target.sha256):
        raise IntegrityError(f"{target.path}: new file does not match the new manifest")
    # A tie goes to the whole file: it needs no basis on the client.
    if patch is not None and patch.blob_size < full_size:
        os.unlink(tmp / full_rel)
        return patch
    if patch is not None:
        os.unlink(tmp / patch.blob)
    return _Encoded(
        op="add", engine="zstd", blob=full_rel, blob_size=full_size, blob_sha256=sha256_file(tmp / full_rel)
    )


def _related(old_file: Path, new_file: Path) -> bool:
    """Whether a guessed basis explains enough of the new file to be worth diffing against (see
    GUESSED_BASIS_MAX_RATIO); a file that cannot be read is left to the diff, which reports it."""
    try:
        with open_regular(old_file, what="a basis") as f:
            old = f.read(zpatch.PROBE_BYTES)
        with open_regular(new_file, what="a new file") as f:
            new = f.read(zpatch.PROBE_BYTES)
    except (OSError, MistCoreError):
        return True
    return zpatch.basis_ratio(old, new) < GUESSED_BASIS_MAX_RATIO


def _file_in(root: Path, rel: str) -> Path:
    return Path(root).joinpath(*validate_relpath(rel).split("/"))


def build_direct_delta(
    *,
    old_root: Path,
    old_manifest: Manifest,
    new_root: Path,
    new_manifest: Manifest,
    out_dir: Path,
    hdiff_max_bytes: int = 512 << 20,
    zpatch_max_bytes: int = ZPATCH_MAX_BYTES,
    workers: int = 2,
    level: int = 19,
    window: int = windowed.DEFAULT_WINDOW,
    reuse: Mapping[tuple[str | None, str], KnownBlob] | None = None,
) -> DeltaManifest:
    """Build the delta folder turning ``old_manifest``'s tree into ``new_manifest``'s at ``out_dir``.

    ``reuse`` (``known_blobs`` of other delta folders made with these engines): a file whose exact move (basis
    content -> new content) one of them already encodes gets that blob, checked, instead of being diffed again.
    A jump over several versions is mostly the push-time patches of files that changed once."""
    changes = diff_manifests(old_manifest, new_manifest)
    old_map, new_map = old_manifest.by_path(), new_manifest.by_path()
    old_by_sha: dict[str, FileRecord] = {}
    for rec in old_manifest.files:
        old_by_sha.setdefault(rec.sha256, rec)
    similar = _SimilarIndex(old_manifest)

    ops: list[DeltaOp] = []
    groups: dict[str, _Group] = {}
    for path in sorted(changes.added + changes.changed):
        rec = new_map[path]
        if rec.sha256 in old_by_sha:
            # Prefer the same path (an executable-bit change) so the client reads the file it replaces.
            same = old_map.get(path)
            src = same if same is not None and same.sha256 == rec.sha256 else old_by_sha[rec.sha256]
            ops.append(
                DeltaOp(
                    op="copy",
                    path=path,
                    target_size=rec.size,
                    target_sha256=rec.sha256,
                    executable=rec.executable,
                    source_path=src.path,
                    source_sha256=src.sha256,
                    source_size=src.size,
                )
            )
            continue
        group = groups.get(rec.sha256)
        if group is None:
            group = groups[rec.sha256] = _Group(index=len(groups), record=rec, paths=[], basis=None)
        group.paths.append(path)
    for group in groups.values():
        # A changed path's own old version is the best basis; otherwise look for a renamed original.
        same_path = [old_map[p] for p in group.paths if p in old_map]
        group.basis = same_path[0] if same_path else similar.find(group.paths[0], group.record.size)
        group.guessed = not same_path and group.basis is not None
    for path in changes.removed:
        rec = old_map[path]
        ops.append(DeltaOp(op="remove", path=path, source_sha256=rec.sha256, source_size=rec.size))

    with atomic_dir(out_dir) as tmp, deferred_fsync():
        (tmp / "patches").mkdir()
        (tmp / "new_files").mkdir()
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [
                (
                    group,
                    pool.submit(
                        _encode,
                        group,
                        old_root=Path(old_root),
                        new_root=Path(new_root),
                        tmp=tmp,
                        hdiff_max_bytes=hdiff_max_bytes,
                        zpatch_max_bytes=zpatch_max_bytes,
                        window=window,
                        level=level,
                        reuse=reuse,
                    ),
                )
                for group in groups.values()
            ]
            for group, future in futures:
                enc = future.result()
                for path in group.paths:
                    rec = new_map[path]
                    ops.append(
                        DeltaOp(
                            op=enc.op,
                            path=path,
                            target_size=rec.size,
                            target_sha256=rec.sha256,
                            executable=rec.executable,
                            source_path=enc.basis.path if enc.basis else None,
                            source_sha256=enc.basis.sha256 if enc.basis else None,
                            source_size=enc.basis.size if enc.basis else None,
                            engine=enc.engine,
                            blob=enc.blob,
                            blob_size=enc.blob_size,
                            blob_sha256=enc.blob_sha256,
                        )
                    )
        delta = DeltaManifest(
            from_version=old_manifest.version,
            to_version=new_manifest.version,
            from_content_hash=old_manifest.content_hash(),
            to_content_hash=new_manifest.content_hash(),
            ops=tuple(ops),
        )
        with atomic_write(tmp / MANIFEST_NAME) as f:
            f.write(delta.to_json())
    return delta


# Applying.


def _copy_verified(src: Path, dst: Path, *, size: int, sha256: str, what: str) -> None:
    try:
        fin = open_regular(src, what=what)
    except FileNotFoundError:
        raise BasisMismatch(f"{what}: the basis file is missing") from None
    with fin, atomic_write(dst) as fout:
        n, digest = copy_stream(fin, fout, limit=size)
        if (n, digest) != (size, sha256):
            raise BasisMismatch(f"{what}: the basis file is not the expected version (SHA-256 mismatch)")


def _already_staged(dst: Path, op: DeltaOp) -> bool:
    try:
        if not dst.is_file() or dst.is_symlink() or dst.stat().st_size != op.target_size:
            return False
    except OSError:
        return False
    return sha256_file(dst) == op.target_sha256


def apply_delta_to_stage(
    *,
    delta: DeltaManifest,
    delta_dir: Path,
    source_root: Path,
    stage_dir: Path,
    progress: Callable[[int], None] | None = None,
    bad_basis: list[str] | None = None,
) -> list[str]:
    """Write every new or changed file of the delta into ``stage_dir`` (verified); return the paths.

    With ``bad_basis`` (a list), an op whose basis file is missing or not the version the delta was
    made against (a file modified locally) is skipped and its path appended there, so the caller can
    fetch just those files another way; otherwise that is an error (BasisMismatch)."""
    delta_dir, source_root, stage_dir = Path(delta_dir), Path(source_root), Path(stage_dir)
    written: list[str] = []
    for op in delta.ops:
        if op.op == "remove":
            continue
        assert op.target_size is not None and op.target_sha256 is not None
        dst = _file_in(stage_dir, op.path)
        try:
            _stage_op(op, dst, delta_dir=delta_dir, source_root=source_root)
        except BasisMismatch:
            if bad_basis is None:
                raise
            bad_basis.append(op.path)
            continue
        written.append(op.path)
        if progress is not None:
            progress(op.target_size)
    return written


def _stage_op(op: DeltaOp, dst: Path, *, delta_dir: Path, source_root: Path) -> None:
    """Write one op's file into the stage, verified (a stage left by an interrupted run keeps the ones done)."""
    assert op.target_size is not None and op.target_sha256 is not None
    if not _already_staged(dst, op):
        dst.parent.mkdir(parents=True, exist_ok=True)
        if op.op == "copy":
            assert op.source_path is not None
            _copy_verified(
                _file_in(source_root, op.source_path),
                dst,
                size=op.target_size,
                sha256=op.target_sha256,
                what=op.source_path,
            )
        else:
            assert op.blob is not None and op.engine is not None
            blob = _file_in(delta_dir, op.blob)
            if not blob.is_file() or blob.stat().st_size != op.blob_size:
                raise IntegrityError(f"{op.blob}: blob missing or of the wrong size in the delta")
            old = _file_in(source_root, op.source_path) if op.source_path else None
            if old is not None and not old.is_file():
                raise BasisMismatch(f"{op.source_path}: the basis file is missing")
            ENGINES[op.engine].apply_file(
                old=old,
                patch=blob,
                out=dst,
                expected_size=op.target_size,
                expected_sha256=op.target_sha256,
                old_sha256=op.source_sha256,
                patch_sha256=op.blob_sha256,
            )
    os.chmod(dst, 0o755 if op.executable else 0o644)


def apply_delta_dir(*, delta_dir: Path, install_root: Path, work_dir: Path) -> DeltaManifest:
    """Read a delta folder, stage it under ``work_dir``, then commit it into ``install_root`` with a journal."""
    delta = DeltaManifest.from_json((Path(delta_dir) / MANIFEST_NAME).read_bytes())
    recover(install_root=install_root)
    stage = Path(work_dir) / "stage"
    begin(
        install_root=install_root,
        stage_dir=stage,
        target_version=delta.to_version,
        written=delta.written,
        removed=delta.removed,
        executable=[op.path for op in delta.ops if op.executable],
    )
    try:
        with deferred_fsync():  # one sync before the journal may switch to committing
            apply_delta_to_stage(delta=delta, delta_dir=delta_dir, source_root=install_root, stage_dir=stage)
    except BaseException:
        discard(install_root=install_root)
        raise
    commit(install_root=install_root)
    return delta


def bundle_delta(*, delta_dir: Path, dst: Path) -> tuple[int, str]:
    """Pack a delta folder into one .tar.zst; (size, sha256).

    The blobs are compressed already; what zstd still finds is in the manifest (keys, paths, hex hashes) and
    the tar headers, where level 19 beats level 3 by a few KB: pygame-ce 2.5.6 -> 2.5.7 1,406,710 -> 1,398,464
    bytes (0.6%; more of a small update) in 0.26 s instead of 0.04 s. On compressed bytes level 19 runs at
    ~6 MB/s, so a delta of more than ``BUNDLE_STRONG_MAX_BYTES`` is packed at level 3."""
    total = sum(f.stat().st_size for f in Path(delta_dir).rglob("*") if f.is_file())
    level = 19 if total <= BUNDLE_STRONG_MAX_BYTES else 3
    return pack_tar_zst(root=Path(delta_dir), paths=None, dst=Path(dst), level=level, threads=2)


def unpack_bundle(*, src: Path, dest: Path, max_total_bytes: int) -> DeltaManifest:
    """Safely extract a delta bundle into ``dest`` and check it holds exactly its manifest and blobs."""
    names = extract_tar_zst(src=Path(src), dest=Path(dest), max_total_bytes=max_total_bytes)
    try:
        manifest_file = Path(dest) / MANIFEST_NAME
        if not manifest_file.is_file():
            raise ArchiveError(f"delta bundle has no {MANIFEST_NAME}")
        delta = DeltaManifest.from_json(manifest_file.read_bytes())
        blobs = {op.blob: op.blob_size for op in delta.ops if op.blob is not None}
        extra = set(names) - set(blobs) - {MANIFEST_NAME}
        if extra:
            raise ArchiveError(f"delta bundle has unexpected member {sorted(extra)[0]!r}")
        for blob, size in blobs.items():
            path = _file_in(Path(dest), blob)
            if not path.is_file() or path.stat().st_size != size:
                raise ArchiveError(f"delta bundle: blob {blob!r} is missing or of the wrong size")
    except BaseException:
        _rmtree(Path(dest))
        raise
    return delta
