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


class ContentSecurityPolicyMiddleware:
    """Send `settings.MIST_CSP` as Content-Security-Policy on every response that has none.

    Scripts only from our own origin (no inline script anywhere: the store's JS is a static file, the API docs
    use the split Swagger view), no plugins, no framing, forms post only to us. Inline *styles* stay allowed:
    the Django admin and Swagger UI set style attributes, and a style cannot run code.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from django.conf import settings

        response = self.get_response(request)
        policy = settings.MIST_CSP
        if policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = policy
        return response
