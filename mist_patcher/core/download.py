"""The one downloader: resumable (HTTP Range + If-Range), bandwidth-limited, SHA-256 checked.

A download of ``dest`` goes to ``dest.part`` with a small ``dest.part.json`` beside it naming
what it is a part of (URL and expected SHA-256). A later call for the same artifact resumes
from the bytes already there; a part of some other artifact is thrown away. The finished file
is renamed into place only once its size and SHA-256 are right.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import requests

from mist_patcher.core.api import ApiClient
from mist_patcher.core.control import NEVER_CANCELLED, Control
from mist_patcher.core.errors import DiskFullError, DownloadError, PatcherError, ServerUnreachable
from mist_patcher.core.progress import ProgressCallback, ProgressMeter, ignore_progress
from mist_patcher.core.ratelimit import TokenBucket
from mistcore.fsutil import fsync_dir

CHUNK = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass
class DownloadResult:
    """A finished download: where it is, its size and hash, and how many bytes this call fetched."""

    path: Path
    size: int
    sha256: str
    transferred: int
    resumed_from: int


def _hash_prefix(path: Path, control: Control) -> tuple[hashlib._Hash, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            control.checkpoint()
            digest.update(chunk)
            size += len(chunk)
    return digest, size


def _raise_if_disk_full(exc: OSError, *, folder: Path, need: int) -> None:
    if exc.errno == errno.ENOSPC:
        free = shutil.disk_usage(folder).free
        raise DiskFullError(need=need, have=free, where=str(folder)) from None


class Downloader:
    """Fetches artifacts from the server through one shared token bucket."""

    def __init__(
        self,
        api: ApiClient,
        *,
        limiter: TokenBucket | None = None,
        retries: int = 5,
        read_timeout: float = 60.0,
    ) -> None:
        self.api = api
        self.limiter = limiter or TokenBucket(0)
        self.retries = retries
        self.read_timeout = read_timeout

    def _open(self, url: str, headers: dict[str, str]) -> tuple[requests.Response, str | None]:
        """GET the artifact. A server on object storage answers 302 to a short-lived presigned URL of the object:
        followed here, without our token, with If-Range set to the object's own ETag (the store knows nothing
        of our sha256); returns the response and the sha256 the server vouched for in its redirect."""
        timeout = (self.api.timeout, self.read_timeout)
        response = self.api.request("GET", url, ok=(200, 206, 416, 301, 302, 303, 307, 308), stream=True,
                                    headers=headers, timeout=timeout, allow_redirects=False)
        location = _redirect_target(response)
        if location is None:
            return response, None
        vouched = response.headers.get("X-Mist-SHA256")
        object_etag = response.headers.get("X-Mist-Object-ETag", "")
        response.close()
        if not location:
            raise DownloadError(f"{url}: the server redirected without a Location")
        object_headers = dict(headers)
        if "If-Range" in object_headers:
            if object_etag:
                object_headers["If-Range"] = object_etag
            else:
                del object_headers["If-Range"]  # no way to tell a changed object: the sha256 check still holds
        target = self.api.request("GET", location, auth=False, ok=(200, 206, 416), stream=True,
                                  headers=object_headers, timeout=timeout, allow_redirects=False)
        return target, vouched

    def fetch(
        self,
        url: str,
        dest: Path,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
        progress: ProgressCallback = ignore_progress,
        control: Control = NEVER_CANCELLED,
        phase: str = "download",
        message: str = "",
    ) -> DownloadResult:
        """Download ``url`` to ``dest`` (resuming a previous part); DownloadError if the bytes are wrong."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        meta_path = dest.with_name(dest.name + ".part.json")
        identity = {"url": url, "sha256": expected_sha256}

        if dest.exists() and expected_sha256:
            digest, size = _hash_prefix(dest, control)
            if digest.hexdigest() == expected_sha256:
                meter = ProgressMeter(progress, phase=phase, total=size, done=size, message=message)
                meter.finish()
                return DownloadResult(dest, size, expected_sha256, 0, size)
            dest.unlink()

        # Keep a part only if it belongs to this very artifact.
        if part.exists():
            try:
                old = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            if old != identity or not expected_sha256:
                part.unlink()
        if not part.exists():
            part.write_bytes(b"")
            meta_path.write_text(json.dumps(identity), encoding="utf-8")

        digest, have = _hash_prefix(part, control)
        resumed_from = have
        meter = ProgressMeter(progress, phase=phase, total=expected_size or 0, done=have, message=message)
        meter.report()
        transferred = 0
        attempts = 0
        total: int | None = expected_size
        server_sha: str | None = None
        while True:
            control.checkpoint()
            if expected_size is not None and have == expected_size and have:
                break  # the part is already complete: nothing to ask for
            headers = {"Accept-Encoding": "identity"}
            if have:
                headers["Range"] = f"bytes={have}-"
                if expected_sha256:
                    # If the artifact changed under the same URL, the server sends it whole (200).
                    headers["If-Range"] = f'"{expected_sha256}"'
            try:
                response, redirect_sha = self._open(url, headers)
            except ServerUnreachable:
                attempts += 1
                if attempts > self.retries:
                    raise
                control.sleep(min(2.0**attempts * 0.25, 10.0))
                continue
            with response:
                server_sha = response.headers.get("X-Mist-SHA256") or redirect_sha or server_sha
                if expected_sha256 and server_sha and server_sha != expected_sha256:
                    raise DownloadError(
                        f"{url}: the server now has a different file (SHA-256 {server_sha[:12]}..., "
                        f"expected {expected_sha256[:12]}...); start again"
                    )
                if response.status_code == 416:
                    size_header = response.headers.get("Content-Range", "")
                    match = re.fullmatch(r"bytes \*/(\d+)", size_header.strip())
                    if match and int(match.group(1)) == have:
                        break  # the part is already complete
                    digest, have = hashlib.sha256(), 0
                    part.write_bytes(b"")
                    meter.done = 0
                    continue
                if response.status_code == 200:
                    if have:
                        # Range ignored or If-Range did not match: start over from byte 0.
                        digest, have = hashlib.sha256(), 0
                        part.write_bytes(b"")
                        meter.done = 0
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else total
                else:
                    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
                    if not match or int(match.group(1)) != have:
                        raise DownloadError(f"{url}: the server answered a different range than asked for")
                    if match.group(3) != "*":
                        total = int(match.group(3))
                if total is not None:
                    if expected_size is not None and total != expected_size:
                        raise DownloadError(f"{url}: the server has {total} bytes, expected {expected_size}")
                    meter.total = total
                try:
                    with open(part, "ab") as out:
                        for chunk in response.iter_content(CHUNK):
                            control.checkpoint()
                            self.limiter.consume(len(chunk), control)
                            try:
                                out.write(chunk)
                            except OSError as exc:
                                _raise_if_disk_full(exc, folder=dest.parent, need=(total or have) - have)
                                raise
                            digest.update(chunk)
                            have += len(chunk)
                            transferred += len(chunk)
                            meter.advance(len(chunk))
                            if total is not None and have > total:
                                raise DownloadError(f"{url}: the server sent more than {total} bytes")
                        out.flush()
                        os.fsync(out.fileno())
                except (requests.exceptions.RequestException, ConnectionError) as exc:
                    attempts += 1
                    if attempts > self.retries:
                        raise ServerUnreachable(f"download of {url} kept failing: {exc}") from None
                    control.sleep(min(2.0**attempts * 0.25, 10.0))
                    continue
                except OSError as exc:
                    _raise_if_disk_full(exc, folder=dest.parent, need=(total or have) - have)
                    raise
            if total is None or have >= total:
                break
            # The connection ended early (server restart, proxy): resume from where it stopped.
            attempts += 1
            if attempts > self.retries:
                raise DownloadError(f"{url}: the connection kept closing early ({have} of {total} bytes)")

        sha = digest.hexdigest()
        want_sha = expected_sha256 or server_sha
        if total is not None and have != total:
            raise DownloadError(f"{url}: got {have} bytes, expected {total}")
        if want_sha and sha != want_sha:
            # A corrupt part must not be resumed again.
            part.unlink()
            with contextlib.suppress(FileNotFoundError):
                meta_path.unlink()
            raise DownloadError(f"{url}: downloaded bytes have the wrong SHA-256 (got {sha[:12]}..., expected {want_sha[:12]}...)")
        os.replace(part, dest)
        with contextlib.suppress(FileNotFoundError):
            meta_path.unlink()
        fsync_dir(dest.parent)
        meter.finish()
        return DownloadResult(dest, have, sha, transferred, resumed_from)


def _redirect_target(response: requests.Response) -> str | None:
    if response.status_code in (301, 302, 303, 307, 308):
        return response.headers.get("Location") or ""
    return None


def fetch_bytes_or_none(api: ApiClient, url: str, *, limit: int = 8 << 20) -> bytes | None:
    """Small unauthenticated-or-not fetch (header images); None on any failure."""
    try:
        auth = not url.startswith(("http://", "https://")) or url.startswith(api.server)
        response = api.request("GET", url, auth=auth and api.logged_in, stream=True, timeout=(10, 20))
    except PatcherError:
        return None
    with response:
        data = bytearray()
        for chunk in response.iter_content(CHUNK):
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)
