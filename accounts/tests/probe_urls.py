"""The project's URLs plus two probe endpoints guarded by the permissions accounts provides, so the
permission classes are tested over real HTTP even before other apps add their endpoints."""

from __future__ import annotations

from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsAdminScope
from mist.urls import urlpatterns as project_urlpatterns


class WhoAmI(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        scope = request.auth.get("scope") if request.auth is not None else None
        return Response({"username": request.user.get_username(), "scope": scope,
                         "device": request.auth.get("device") if request.auth is not None else None})


class AdminOnly(APIView):
    permission_classes = [IsAdminScope]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


urlpatterns = [
    path("probe/whoami", WhoAmI.as_view()),
    path("probe/admin", AdminOnly.as_view()),
    *project_urlpatterns,
]
