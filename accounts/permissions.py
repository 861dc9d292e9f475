"""Reusable DRF permissions. `IsAdminScope` guards every build and admin endpoint.

Use `rest_framework.permissions.IsAuthenticated` (the project default) everywhere else.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from accounts.tokens import SCOPE_ADMIN, SCOPE_CLAIM


def has_admin_scope(request: Request) -> bool:
    """A staff user with an admin-scope token, or a staff user logged in by session."""
    user = request.user
    if not (user and user.is_authenticated and user.is_active and user.is_staff):
        return False
    token = request.auth
    if token is None:
        # Session authentication: the staff flag is the only role there is.
        return True
    # Both halves are needed: a demoted admin's still-valid token says admin, but is_staff is gone;
    # a promoted friend's token says user until it is refreshed.
    getter = getattr(token, "get", None)
    return getter is not None and getter(SCOPE_CLAIM) == SCOPE_ADMIN


class IsAdminScope(BasePermission):
    """Admin scope: token scope `admin` and `user.is_staff` (session users: `is_staff`)."""

    message = "This endpoint needs an admin account and an admin-scope token."

    def has_permission(self, request: Request, view: Any) -> bool:
        return has_admin_scope(request)
