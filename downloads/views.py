"""The one download view behind /dl/: archives, direct and indirect update bundles, single files."""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponseBase
from rest_framework.exceptions import APIException

from accounts.authentication import MistJWTAuthentication
from downloads import services, serving

logger = logging.getLogger("mist.downloads")


class _Denied(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _authenticate(
    request: HttpRequest, *, kind: str, slug: str | None, version: str | None, ref: str | None, platform: str | None
) -> Any:
    """The downloading user: from a signed URL, else a Bearer JWT, else the browser session."""
    if "sig" in request.GET:
        try:
            return services.user_for_signed_url(
                params=request.GET, kind=kind, slug=slug, version=version, ref=ref, platform=platform
            )
        except services.SignedURLError as exc:
            raise _Denied(403, str(exc)) from None
    try:
        authenticated = MistJWTAuthentication().authenticate(request)  # type: ignore[arg-type]
    except APIException as exc:
        detail = exc.detail.get("detail", "invalid token") if isinstance(exc.detail, dict) else exc.detail
        raise _Denied(401, str(detail)) from None
    if authenticated is not None:
        return authenticated[0]
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active:
        return user
    raise _Denied(401, "Authentication credentials were not provided.")


def download(request: HttpRequest, *, kind: str, **params: Any) -> HttpResponseBase:
    """Serve an artifact with resumable, verifiable semantics.

    GET and HEAD. `Accept-Ranges: bytes`; one byte range is answered 206 with Content-Range, and
    an unsatisfiable one 416 with `Content-Range: bytes */<size>`. A malformed Range, another unit,
    or several ranges (we never send multipart/byteranges) get 200 with the whole body, as RFC 9110
    allows. `If-Range` must be the strong ETag `"<sha256>"` for the Range to apply. The sha256 is
    also in `X-Mist-SHA256` so any client can verify what it got.

    Auth: a signed URL (`?u=&exp=&sig=`, see services.signed_download_url), else a Bearer JWT,
    else the session. Games the user may not see, and unready or unpublished versions for
    friends, are 404s like things that do not exist.
    """
    if request.method not in ("GET", "HEAD"):
        return serving.json_error(405, f'Method "{request.method}" not allowed.', Allow="GET, HEAD")
    slug = params.get("slug")
    version = params.get("version")
    ref = {"direct": params.get("pair"), "indirect": params.get("job_id"), "file": params.get("path")}.get(kind)
    ref = None if ref is None else str(ref)
    platform = params.get("platform")  # None on the routes from before platforms: the default
    try:
        user = _authenticate(request, kind=kind, slug=slug, version=version, ref=ref, platform=platform)
        artifact = services.resolve_artifact(
            user=user, kind=kind, slug=slug, version=version, ref=ref, platform=platform
        )
    except _Denied as exc:
        headers = {"WWW_Authenticate": 'Bearer realm="api"'} if exc.status == 401 else {}
        return serving.json_error(exc.status, exc.detail, **headers)
    except services.ArtifactPathError as exc:
        return serving.json_error(400, str(exc))
    except Http404 as exc:
        return serving.json_error(404, str(exc) or "Not found.")
    except services.ArtifactMissing as exc:
        logger.error("artifact missing on the server", extra={"kind": kind, "why": str(exc)})
        return serving.json_error(404, serving.MISSING_DETAIL)
    return serving.serve_artifact(request, artifact=artifact, user=user)
