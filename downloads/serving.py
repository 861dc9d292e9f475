"""HTTP responses for one resolved artifact: ranges, HEAD, X-Accel-Redirect or a bounded stream.

Django never reads a whole artifact into memory: with MIST_STORAGE=s3 the object store sends the bytes
of archives and bundles (a 302 to a presigned URL); with MIST_ACCEL_REDIRECT nginx sends them (and does
the ranges itself); otherwise a `FileResponse` streams a `RangeFile`, which reads at most the requested
range in `BLOCK_SIZE` pieces and reports how much it handed out when the server closes it.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import quote

from django.conf import settings
from django.db import transaction
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, JsonResponse

from builds import objectstore
from downloads import services
from downloads.ranges import RangeDecision, RangeKind, decide
from downloads.services import Artifact
from mistcore.errors import MistCoreError
from mistcore.fsutil import open_regular

logger = logging.getLogger("mist.downloads")

BLOCK_SIZE = 512 * 1024
MISSING_DETAIL = "artifact missing on the server"


class RangeFile:
    """A read-only view of `length` bytes of an open file from `start`; calls `on_close(bytes_read)`.

    It has no fileno() on purpose: a WSGI server's sendfile() would then bypass read() and the
    byte count (gunicorn sends from the fd directly). Production hands files to nginx anyway.
    """

    def __init__(self, fileobj: IO[bytes], *, start: int, length: int, on_close: Callable[[int], None]) -> None:
        fileobj.seek(start)
        self._file = fileobj
        self._left = length
        self._on_close = on_close
        self._closed = False
        self.bytes_read = 0

    def read(self, n: int | None = -1) -> bytes:
        if self._left <= 0:
            return b""
        # Never more than one block at a time, whatever the caller asks: memory stays flat.
        want = BLOCK_SIZE if n is None or n < 0 else n
        data = self._file.read(min(want, self._left, BLOCK_SIZE))
        if not data:  # the file shrank under us: stop; the client sees a short body and resumes
            self._left = 0
            return b""
        self._left -= len(data)
        self.bytes_read += len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._file.close()
        finally:
            try:
                self._on_close(self.bytes_read)
            except Exception:  # Django swallows closer errors silently: at least log them
                logger.exception("could not record the end of a download")


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and, for other names, RFC 5987's filename*."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    fallback = re.sub(r"[^A-Za-z0-9._+-]+", "_", ascii_name).strip("_")
    if not fallback or fallback.startswith("."):  # nothing left of the name but its extension
        fallback = "download" + fallback
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    encoded = quote(filename, safe="!#$&+-.^_`|~")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def json_error(status: int, detail: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"detail": detail}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def missing(artifact: Artifact, why: str) -> JsonResponse:
    logger.error(
        "artifact missing on the server",
        extra={"artifact": artifact.key, "path": str(artifact.path), "why": why},
    )
    return json_error(404, MISSING_DETAIL)


def _common_headers(response: HttpResponseBase, artifact: Artifact) -> None:
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = artifact.etag
    response["X-Mist-SHA256"] = artifact.sha256
    response["Content-Disposition"] = content_disposition(artifact.filename)
    # no-transform: a proxy that compresses would break ranges and the sha256.
    response["Cache-Control"] = "private, no-transform"


def _range_headers(response: HttpResponseBase, decision: RangeDecision, size: int) -> None:
    response["Content-Length"] = str(max(0, decision.length))
    content_range = decision.content_range(size)
    if content_range:
        response["Content-Range"] = content_range


def _check_on_disk(artifact: Artifact) -> str | None:
    """Why the file cannot be served as recorded, or None if it can."""
    try:
        st = os.stat(artifact.path)
    except OSError as exc:
        return f"stat failed: {exc.strerror}"
    if not os.path.isfile(artifact.path):
        return "not a regular file"
    if st.st_size != artifact.size:
        return f"{st.st_size} bytes on disk, {artifact.size} recorded"
    return None


# What lives in the bucket with MIST_STORAGE=s3 (single files of a version tree are served from the disk).
OBJECT_KINDS = ("archive", "direct", "indirect")


def serve_artifact(request: HttpRequest, *, artifact: Artifact, user: Any) -> HttpResponseBase:
    """Answer GET or HEAD for an artifact the user may have."""
    if objectstore.enabled() and artifact.kind in OBJECT_KINDS:
        if objectstore.redirects():
            return _object_redirect(request, artifact=artifact, user=user)
        try:  # MIST_S3_PROXY: served from the local disk, fetched from the bucket first if need be
            objectstore.ensure_local(artifact.path, sha256=artifact.sha256, size=artifact.size)
        except objectstore.ObjectStoreError as exc:
            return missing(artifact, str(exc))
    problem = _check_on_disk(artifact)
    if problem:
        return missing(artifact, problem)
    decision = decide(
        range_header=request.headers.get("Range"),
        if_range=request.headers.get("If-Range"),
        size=artifact.size,
        etag=artifact.etag,
    )
    if decision.kind is RangeKind.UNSATISFIABLE:
        response: HttpResponseBase = json_error(416, f"requested range not satisfiable: {decision.reason}")
        response["Content-Range"] = decision.content_range(artifact.size) or ""
        response["Accept-Ranges"] = "bytes"
        response["ETag"] = artifact.etag
        return response
    if request.method == "HEAD":
        response = HttpResponse(status=decision.status, content_type=artifact.content_type)
        _common_headers(response, artifact)
        _range_headers(response, decision, artifact.size)
        return response
    services.touch_artifact(artifact=artifact)
    client = request.headers.get("User-Agent", "")
    if settings.MIST_ACCEL_REDIRECT:
        return _accel_response(artifact=artifact, decision=decision, user=user, client=client)
    return _stream_response(artifact=artifact, decision=decision, user=user, client=client)


def _object_redirect(request: HttpRequest, *, artifact: Artifact, user: Any) -> HttpResponseBase:
    """302 to a short-lived presigned URL of the artifact's object; the client resumes with Range against it.

    `X-Mist-SHA256` and `X-Mist-Size` say what the object must be; `X-Mist-Object-ETag` is the object's own
    strong ETag, for the client's If-Range against the object store (which knows nothing of our sha256)."""
    try:
        info = objectstore.head_cached(objectstore.key_for(artifact.path), size=artifact.size,
                                        sha256=artifact.sha256)
        if info is None and _check_on_disk(artifact) is None:
            # Made before the switch to the bucket (or its upload was lost): publish it now, then redirect.
            info = objectstore.publish(artifact.path, sha256=artifact.sha256, size=artifact.size)
        if info is None:
            return missing(artifact, "not in the bucket and not on the local disk")
        if info.size != artifact.size or (info.sha256 and info.sha256 != artifact.sha256):
            return missing(artifact, f"the bucket's object has {info.size} bytes, sha256 {info.sha256[:12]}...; "
                                     f"recorded {artifact.size}, {artifact.sha256[:12]}...")
        url = objectstore.presigned_url(artifact.path, filename=artifact.filename, content_type=artifact.content_type)
    except objectstore.ObjectStoreError as exc:
        return missing(artifact, str(exc))
    response = HttpResponseRedirect(url)
    response["X-Mist-SHA256"] = artifact.sha256
    response["X-Mist-Size"] = str(artifact.size)
    response["X-Mist-Object-ETag"] = info.etag
    response["Cache-Control"] = "private, no-store"  # the URL expires: never cache the redirect
    if request.method == "GET":
        decision = decide(range_header=request.headers.get("Range"), if_range=None, size=artifact.size,
                          etag=artifact.etag)
        client = request.headers.get("User-Agent", "")
        with transaction.atomic():  # one commit for the bookkeeping: the redirect is the whole request
            services.touch_artifact(artifact=artifact)
            services.start_download(user=user, artifact=artifact, decision=decision, via_accel=True,
                                    client=f"{client} (object store)"[:200])
    return response


def _accel_response(*, artifact: Artifact, decision: RangeDecision, user: Any, client: str) -> HttpResponse:
    prefix = settings.MIST_ACCEL_STORAGE_PREFIX if artifact.root == "storage" else settings.MIST_ACCEL_CACHE_PREFIX
    response = HttpResponse(content_type=artifact.content_type)
    # nginx applies Range and If-Range itself on the internal location; it needs these headers
    # passed through (see the deploy nginx config): ETag, X-Mist-SHA256, Content-Disposition.
    response["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + quote(artifact.relpath, safe="/")
    response["X-Accel-Buffering"] = "no"
    _common_headers(response, artifact)
    del response["Accept-Ranges"]  # nginx adds its own for the file it serves
    services.start_download(user=user, artifact=artifact, decision=decision, via_accel=True, client=client)
    return response


def _stream_response(*, artifact: Artifact, decision: RangeDecision, user: Any, client: str) -> HttpResponseBase:
    try:
        fileobj = open_regular(artifact.path, what=artifact.key)
    except (OSError, MistCoreError) as exc:
        return missing(artifact, f"open failed: {exc}")
    try:
        size = os.fstat(fileobj.fileno()).st_size
    except OSError as exc:
        fileobj.close()
        return missing(artifact, f"fstat failed: {exc}")
    if size != artifact.size:  # replaced between the check and the open
        fileobj.close()
        return missing(artifact, f"{size} bytes on disk, {artifact.size} recorded")
    record = services.start_download(user=user, artifact=artifact, decision=decision, via_accel=False, client=client)
    body = RangeFile(
        fileobj,
        start=decision.start,
        length=max(0, decision.length),
        on_close=lambda served: services.finish_download(record=record, bytes_served=served),
    )
    response = FileResponse(body, status=decision.status, content_type=artifact.content_type)
    response.block_size = BLOCK_SIZE
    _common_headers(response, artifact)
    _range_headers(response, decision, artifact.size)
    return response
