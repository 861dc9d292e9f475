"""The client address of a request, trusting X-Forwarded-For only as far as our own proxies."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    """The address that connected to our outermost trusted proxy (or to us, with no proxy).

    With MIST_TRUSTED_PROXIES = n, the n-th entry from the right of X-Forwarded-For is taken: each
    proxy appends the address it saw, so entries further left are whatever the client claimed.
    """
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    trusted = int(getattr(settings, "MIST_TRUSTED_PROXIES", 0))
    if trusted <= 0:
        return remote[:64]
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if not forwarded:
        return remote[:64]
    return forwarded[-min(trusted, len(forwarded))][:64]
