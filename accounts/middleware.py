"""Makes the current request known to audit receivers (admin edits of users and grants)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from accounts.audit import current_request


class AuditContextMiddleware:
    """Puts the request in a context variable; the actor is read from `request.user` when recorded,
    which also covers API views (DRF sets the JWT user on the underlying request)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            current_request.reset(token)
