"""JWT authentication for the API: Bearer tokens carrying a `scope` claim (admin or user).

Beyond simplejwt's checks, every request re-checks the account and the device against the
database, so deactivating a user or revoking a device cuts its tokens off at the next request
rather than when they expire.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts.addresses import client_address
from accounts.services import DeviceRevoked, device_for_claim, touch_device
from accounts.tokens import DEVICE_CLAIM, token_pair_for

__all__ = ["MistJWTAuthentication", "token_pair_for"]


class MistJWTAuthentication(JWTAuthentication):
    """simplejwt, plus: inactive users and revoked devices are refused at the next request."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        result = super().authenticate(request)
        if result is None:
            return None
        user, token = result
        claim = token.get(DEVICE_CLAIM)
        if claim is not None:
            try:
                device = device_for_claim(user=user, claim=claim)
            except DeviceRevoked as exc:
                raise AuthenticationFailed(str(exc), code="device_revoked") from exc
            touch_device(device=device, address=client_address(request))
        return user, token

    def get_user(self, validated_token: Any) -> Any:
        user = super().get_user(validated_token)
        if not user.is_active:
            raise AuthenticationFailed("User is inactive.", code="user_inactive")
        return user
