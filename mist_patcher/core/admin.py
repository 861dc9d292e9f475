"""The admin's remote commands: create games, push builds at patch size, list and remove versions, resync Steam.

A push hashes the local build (mistcore's manifest, the same format the server makes), asks the server which
files it lacks (``builds/uploads/plan``: by sha256, against the latest build of that platform), packs only
those into a ``.tar.zst`` and uploads it through the resumable upload API in chunks, each with its sha256
(a chunk damaged on the way is refused and sent again). The upload's state is kept in
``<home>/pushes/`` so that a push killed halfway resumes where it stopped when run again.

Large changed files go up block by block: for the files the plan lists under ``rdiff`` (1 MiB or more, with a
copy at the same path in the basis version), the client fetches the librsync signatures of the server's
copies (``builds/uploads/signatures``), checks them like any untrusted signature set, and packs a mistcore
indirect bundle instead: an rdiff delta of each such file against the server's copy (or the whole file
where that is smaller), the other needed files whole. The server patches its copies and checks every result
against the manifest. A server without that API gets the whole files, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.errors import ApiError, PatcherError
from mist_patcher.core.progress import ProgressCallback, ProgressEvent, ignore_progress
from mistcore import indirect, safetar
from mistcore.fsutil import atomic_write, sha256_file
from mistcore.manifest import Manifest, scan_directory

CHUNK = 8 << 20
PACK_LEVEL = 10  # zstd level of the files that go up whole
CHUNK_ENV = "MIST_PATCHER_UPLOAD_CHUNK"  # bytes per chunk (tests use small ones to kill a push halfway)


def _chunk_size() -> int:
    try:
        return max(64 * 1024, int(os.environ.get(CHUNK_ENV, "") or CHUNK))
    except ValueError:
        return CHUNK


class AdminError(PatcherError):
    """A remote admin command the server refused (its reason is the message)."""


def _admin_call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ApiError as exc:
        if exc.status == 403:
            raise AdminError(f"this account is not an admin on the server ({exc.detail}): "
                             f"`mist-patcher admin login` with the admin's account") from None
        raise AdminError(exc.detail if exc.status else str(exc)) from None


def new_game(ctx: PatcherContext, *, slug: str, title: str = "", app_id: int | None = None,
             private: bool = False) -> dict[str, Any]:
    body = {"slug": slug, "title": title, "app_id": app_id, "private": private}
    return dict(_admin_call(lambda: ctx.api.post_json("admin/games", body, ok=(201,))))


def resync_steam(ctx: PatcherContext, *, slug: str) -> dict[str, Any]:
    return dict(_admin_call(lambda: ctx.api.post_json(f"admin/games/{quote(slug)}/resync", None, ok=(200,))))


def delta_report(ctx: PatcherContext, *, slug: str, version: str, platform: str | None = None) -> dict[str, Any]:
    params = {"platform": platform} if platform else None
    return dict(_admin_call(lambda: ctx.api.get_json(
        f"admin/games/{quote(slug)}/versions/{quote(version)}/delta-report", params=params)))


def list_versions(ctx: PatcherContext, *, slug: str | None, platform: str | None = None) -> Any:
    if slug is None:
        return _admin_call(lambda: ctx.api.games())
    return _admin_call(lambda: ctx.api.game(slug, platform=platform))


def remove_version(ctx: PatcherContext, *, slug: str, version: str, platform: str | None = None,
                   force: bool = False) -> dict[str, Any]:
    params: dict[str, str] = {}
    if platform:
        params["platform"] = platform
    if force:
        params["force"] = "1"
    response = _admin_call(lambda: ctx.api.request(
        "DELETE", f"admin/games/{quote(slug)}/versions/{quote(version)}", params=params))
    return dict(response.json())


# --- push -------------------------------------------------------------------------------------------------


@dataclass
class PushState:
    """What a running push has done so far (``<home>/pushes/<game>-<platform>-<version>.json``)."""

    game: str
    version: str
    platform: str
    content_hash: str
    archive: str
    archive_size: int
    archive_sha256: str
    upload_id: str = ""
    layout: str = "files"  # "rdiff": the archive is an indirect bundle (deltas against the server's copies)


@dataclass
class PushResult:
    game: str
    version: str
    platform: str
    files: int
    total_bytes: int
    needed_files: int
    needed_bytes: int  # the bytes of the new or changed files
    block_files: int  # of those, the large changed files sent as librsync deltas against the server's copy
    sent_bytes: int  # what this run put on the wire (the packed upload, or what was left of it)
    upload_bytes: int  # the whole packed upload
    basis_version: str | None
    resumed_from: int
    status: str
    seconds: float
    phases: dict[str, float]  # seconds spent hashing, planning, packing, uploading, finalizing and waiting

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _state_path(ctx: PatcherContext, game: str, platform: str, version: str) -> Path:
    folder = ctx.home / "pushes"
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{game}-{platform}-{version}")
    return folder / f"{safe}.json"


def _load_state(path: Path) -> PushState | None:
    try:
        return PushState(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _save_state(path: Path, state: PushState) -> None:
    with atomic_write(path, "w") as f:
        json.dump(asdict(state), f, indent=1)


def push_build(
    ctx: PatcherContext,
    *,
    game: str,
    version: str,
    path: Path,
    platform: str | None = None,
    notes: str = "",
    wait: float = 0.0,
    progress: ProgressCallback = ignore_progress,
    note: Callable[[str], None] | None = None,
) -> PushResult:
    """Push the build folder `path` as `version` of `game`, sending only what the server lacks."""
    started = time.monotonic()
    say = note or (lambda message: None)
    root = Path(path)
    if not root.is_dir():
        raise AdminError(f"{root}: not a folder (push a build folder; the server also takes archives via manage.py)")
    phases: dict[str, float] = {}
    mark = started

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = round(phases.get(name, 0.0) + now - mark, 3)
        mark = now

    manifest = scan_directory(root, version=version)
    phase("hash")
    content_hash = manifest.content_hash()
    asked: dict[str, Any] = {"game": game, "manifest": json.loads(manifest.to_json())}
    if platform:
        asked["platform"] = platform
    plan = _admin_call(lambda: ctx.api.post_json("builds/uploads/plan", asked))
    phase("plan")
    platform = str(plan["platform"])  # the server's default when none was named
    say(f"{plan['needed_files']} of {plan['total_files']} files are new or changed "
        f"({plan['needed_bytes']} of {plan['total_bytes']} bytes)"
        + (f"; the rest comes from {plan['basis_version']} on the server" if plan.get("basis_version") else ""))

    state_file = _state_path(ctx, game, platform, version)
    state = _load_state(state_file)
    if state is not None and (state.content_hash != content_hash or not Path(state.archive).is_file()
                              or os.path.getsize(state.archive) != state.archive_size):
        state = None  # another build under that name, or the packed file is gone: start over
    if state is None:
        archive = state_file.with_suffix(".tar.zst")
        block_paths = [str(p) for p in plan.get("rdiff") or []]
        layout = "files"
        if block_paths and plan.get("basis_version"):
            say(f"{len(block_paths)} large changed files go up as deltas against the server's copies")
            size, sha = _pack_blocks(ctx, game=game, root=root, manifest=manifest, plan=plan, paths=block_paths, out=archive)
            layout = "rdiff"
        else:
            size, sha = safetar.pack_tar_zst(root=root, paths=plan["needed"], dst=archive, level=PACK_LEVEL)
        state = PushState(game=game, version=version, platform=platform, content_hash=content_hash,
                          archive=str(archive), archive_size=size, archive_sha256=sha, layout=layout)
        _save_state(state_file, state)

    session = None
    if state.upload_id:
        with contextlib.suppress(ApiError):
            session = ctx.api.get_json(f"builds/uploads/{state.upload_id}")
        if session is not None and session.get("status") != "open":
            session = None
    if session is None:
        session = _admin_call(lambda: ctx.api.post_json("builds/uploads", {
            "game": game, "version": version, "platform": platform, "filename": f"{version}.tar.zst",
            "total_size": state.archive_size, "sha256": state.archive_sha256, "notes": notes,
            "manifest": json.loads(manifest.to_json()), "layout": state.layout,
        }, ok=(201,)))
        state.upload_id = session["id"]
        _save_state(state_file, state)
    resumed_from = int(session["received"])
    phase("pack")
    sent = _upload(ctx, state, start=resumed_from, progress=progress)
    phase("upload")
    finalized = _admin_call(lambda: ctx.api.post_json(f"builds/uploads/{state.upload_id}/finalize", None, ok=(202,)))
    phase("finalize")
    version_data = finalized["version"]
    Path(state.archive).unlink(missing_ok=True)
    state_file.unlink(missing_ok=True)
    status = version_data["status"]
    if wait > 0:
        status = _wait_ready(ctx, game=game, version=version, platform=platform, timeout=wait)
        phase("wait")
    return PushResult(
        game=game, version=version, platform=platform, files=len(manifest.files), total_bytes=manifest.total_size,
        needed_files=int(plan["needed_files"]), needed_bytes=int(plan["needed_bytes"]),
        block_files=len(plan.get("rdiff") or []) if state.layout == "rdiff" else 0, sent_bytes=sent,
        upload_bytes=state.archive_size, basis_version=plan.get("basis_version"), resumed_from=resumed_from,
        status=status, seconds=time.monotonic() - started, phases=phases,
    )


def _pack_blocks(ctx: PatcherContext, *, game: str, root: Path, manifest: Manifest, plan: dict[str, Any], paths: list[str],
                 out: Path) -> tuple[int, str]:
    """The upload as an indirect bundle: `paths` as rdiff deltas against the server's signatures (validated as
    untrusted input), every other needed file whole. Returns the bundle's (size, sha256)."""
    body = {"game": game, "platform": plan["platform"],
            "basis_version": plan["basis_version"], "paths": paths}
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.sigs-") as tmp_name:
        tmp = Path(tmp_name)
        sig_tar = tmp / "basis.sigs.tar"
        response = _admin_call(lambda: ctx.api.request("POST", "builds/uploads/signatures", json=body, stream=True,
                                                       timeout=max(ctx.api.timeout, 600)))
        with response, open(sig_tar, "wb") as f:
            for block in response.iter_content(1 << 20):
                f.write(block)
        try:
            sigs = indirect.read_signature_set(src=sig_tar, dest_dir=tmp / "sigs", allowed_paths=set(paths),
                                               max_bytes=max(manifest.total_size, 64 << 20))
        except Exception as exc:
            raise AdminError(f"the server's signatures are not valid: {exc}") from None
        indirect.build_indirect_bundle(signatures=sigs, basis_info=sigs.basis_info, target_root=root,
                                       target_manifest=manifest, paths=plan["needed"], out=out, level=PACK_LEVEL)
    return out.stat().st_size, sha256_file(out)


def _upload(ctx: PatcherContext, state: PushState, *, start: int, progress: ProgressCallback) -> int:
    total = state.archive_size
    size = _chunk_size()
    offset = start
    sent = 0
    retries = 0
    with open(state.archive, "rb") as f:
        while offset < total:
            f.seek(offset)
            chunk = f.read(min(size, total - offset))
            headers = {"Content-Range": f"bytes {offset}-{offset + len(chunk) - 1}/{total}",
                       "Content-Type": "application/octet-stream",
                       "X-Mist-Chunk-SHA256": hashlib.sha256(chunk).hexdigest()}
            try:
                response = ctx.api.request("PUT", f"builds/uploads/{state.upload_id}", data=chunk, headers=headers,
                                           ok=(200,))
            except ApiError as exc:
                if exc.status == 409:  # the server has a different length: resume from what it has
                    got = ctx.api.get_json(f"builds/uploads/{state.upload_id}")
                    offset = int(got["received"])
                    continue
                retries += 1
                if retries > 3:
                    raise AdminError(f"upload refused at byte {offset}: {exc.detail}") from None
                continue
            offset = int(response.json()["received"])
            sent += len(chunk)
            retries = 0
            progress(ProgressEvent(phase="upload", done=offset, total=total))
    return sent


def _wait_ready(ctx: PatcherContext, *, game: str, version: str, platform: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = "pending"
    while time.monotonic() < deadline:
        detail = ctx.api.game(game, platform=platform)
        found = next((v for v in detail.get("versions", []) if v["name"] == version), None)
        status = found["status"] if found else "missing"
        if status in ("ready", "failed"):
            return status
        time.sleep(0.5)
    return status

