"""JWT authentication for the API: Bearer tokens carrying a `scope` claim (admin or user)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.tokens import RefreshToken


def token_pair_for(user: Any) -> dict[str, str]:
    """Issue an access + refresh pair whose scope reflects the user's current role."""
    refresh = RefreshToken.for_user(user)
    refresh["scope"] = user.scope
    access = refresh.access_token
    access["scope"] = user.scope
    return {"access": str(access), "refresh": str(refresh), "scope": user.scope}


class MistJWTAuthentication(JWTAuthentication):
    """simplejwt, plus: an inactive user is cut off at the next request, whatever the token says."""

    def get_user(self, validated_token: Any) -> Any:
        user = super().get_user(validated_token)
        if not user.is_active:
            raise AuthenticationFailed("User is inactive.", code="user_inactive")
        return user
