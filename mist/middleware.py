"""Requests refused at the door, before any view or query sees them."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse


class RejectNulMiddleware:
    """A NUL in the path or a query value: 400. PostgreSQL text cannot hold NUL, so it can match nothing,
    and passed on it ends as a DataError (500) in whichever lookup sees it first."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = (part for key, values in request.GET.lists() for part in (key, *values))
        if "\x00" in request.path or any("\x00" in part for part in query):
            detail = "NUL characters are not allowed in URLs"
            if request.path.startswith(("/api/", "/dl/")):
                return JsonResponse({"detail": detail}, status=400)
            return HttpResponseBadRequest(detail)
        return self.get_response(request)
