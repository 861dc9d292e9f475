"""Indirect updates (any version jump) with librsync: the client sends signatures, the server deltas.

1. Client: ``signature_set`` makes an uncompressed tar with ``signatures.json`` and one
   ``<path>.sig`` (rdiff signature) per local file it wants updated::

       signatures.json: {"format": "mist-sigs/1", "files": {"<path>": {"size": n, "sha256": "<hex>"}}}

   A requested file missing locally simply has no signature.
2. Server: ``read_signature_set`` validates every member (requested path, rdiff header, block
   count matching the declared size, byte caps) and ``build_indirect_bundle`` writes a
   ``.tar.zst`` holding ``indirect_manifest.json`` and one blob per requested path::

       {"format": "mist-indirect/1", "to_version": "1.4", "to_content_hash": "<hex>",
        "created_by": "mistcore/0.1.0",
        "ops": [{"path", "engine": "rdiff" | "zstd", "blob", "blob_size", "blob_sha256",
                 "basis_sha256" (the client's file the delta applies to; null for zstd),
                 "target_size", "target_sha256", "executable"}]}

   Blobs are ``deltas/<n>.rdiff`` (raw librsync delta; the bundle's zstd compresses its literals)
   or ``new_files/<n>.zst`` (the whole file), whichever is smaller once compressed.
3. Client: ``apply_indirect_to_stage`` unpacks the bundle safely, checks each local basis still
   has ``basis_sha256`` (else ``IntegrityError`` with ``.path`` set: fetch that file whole), and
   writes verified results into the stage (commit with ``mistcore.journal``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import pyrsync
import zstandard

from mistcore import __version__
from mistcore.delta import ZPATCH_MAX_BYTES, diff_with_check
from mistcore.engines import DIRECT_ENGINES, ENGINES, rdiff, windowed
from mistcore.errors import ArchiveError, IntegrityError, ManifestError, MistCoreError, SignatureError, UnsafePathError
from mistcore.fsutil import CHUNK, HashingWriter, _rmtree, atomic_write, deferred_fsync, open_regular, sha256_file
from mistcore.manifest import (
    FileRecord,
    Manifest,
    canonical_json,
    expect_bool,
    expect_keys,
    expect_sha256,
    expect_size,
    expect_str,
    load_json_object,
    validate_relpath,
    validate_version_name,
)
from mistcore.safetar import extract_tar_zst, iter_tar, pack_tar, pack_tar_zst
from mistcore.zstdio import OverLimit, compress_file_hashed

SIGS_FORMAT = "mist-sigs/1"
INDIRECT_FORMAT = "mist-indirect/1"
SIGNATURES_JSON = "signatures.json"
MANIFEST_NAME = "indirect_manifest.json"
MAX_SIGNATURES_JSON = 64 << 20
BUNDLE_LEVEL = 3
# Engines of the direct deltas, used where the server holds the client's exact basis (the same sha256 in a
# version it has on disk): ops with them are made only for clients that say they apply them.
KNOWN_BASIS_ENGINES = frozenset(DIRECT_ENGINES - {"zstd"})
_OP_KEYS = (
    "path",
    "engine",
    "blob",
    "blob_size",
    "blob_sha256",
    "basis_sha256",
    "target_size",
    "target_sha256",
    "executable",
)


# Client: signatures.


class _HashingReader:
    """Basis reader hashing the file while librsync reads it (librsync may seek back a little)."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        pos = self._f.tell()
        data = self._f.read(n)
        end = pos + len(data)
        if end > self.size:
            if pos > self.size:  # pragma: no cover - librsync only reads forward or re-reads
                raise OSError("non-sequential read while hashing")
            self._digest.update(memoryview(data)[self.size - pos :])
            self.size = end
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def write(self, data: bytes) -> int:
        raise OSError("read-only")

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _signature_and_hash(basis: Path, out: Path) -> tuple[int, str]:
    with open_regular(basis) as fin:
        info = rdiff.signature_args(os.fstat(fin.fileno()).st_size)
        reader = _HashingReader(fin)
        with atomic_write(out) as fout:
            pyrsync.signature(reader, fout, info.strong_len, info.magic, info.block_len)
        # Catch anything the signature pass left unread (it should not) before trusting the hash.
        while reader.read(CHUNK):
            pass
    return reader.size, reader.hexdigest()


def signature_set(
    *, root: Path, paths: list[str], out_tar: Path, bases: dict[str, str] | None = None
) -> tuple[int, str]:
    """Client side: tar of ``signatures.json`` and ``<path>.sig`` for each listed file present locally.

    ``bases`` names, for a listed file missing locally, another local file to sign in its place (see
    ``mistcore.delta.similar_bases``); ``apply_indirect_to_stage`` must get the same mapping."""
    root, out_tar = Path(root), Path(out_tar)
    bases = bases or {}
    files: dict[str, dict[str, Any]] = {}
    members: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(dir=out_tar.parent, prefix=f".{out_tar.name}.sigs-") as tmp:
        for i, path in enumerate(sorted(set(paths))):
            local = root.joinpath(*validate_relpath(path).split("/"))
            if path in bases and not local.exists():
                local = root.joinpath(*validate_relpath(bases[path]).split("/"))
            if not local.is_file() or local.is_symlink():
                continue  # missing locally: no signature, the server sends the whole file
            sig = Path(tmp) / f"{i:06d}.sig"
            size, sha = _signature_and_hash(local, sig)
            files[path] = {"size": size, "sha256": sha}
            members[f"{path}.sig"] = sig
        index = canonical_json({"format": SIGS_FORMAT, "files": files})
        return pack_tar(members=members, dst=out_tar, extra_files={SIGNATURES_JSON: index})


# Server: reading signatures and building bundles.


class SignatureSet(dict[str, Path]):
    """Validated signature files by path; ``basis_info`` holds ``signatures.json``'s ``files``."""

    basis_info: dict[str, dict[str, Any]]


def _parse_signatures_json(data: bytes) -> dict[str, dict[str, Any]]:
    obj = load_json_object(data, max_bytes=MAX_SIGNATURES_JSON, what=SIGNATURES_JSON)
    expect_keys(obj, {"format", "files"}, SIGNATURES_JSON)
    if obj["format"] != SIGS_FORMAT or not isinstance(obj["files"], dict):
        raise ManifestError(f"{SIGNATURES_JSON}: format must be {SIGS_FORMAT!r} with a 'files' object")
    info: dict[str, dict[str, Any]] = {}
    for path, entry in obj["files"].items():
        validate_relpath(path)
        if not isinstance(entry, dict):
            raise ManifestError(f"{SIGNATURES_JSON}: {path!r} must map to an object")
        expect_keys(entry, {"size", "sha256"}, f"{SIGNATURES_JSON} {path!r}")
        info[path] = {"size": expect_size(entry["size"], path), "sha256": expect_sha256(entry["sha256"], path)}
    return info


def read_signature_set(*, src: Path, dest_dir: Path, allowed_paths: set[str], max_bytes: int) -> SignatureSet:
    """Server side: validate an uploaded signature tar into ``dest_dir``; SignatureError if anything is off."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    sigs = SignatureSet()
    info: dict[str, dict[str, Any]] | None = None
    try:
        for name, size, member in iter_tar(Path(src), max_members=len(allowed_paths) + 1, max_total_bytes=max_bytes):
            if name == SIGNATURES_JSON:
                if size > MAX_SIGNATURES_JSON:
                    raise SignatureError(f"{SIGNATURES_JSON} is larger than {MAX_SIGNATURES_JSON} bytes")
                info = _parse_signatures_json(member.read())
                continue
            path = name[: -len(".sig")] if name.endswith(".sig") else None
            if path is None or path not in allowed_paths:
                raise SignatureError(f"{name!r}: not the signature of a requested file")
            out = dest_dir / f"{len(sigs):06d}.sig"
            with open(out, "xb") as f:
                written = HashingWriter(f, limit=size, error=SignatureError, what=repr(name))
                while chunk := member.read(CHUNK):
                    written.write(chunk)
            sigs[path] = out
    except (ArchiveError, ManifestError, UnsafePathError) as exc:
        raise SignatureError(f"invalid signature upload: {exc}") from None
    if info is None:
        raise SignatureError(f"invalid signature upload: no {SIGNATURES_JSON}")
    if set(info) != set(sigs):
        odd = sorted(set(info) ^ set(sigs))[0]
        raise SignatureError(f"invalid signature upload: {odd!r} must have both a .sig and a {SIGNATURES_JSON} entry")
    for path, sig in sigs.items():
        try:
            rdiff.validate_signature(sig, max_bytes=max_bytes, expected_file_size=info[path]["size"])
        except SignatureError as exc:
            raise SignatureError(f"{path}: {exc}", path=path) from None
    with atomic_write(dest_dir / SIGNATURES_JSON) as f:
        f.write(canonical_json({"format": SIGS_FORMAT, "files": info}))
    sigs.basis_info = info
    return sigs


@dataclass(frozen=True)
class IndirectOp:
    """One file of an indirect bundle."""

    path: str
    engine: str
    blob: str
    blob_size: int
    blob_sha256: str
    basis_sha256: str | None
    target_size: int
    target_sha256: str
    executable: bool

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in _OP_KEYS}


@dataclass
class IndirectManifest:
    """What an indirect bundle holds and how to apply each blob."""

    to_version: str
    to_content_hash: str
    ops: tuple[IndirectOp, ...]
    created_by: str = f"mistcore/{__version__}"

    def __post_init__(self) -> None:
        self.ops = tuple(sorted(self.ops, key=lambda o: o.path))

    @property
    def download_size(self) -> int:
        return sum(op.blob_size for op in self.ops)

    def to_json(self) -> bytes:
        return canonical_json(
            {
                "format": INDIRECT_FORMAT,
                "to_version": self.to_version,
                "to_content_hash": self.to_content_hash,
                "created_by": self.created_by,
                "ops": [op.to_dict() for op in self.ops],
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> IndirectManifest:
        """Parse and strictly validate; ManifestError if anything is off."""
        obj = load_json_object(data, max_bytes=256 << 20, what="indirect manifest")
        expect_keys(obj, {"format", "to_version", "to_content_hash", "created_by", "ops"}, "indirect manifest")
        if obj["format"] != INDIRECT_FORMAT:
            raise ManifestError(f"indirect manifest: format must be {INDIRECT_FORMAT!r}")
        if not isinstance(obj["ops"], list):
            raise ManifestError("indirect manifest: 'ops' must be a list")
        ops, seen_paths, seen_blobs = [], set(), set()
        for i, entry in enumerate(obj["ops"]):
            where = f"indirect manifest ops[{i}]"
            if not isinstance(entry, dict):
                raise ManifestError(f"{where}: must be an object")
            expect_keys(entry, _OP_KEYS, where)
            try:
                path, blob = validate_relpath(entry["path"]), validate_relpath(entry["blob"])
            except (UnsafePathError, AttributeError, TypeError) as exc:
                raise ManifestError(f"{where}: {exc}") from None
            engine = entry["engine"]
            if engine == "rdiff":
                basis = expect_sha256(entry["basis_sha256"], where)
                ok = blob.startswith("deltas/")
            elif engine in KNOWN_BASIS_ENGINES:
                basis = expect_sha256(entry["basis_sha256"], where)
                ok = blob.startswith("patches/")
            elif engine == "zstd":
                if entry["basis_sha256"] is not None:
                    raise ManifestError(f"{where}: a zstd op has no basis")
                basis = None
                ok = blob.startswith("new_files/")
            else:
                raise ManifestError(f"{where}: unknown engine {engine!r}")
            if not ok:
                raise ManifestError(f"{where}: blob or basis does not fit engine {engine!r}")
            if path in seen_paths or blob in seen_blobs:
                raise ManifestError(f"{where}: duplicate path or blob")
            seen_paths.add(path)
            seen_blobs.add(blob)
            ops.append(
                IndirectOp(
                    path=path,
                    engine=engine,
                    blob=blob,
                    blob_size=expect_size(entry["blob_size"], where),
                    blob_sha256=expect_sha256(entry["blob_sha256"], where),
                    basis_sha256=basis,
                    target_size=expect_size(entry["target_size"], where),
                    target_sha256=expect_sha256(entry["target_sha256"], where),
                    executable=expect_bool(entry["executable"], where),
                )
            )
        return cls(
            to_version=validate_version_name(obj["to_version"]),
            to_content_hash=expect_sha256(obj["to_content_hash"], "indirect manifest to_content_hash"),
            ops=tuple(ops),
            created_by=expect_str(obj["created_by"], "indirect manifest created_by", max_len=200),
        )


def _compressed_size(path: Path, level: int) -> int:
    counter = HashingWriter(None)
    cctx = zstandard.ZstdCompressor(level=level)
    with open(path, "rb") as f, cctx.stream_writer(cast(IO[bytes], counter), closefd=False) as w:
        while chunk := f.read(CHUNK):
            w.write(chunk)
    return counter.count


def build_indirect_bundle(
    *,
    signatures: dict[str, Path],
    basis_info: dict[str, dict[str, Any]],
    target_root: Path,
    target_manifest: Manifest,
    paths: Iterable[str],
    out: Path,
    level: int = 19,
    known_bases: dict[str, Path] | None = None,
    hdiff_max_bytes: int = 64 << 20,
) -> IndirectManifest:
    """Server side: an rdiff delta (or the whole file, if smaller) per requested path, packed at ``out``.

    ``known_bases`` maps a path to a file the server holds whose content is exactly the client's basis (the
    sha256 of signatures.json, found in a version the server has): that path gets the direct deltas' engines
    (HDiffPatch, zstd --patch-from) against it instead of librsync, which diffs blocks blind. Only for
    clients that apply those engines (see KNOWN_BASIS_ENGINES)."""
    out = Path(out)
    targets = target_manifest.by_path()
    known_bases = known_bases or {}
    ops: list[IndirectOp] = []
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.build-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "deltas").mkdir()
        (tmp / "new_files").mkdir()
        (tmp / "patches").mkdir()
        for i, path in enumerate(sorted(set(paths))):
            rec = targets.get(path)
            if rec is None:
                raise ManifestError(f"{path!r} is not a file of version {target_manifest.version}", path=path)
            new_file = Path(target_root).joinpath(*validate_relpath(path).split("/"))
            full_rel = f"new_files/{i:06d}.zst"
            engine, blob, basis = "zstd", full_rel, None
            delta_size: int | None = None
            info = basis_info.get(path)
            known = _known_patch(path, rec, info, known_bases, new_file, tmp / "patches" / f"{i:06d}",
                                 level=level, hdiff_max_bytes=hdiff_max_bytes) if path in signatures else None
            if known is not None:
                rdiff_engine, patch_file = known
                delta_rel = f"patches/{patch_file.name}"
                delta_size = patch_file.stat().st_size  # compressed already: the bundle's zstd adds nothing
            elif path in signatures:
                if path not in basis_info:
                    raise SignatureError(f"{path}: signature without basis information", path=path)
                delta_rel = f"deltas/{i:06d}.rdiff"
                rdiff.delta_file(signature=signatures[path], new=new_file, out=tmp / delta_rel)
                # The bundle compresses the delta's literal bytes, so compare compressed sizes.
                delta_size = _compressed_size(tmp / delta_rel, BUNDLE_LEVEL)
                rdiff_engine = "rdiff"
            full_size: int | None
            try:
                # The whole file only as far as it can still beat the delta (see delta._encode).
                full_size, size, sha = compress_file_hashed(new_file, tmp / full_rel, level=level, limit=delta_size)
            except OverLimit:
                full_size, size, sha = None, os.path.getsize(new_file), sha256_file(new_file)
            if (size, sha) != (rec.size, rec.sha256):
                raise IntegrityError(f"{path}: target file does not match its manifest", path=path)
            if delta_size is not None:
                if full_size is None or delta_size < full_size:
                    if full_size is not None:
                        os.unlink(tmp / full_rel)
                    engine, blob, basis = rdiff_engine, delta_rel, basis_info[path]["sha256"]
                else:
                    os.unlink(tmp / delta_rel)
            ops.append(
                IndirectOp(
                    path=path,
                    engine=engine,
                    blob=blob,
                    blob_size=os.path.getsize(tmp / blob),
                    blob_sha256=sha256_file(tmp / blob),
                    basis_sha256=basis,
                    target_size=rec.size,
                    target_sha256=rec.sha256,
                    executable=rec.executable,
                )
            )
        manifest = IndirectManifest(
            to_version=target_manifest.version, to_content_hash=target_manifest.content_hash(), ops=tuple(ops)
        )
        pack_tar_zst(
            root=tmp,
            paths=[op.blob for op in ops],
            dst=out,
            level=BUNDLE_LEVEL,
            threads=2,
            extra_files={MANIFEST_NAME: manifest.to_json()},
        )
    return manifest


def _known_patch(path: str, rec: FileRecord, info: dict[str, Any] | None, known_bases: dict[str, Path],
                 new_file: Path, out_stem: Path, *, level: int, hdiff_max_bytes: int) -> tuple[str, Path] | None:
    """(engine, patch) against the server's copy of the client's exact basis; None without one, or when that
    copy is not what its sha256 says (then librsync diffs against the signature as before)."""
    if info is None or path not in known_bases or rec.size == 0:
        return None
    basis = FileRecord(path=path, size=int(info["size"]), sha256=str(info["sha256"]), executable=False)
    old_file = Path(known_bases[path])
    try:
        if old_file.stat().st_size != basis.size:
            return None
        return diff_with_check(basis=basis, old_file=old_file, target=rec, new_file=new_file, out_stem=out_stem,
                               hdiff_max_bytes=hdiff_max_bytes, zpatch_max_bytes=ZPATCH_MAX_BYTES,
                               window=windowed.DEFAULT_WINDOW, level=level)
    except IntegrityError:
        if sha256_file(new_file) != rec.sha256:
            raise  # the target itself is wrong: nothing else would fix that
        return None
    except OSError:
        return None


# Client: applying a bundle.


def _rdiff_timeout(size: int) -> float:
    # librsync patches at hundreds of MB/s; allow 10 MB/s plus start-up before calling it a hang.
    return 60.0 + size / 10e6


def apply_indirect_to_stage(
    *, bundle: Path, install_root: Path, stage_dir: Path, max_total_bytes: int, bases: dict[str, str] | None = None
) -> list[str]:
    """Unpack a bundle and write each verified new file into ``stage_dir``; return the paths written.
    ``bases``: the files signed in place of missing ones (``signature_set``'s)."""
    install_root, stage_dir = Path(install_root), Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    unpack = stage_dir.parent / f".{stage_dir.name}.bundle-{secrets.token_hex(6)}"
    written: list[str] = []
    try:
        with deferred_fsync():  # one sync at the end, before a journal may commit the stage
            return _stage_indirect(bundle, install_root, stage_dir, unpack, max_total_bytes, written, bases or {})
    finally:
        if unpack.exists():
            _rmtree(unpack)


def _stage_indirect(
    bundle: Path, install_root: Path, stage_dir: Path, unpack: Path, max_total_bytes: int, written: list[str],
    bases: dict[str, str],
) -> list[str]:
    names = extract_tar_zst(src=Path(bundle), dest=unpack, max_total_bytes=max_total_bytes)
    if MANIFEST_NAME not in names:
        raise ArchiveError(f"indirect bundle has no {MANIFEST_NAME}")
    manifest = IndirectManifest.from_json((unpack / MANIFEST_NAME).read_bytes())
    extra = set(names) - {op.blob for op in manifest.ops} - {MANIFEST_NAME}
    if extra:
        raise ArchiveError(f"indirect bundle has unexpected member {sorted(extra)[0]!r}")
    for op in manifest.ops:
        blob = unpack.joinpath(*op.blob.split("/"))
        if not blob.is_file() or blob.stat().st_size != op.blob_size:
            raise ArchiveError(f"indirect bundle: blob {op.blob!r} is missing or of the wrong size")
        dst = stage_dir.joinpath(*op.path.split("/"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        basis = install_root.joinpath(*op.path.split("/"))
        if op.path in bases and not basis.exists():
            basis = install_root.joinpath(*validate_relpath(bases[op.path]).split("/"))
        if op.engine == "rdiff":
            _apply_rdiff(op, blob=blob, basis=basis, dst=dst)
        elif op.engine in KNOWN_BASIS_ENGINES:
            _check_basis(op, basis)
            ENGINES[op.engine].apply_file(
                old=basis,
                patch=blob,
                out=dst,
                expected_size=op.target_size,
                expected_sha256=op.target_sha256,
                old_sha256=op.basis_sha256,
                patch_sha256=op.blob_sha256,
            )
        else:
            ENGINES["zstd"].apply_file(
                old=None,
                patch=blob,
                out=dst,
                expected_size=op.target_size,
                expected_sha256=op.target_sha256,
                patch_sha256=op.blob_sha256,
            )
        os.chmod(dst, 0o755 if op.executable else 0o644)
        written.append(op.path)
    return written


def _check_basis(op: IndirectOp, basis: Path) -> None:
    try:
        local_sha = sha256_file(basis) if basis.is_file() and not basis.is_symlink() else None
    except OSError:
        local_sha = None
    if local_sha != op.basis_sha256:
        raise IntegrityError(
            f"{op.path}: the local file changed since its signature was made; fetch it whole", path=op.path
        )


def _apply_rdiff(op: IndirectOp, *, blob: Path, basis: Path, dst: Path) -> None:
    _check_basis(op, basis)
    if sha256_file(blob) != op.blob_sha256:
        raise IntegrityError(f"{op.blob}: delta is corrupt (SHA-256 mismatch)", path=op.path)
    try:
        rdiff.patch_file(
            basis=basis,
            delta=blob,
            out=dst,
            expected_size=op.target_size,
            expected_sha256=op.target_sha256,
            timeout=_rdiff_timeout(op.target_size),
        )
    except MistCoreError as exc:
        exc.path = exc.path or op.path
        raise
