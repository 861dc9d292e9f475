"""Minting JWT pairs: every token carries `scope` (admin|user), device tokens also `device`."""

from __future__ import annotations

import uuid
from typing import Any

from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Device

SCOPE_CLAIM = "scope"
DEVICE_CLAIM = "device"
# Every refresh token belongs to a family: the chain of rotations from one sign-in (or one pairing). A spent
# token presented again means two holders; the whole family is revoked (accounts.services.refresh_tokens).
FAMILY_CLAIM = "family"
SCOPE_ADMIN = "admin"
SCOPE_USER = "user"


def token_pair_for(user: Any, *, device: Device | None = None, family: str | None = None) -> dict[str, str]:
    """Issue an access + refresh pair whose scope reflects the user's current role.

    `family` continues a rotation chain; without it the pair starts a new family (a sign-in, a pairing).
    """
    refresh = RefreshToken.for_user(user)
    refresh[SCOPE_CLAIM] = user.scope
    refresh[FAMILY_CLAIM] = family or uuid.uuid4().hex
    if device is not None:
        refresh[DEVICE_CLAIM] = str(device.pk)
    # for_user() stored the token text before our claims were added; keep the stored copy true,
    # since revoke_password_tokens() reads the device claim from it.
    OutstandingToken.objects.filter(jti=refresh[jwt_settings.JTI_CLAIM]).update(token=str(refresh))
    # The access token copies every custom claim of the refresh token (scope, device).
    access = refresh.access_token
    pair = {"access": str(access), "refresh": str(refresh), "scope": user.scope}
    if device is not None:
        pair["device_id"] = str(device.pk)
    return pair
