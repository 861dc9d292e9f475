"""Resumable chunked uploads of a build archive (remote push), then the same push service.

The client PUTs chunks with `Content-Range: bytes a-b/total`; a chunk must start where the
received bytes end (else 409 with `received`, so the client resumes from there). Chunks are
streamed to disk, never held in memory.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import IO, Any

from django.db import transaction
from django.http import Http404

from builds import partial, storage
from builds.models import UploadSession
from builds.services import BuildError, PushBlocked, PushResult, push_version
from catalog.models import Game
from catalog.platforms import PlatformError, platform_or_default
from mistcore.fsutil import sha256_file
from mistcore.manifest import validate_version_name

# ASCII digits, at most 19 (a signed 64-bit size): int() never sees thousands of digits or other scripts.
_RANGE = re.compile(r"^bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19})$")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst")


class RangeMismatch(BuildError):
    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


class UploadBusy(BuildError):
    """The session is not open for this call (another finalize holds it, or it is done/failed): HTTP 409."""

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message)
        self.state = state


def upload_path(session: UploadSession) -> Path:
    return storage.storage_root() / "uploads" / f"{session.pk}.part"


def start_upload(
    *, user: Any, game: str, version: str, filename: str, total_size: int, sha256: str = "", notes: str = "",
    platform: str | None = None, manifest: Any = None, layout: str = "files",
) -> UploadSession:
    """Open an upload session for a new version (of one platform, default MIST_DEFAULT_PLATFORM) of a game.

    With `manifest` (the whole build's, see builds.partial) the upload is a .tar.zst of only the files
    `plan_push` said the server lacks; finalize takes the others from the basis version's tree. With
    `layout="rdiff"` that .tar.zst is a mistcore indirect bundle (large changed files as librsync deltas
    against the basis's copies, see builds.partial).
    """
    found = Game.objects.filter(slug=game).first()
    if found is None:
        raise BuildError(f"no game {game!r}: create it first (manage.py new_game)")
    try:
        validate_version_name(version)
    except Exception as exc:
        raise BuildError(str(exc)) from None
    try:
        platform = platform_or_default(platform)
    except PlatformError as exc:
        raise BuildError(str(exc)) from None
    if found.versions.filter(name=version, platform=platform).exists():
        raise BuildError(f"the {platform} build of version {version!r} of {game} already exists")
    if not filename.lower().endswith(ARCHIVE_SUFFIXES):
        raise BuildError(f"{filename}: upload a .zip or .tar(.gz/.zst) of the build")
    manifest_text, basis = "", ""
    if manifest is not None:
        parsed = partial.parse_manifest(manifest)
        if not filename.lower().endswith((".tar.zst", ".tzst")):
            raise BuildError(f"{filename}: a push at patch size uploads a .tar.zst of the needed files")
        if parsed.version != version:
            raise BuildError(f"the manifest is for version {parsed.version!r}, not {version!r}")
        plan = partial.plan_push(game=found, platform=platform, manifest=parsed)
        manifest_text = parsed.to_json().decode()
        basis = plan.basis.name if plan.basis else ""
    if layout not in partial.LAYOUTS:
        raise BuildError(f"layout must be one of {', '.join(partial.LAYOUTS)}")
    if layout == "rdiff" and not basis:
        raise BuildError("a block-level (rdiff) upload needs a manifest and a previous build on the server to diff against")
    session = UploadSession.objects.create(
        game=found, version_name=version, platform=platform, filename=Path(filename).name, total_size=total_size,
        sha256=sha256, notes=notes, created_by=user, manifest=manifest_text, basis_version=basis, layout=layout,
    )
    path = upload_path(session)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return session


def get_upload(*, upload_id: Any) -> UploadSession:
    session = UploadSession.objects.select_related("game").filter(pk=upload_id).first()
    if session is None:
        raise Http404("No such upload.")
    return session


def write_chunk(*, session: UploadSession, content_range: str, body: IO[bytes], chunk_sha256: str = "") -> UploadSession:
    """Append one chunk at the right offset; with `chunk_sha256` (the X-Mist-Chunk-SHA256 header) a chunk that
    arrives with other bytes is refused and dropped, so the client sends it again."""
    match = _RANGE.match(content_range.strip())
    if not match:
        raise BuildError("Content-Range must be 'bytes <first>-<last>/<total>'")
    first, last, total = (int(g) for g in match.groups())
    if total != session.total_size or last < first or last >= total:
        raise BuildError(f"Content-Range {content_range!r} does not fit an upload of {session.total_size} bytes")
    with transaction.atomic():
        session = UploadSession.objects.select_for_update().get(pk=session.pk)
        if session.status != UploadSession.Status.OPEN:
            raise UploadBusy(f"this upload is {session.status}: no more chunks", session.status)
        if first != session.received:
            raise RangeMismatch(f"expected a chunk starting at byte {session.received}", session.received)
        want = last - first + 1
        path = upload_path(session)
        with open(path, "r+b") as out:
            out.seek(first)
            out.truncate()
            got = 0
            digest = hashlib.sha256()
            while got < want:
                chunk = body.read(min(1 << 20, want - got))
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
        if got != want:
            # Keep what arrived whole? No: the chunk is the unit; the client resends it.
            with open(path, "r+b") as out:
                out.truncate(first)
            raise BuildError(f"the chunk ended after {got} of {want} bytes; send it again")
        if chunk_sha256 and digest.hexdigest() != chunk_sha256.strip().lower():
            with open(path, "r+b") as out:
                out.truncate(first)
            raise BuildError(f"the chunk at byte {first} arrived corrupted (its sha256 differs); send it again")
        session.received = last + 1
        session.save(update_fields=["received", "updated_at"])
    return session


def _claim_for_finalize(session: UploadSession) -> UploadSession:
    """Move the session from open to finalizing under its row lock: one finalize runs, any other call gets 409."""
    with transaction.atomic():
        session = UploadSession.objects.select_for_update().select_related("game").get(pk=session.pk)
        if session.status == UploadSession.Status.DONE:
            raise UploadBusy("this upload was already pushed", session.status)
        if session.status != UploadSession.Status.OPEN:
            raise UploadBusy(f"this upload is {session.status}", session.status)
        if session.received != session.total_size:
            raise BuildError(f"upload incomplete: {session.received} of {session.total_size} bytes received")
        session.status = UploadSession.Status.FINALIZING
        session.save(update_fields=["status", "updated_at"])
    return session


def finalize_upload(*, session: UploadSession, user: Any) -> PushResult:
    """Check the whole upload and push it as a new version (one caller at a time: the others get UploadBusy)."""
    session = _claim_for_finalize(session)
    path = upload_path(session)
    if session.sha256 and sha256_file(path) != session.sha256:
        UploadSession.objects.filter(pk=session.pk).update(status=UploadSession.Status.FAILED, error="sha256 mismatch")
        raise BuildError("the uploaded file's sha256 does not match the one announced: upload it again")
    suffix = next(sfx for sfx in ARCHIVE_SUFFIXES if session.filename.lower().endswith(sfx))
    archive = path.with_name(f"{session.pk}{suffix}")  # never the client's name on our disk
    path.rename(archive)
    tree: Path | None = None
    try:
        staged = None
        if session.manifest:
            tree = partial.assemble_tree(session=session, archive=archive)
            staged = partial.parse_manifest(session.manifest)  # every file of the tree was checked against it
        result = push_version(
            game=session.game, name=session.version_name, source=tree or archive, notes=session.notes, user=user,
            platform=session.platform, staged=staged,
        )
    except PushBlocked:
        if tree is not None:
            shutil.rmtree(tree, ignore_errors=True)
        archive.rename(path)  # keep the upload: finalizing again after the backup works
        UploadSession.objects.filter(pk=session.pk).update(status=UploadSession.Status.OPEN)
        raise
    except BaseException as exc:
        if tree is not None:
            shutil.rmtree(tree, ignore_errors=True)
        if not isinstance(exc, BuildError):
            # An unexpected crash: give the upload back so the admin can finalize again, never stuck "finalizing".
            if archive.exists():
                archive.rename(path)
            UploadSession.objects.filter(pk=session.pk).update(status=UploadSession.Status.OPEN)
            raise
        UploadSession.objects.filter(pk=session.pk).update(status=UploadSession.Status.FAILED, error=str(exc))
        archive.unlink(missing_ok=True)
        raise
    archive.unlink(missing_ok=True)
    if tree is not None:
        shutil.rmtree(tree, ignore_errors=True)
    UploadSession.objects.filter(pk=session.pk).update(status=UploadSession.Status.DONE, version=result.version)
    return result
