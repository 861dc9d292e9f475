"""Pushing at patch size: the admin's client sends the new build's manifest first, the server answers with
the files it lacks (by sha256, against the latest build of that platform), the client uploads only those
(a .tar.zst through the resumable upload API), and finalize assembles the whole tree from the upload plus
the basis version's tree, verifying every file against the manifest, before the ordinary push service.

A large changed file goes up block by block: the plan lists as ``rdiff`` the needed files of at least
``RDIFF_MIN_BYTES`` whose path the basis also has (of that size too); the client fetches the librsync
signatures of the server's copies (``basis_signatures``), packs a mistcore indirect bundle (an rdiff delta per
such file, or the whole file where that is smaller) and uploads it with ``layout="rdiff"``; finalize patches
the server's copies with it (librsync in a subprocess with a timeout, see mistcore.engines.rdiff) and checks
every result against the manifest like any uploaded file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builds import storage
from builds.models import FileEntry, UploadSession, Version
from builds.services import BuildError, latest_version
from catalog.models import Game
from mistcore import indirect, safetar
from mistcore.errors import IntegrityError, MistCoreError
from mistcore.fsutil import HashingWriter, fsync_dir, sha256_file
from mistcore.manifest import FileRecord, Manifest

RDIFF_MIN_BYTES = 1 << 20  # below this a changed file goes whole: a signature round trip would not pay
LAYOUTS = ("files", "rdiff")


@dataclass(frozen=True)
class PushPlan:
    platform: str
    basis: Version | None
    needed: list[FileRecord]  # one file per missing sha256 (duplicates inside the build are copied server-side)
    manifest: Manifest
    rdiff: list[str]  # needed files large enough, with a basis copy at the same path, to go up as librsync deltas

    @property
    def needed_bytes(self) -> int:
        return sum(r.size for r in self.needed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "basis_version": self.basis.name if self.basis else None,
            "needed": [r.path for r in self.needed],
            "needed_files": len(self.needed),
            "needed_bytes": self.needed_bytes,
            "rdiff": self.rdiff,
            "total_files": len(self.manifest.files),
            "total_bytes": self.manifest.total_size,
        }


def parse_manifest(raw: Any) -> Manifest:
    """The client's manifest (a JSON object or its text) -> Manifest, or BuildError with the reason."""
    try:
        data = raw if isinstance(raw, str | bytes) else json.dumps(raw)
        return Manifest.from_json(data.encode() if isinstance(data, str) else data)
    except (MistCoreError, ValueError, TypeError, RecursionError) as exc:
        raise BuildError(f"manifest: {exc}") from None


def _basis(game: Game, platform: str) -> Version | None:
    """The build whose files the server can copy: the platform's latest, when its tree is on disk."""
    latest = latest_version(game=game, platform=platform)
    if latest is None or not storage.tree_dir(game.slug, platform, latest.name).is_dir():
        return None
    return latest


def plan_push(*, game: Game, platform: str, manifest: Manifest) -> PushPlan:
    basis = _basis(game, platform)
    have: set[str] = set()
    basis_sizes: dict[str, int] = {}
    if basis is not None:
        for path, sha, size in FileEntry.objects.filter(version=basis).values_list("path", "sha256", "size"):
            have.add(sha)
            basis_sizes[path] = size
    needed: dict[str, FileRecord] = {}
    for rec in manifest.files:
        if rec.sha256 not in have and rec.sha256 not in needed:
            needed[rec.sha256] = rec
    rdiff = sorted(r.path for r in needed.values()
                   if r.size >= RDIFF_MIN_BYTES and basis_sizes.get(r.path, 0) >= RDIFF_MIN_BYTES)
    return PushPlan(platform=platform, basis=basis, needed=sorted(needed.values(), key=lambda r: r.path),
                    manifest=manifest, rdiff=rdiff)


def basis_signatures(*, game: Game, platform: str, basis_version: str, paths: list[str], out: Path) -> int:
    """Write at `out` the librsync signatures (mistcore's signature set) of the basis version's copies of
    `paths`, for the admin's client to make its deltas against; returns the tar's size."""
    basis = Version.objects.filter(game=game, platform=platform, name=basis_version).first()
    root = storage.tree_dir(game.slug, platform, basis_version)
    if basis is None or not root.is_dir():
        raise BuildError(f"no {platform} build {basis_version!r} of {game.slug} on the server to diff against")
    known = set(FileEntry.objects.filter(version=basis, path__in=paths).values_list("path", flat=True))
    unknown = sorted(set(paths) - known)
    if unknown:
        raise BuildError(f"{unknown[0]}: not a file of {basis_version}")
    size, _sha = indirect.signature_set(root=root, paths=sorted(known), out_tar=out)
    return size


def assemble_tree(*, session: UploadSession, archive: Path) -> Path:
    """Build the whole tree of a partial upload next to it: the uploaded files, then every other file of the
    manifest copied from the basis tree (or from a file of the same content already placed), each one checked
    against the manifest while it is written. Returns the folder; BuildError says what is wrong."""
    manifest = parse_manifest(session.manifest)
    work = archive.with_name(f"{session.pk}.tree")
    shutil.rmtree(work, ignore_errors=True)
    basis_root = storage.tree_dir(session.game.slug, session.platform, session.basis_version) if session.basis_version else None
    try:
        if session.layout == "rdiff":
            names = _apply_block_upload(archive=archive, work=work, basis_root=basis_root, manifest=manifest)
        else:
            names = safetar.extract_tar_zst(src=archive, dest=work, max_total_bytes=max(manifest.total_size, 1),
                                            max_members=len(manifest.files) + 1)
    except (MistCoreError, OSError) as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise BuildError(f"the uploaded files are not a valid .tar.zst: {exc}") from None
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        wanted = manifest.by_path()
        extra = [n for n in names if n not in wanted]
        if extra:
            raise BuildError(f"the upload holds {extra[0]} which is not in the manifest")
        basis_paths: dict[str, str] = {}
        if basis_root is not None:
            basis = Version.objects.filter(game=session.game, platform=session.platform, name=session.basis_version).first()
            if basis is None or not basis_root.is_dir():
                raise BuildError(f"version {session.basis_version} changed on the server during the upload: push again")
            for path, sha in FileEntry.objects.filter(version=basis).values_list("path", "sha256"):
                basis_paths.setdefault(sha, path)
        placed: dict[str, Path] = {}
        uploaded = set(names)
        for rec in manifest.files:
            target = work.joinpath(*rec.path.split("/"))
            if rec.path in uploaded:
                _check(target, rec)
                placed.setdefault(rec.sha256, target)
        for rec in manifest.files:
            if rec.path in uploaded:
                continue
            target = work.joinpath(*rec.path.split("/"))
            source = placed.get(rec.sha256)
            if source is None and rec.sha256 in basis_paths and basis_root is not None:
                source = basis_root.joinpath(*basis_paths[rec.sha256].split("/"))
            if source is None:
                raise BuildError(f"{rec.path}: neither uploaded nor on the server (sha256 {rec.sha256[:12]}…): push again")
            _copy_checked(source, target, rec)
            placed.setdefault(rec.sha256, target)
        fsync_dir(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return work


def _apply_block_upload(*, archive: Path, work: Path, basis_root: Path | None, manifest: Manifest) -> list[str]:
    """Write into `work` every file of an rdiff-layout upload: deltas applied to the basis's copies, whole files
    unpacked; each result checked against the size and sha256 its op names (the caller checks the manifest)."""
    if basis_root is None or not basis_root.is_dir():
        raise BuildError("a block-level upload needs the basis version's files on the server: push again")
    try:
        return indirect.apply_indirect_to_stage(bundle=archive, install_root=basis_root, stage_dir=work,
                                                max_total_bytes=manifest.total_size + (64 << 20))
    except IntegrityError as exc:
        where = f"{exc.path}: " if exc.path else ""
        raise BuildError(f"{where}the uploaded delta does not rebuild the file ({exc}): push again") from None
    except (MistCoreError, OSError) as exc:
        path = getattr(exc, "path", None)
        where = f"{path}: " if path else ""
        raise BuildError(f"{where}the uploaded block-level bundle is not valid: {exc}") from None


def _check(path: Path, rec: FileRecord) -> None:
    if path.stat().st_size != rec.size or sha256_file(path) != rec.sha256:
        raise BuildError(f"{rec.path}: the uploaded file does not match the manifest (corrupt upload?)")
    os.chmod(path, 0o755 if rec.executable else 0o644)


def _copy_checked(source: Path, target: Path, rec: FileRecord) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(target, "xb") as out:
        writer = HashingWriter(out, limit=rec.size, what=rec.path)
        try:
            while chunk := src.read(1 << 20):
                writer.write(chunk)
        except IntegrityError:
            raise BuildError(f"{rec.path}: the server's copy does not match the manifest: push again") from None
    if writer.count != rec.size or writer.hexdigest() != rec.sha256:
        raise BuildError(f"{rec.path}: the server's copy does not match the manifest: push again")
    os.chmod(target, 0o755 if rec.executable else 0o644)
