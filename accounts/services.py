"""Accounts services: password login (throttled, logged, audited), token refresh and logout,
device pairing and revocation. Views, the API, the admin and signal receivers call these."""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import salted_hmac
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts import audit
from accounts.models import Device, LoginFailure, PairingCode, User
from accounts.throttling import LoginThrottled, check_allowed, clear_failures, record_failure
from accounts.tokens import DEVICE_CLAIM, FAMILY_CLAIM, token_pair_for

logger = logging.getLogger("mist.auth")

# No 0/O, 1/I/L: a friend reads the code off one screen and types it on another.
PAIRING_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
PAIRING_CODE_LENGTH = 8
# A device's last_seen is written at most this often, not on every request.
_LAST_SEEN_RESOLUTION = timedelta(seconds=60)



class AuthError(Exception):
    """Refused authentication; the message is safe to show to the client."""


class InvalidCredentials(AuthError):
    pass


class InvalidToken(AuthError):
    pass


class DeviceRevoked(AuthError):
    pass


class PairingCodeRejected(AuthError):
    """A well-formed pairing code that is unknown, expired or already used."""


class MalformedPairingCode(ValueError):
    pass


# --- Password login ---------------------------------------------------------------------------


def login_with_password(
    *, request: HttpRequest | None, username: str, password: str, address: str, channel: str,
    now: datetime | None = None,
) -> User:
    """Check the throttle, then the password; count, log and audit the outcome. Never logs the password."""
    try:
        check_allowed(username=username, address=address, now=now)
    except LoginThrottled as exc:
        logger.warning(
            "login throttled",
            extra={"username": username, "address": address, "channel": channel, "retry_after": exc.retry_after},
        )
        raise
    user = authenticate(request, username=username, password=password)
    if user is None:
        # Unknown user, wrong password and inactive user look the same from outside.
        record_failure(kind=LoginFailure.Kind.PASSWORD, username=username, address=address, now=now)
        logger.warning("login failed", extra={"username": username, "address": address, "channel": channel})
        audit.record(
            action=audit.Action.LOGIN_FAILED,
            data={"username": username[:150], "address": address, "channel": channel},
            now=now,
        )
        raise InvalidCredentials("Wrong username or password.")
    clear_failures(username=username, address=address)
    logger.info("login succeeded", extra={"username": user.get_username(), "address": address, "channel": channel})
    audit.record(
        action=audit.Action.LOGIN_SUCCEEDED, actor=user, target=user,
        data={"address": address, "channel": channel}, now=now,
    )
    return user


def issue_tokens_for_login(*, request: HttpRequest | None, username: str, password: str, address: str) -> dict[str, str]:
    """Password login for an API client: a fresh access + refresh pair."""
    user = login_with_password(request=request, username=username, password=password, address=address, channel="api")
    pair = token_pair_for(user)
    user.last_login = timezone.now()
    user.save(update_fields=["last_login"])
    audit.record(action=audit.Action.TOKEN_ISSUED, actor=user, target=user,
                 data={"scope": pair["scope"], "address": address, "via": "password"})
    return pair


# --- Refresh and logout -----------------------------------------------------------------------


def _parse_refresh(raw: str, *, address: str = "") -> RefreshToken:
    try:
        # Verifies signature, expiry, type ("refresh", so an access token is refused) and blacklist.
        return RefreshToken(raw)  # type: ignore[arg-type]
    except TokenError as exc:
        if "blacklisted" in str(exc):
            _revoke_family_of_spent(raw, address=address)
        raise InvalidToken(f"Refresh token refused: {exc}.") from exc


def _revoke_family_of_spent(raw: str, *, address: str) -> None:
    """A genuine refresh token that was already spent came back: two parties hold the chain (a stolen token
    was refreshed by one of them). End the whole family, so whichever holder is the attacker loses it too."""
    try:
        # Only a token we signed and that has not expired can revoke anything; a forgery changes nothing.
        payload = token_backend.decode(raw, verify=True)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        return
    spent = BlacklistedToken.objects.filter(token__jti=payload.get(jwt_settings.JTI_CLAIM)).first()
    grace = timedelta(seconds=settings.MIST_REFRESH_REUSE_GRACE_SECONDS)
    if spent is not None and timezone.now() - spent.blacklisted_at < grace:
        # Spent a moment ago: two processes of one patcher racing to refresh (the GUI and a CLI run). The
        # reused token still yields nothing; the family lives on with whoever won.
        logger.info("refresh token reused within the grace period: refused, family kept",
                    extra={"address": address})
        return
    family = payload.get(FAMILY_CLAIM)
    user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: payload.get(jwt_settings.USER_ID_CLAIM)}).first()
    if not family or user is None:
        return
    revoked = revoke_family(user=user, family=str(family))
    device_id = _uuid_or_none(payload.get(DEVICE_CLAIM))
    data: dict[str, Any] = {"address": address, "jti": payload.get(jwt_settings.JTI_CLAIM), "family": family,
                            "refresh_tokens_revoked": revoked}
    if device_id is not None:
        device = Device.objects.filter(pk=device_id, user=user, revoked_at__isnull=True).first()
        if device is not None:
            revoke_device(device=device, actor=user)
            data["device"] = str(device.pk)
    if revoked or "device" in data:  # the first reuse ends the family; later replays of it change nothing
        audit.record(action=audit.Action.TOKEN_REUSED, actor=None, target=user, data=data)
    logger.warning("refresh token reuse: family revoked",
                   extra={"user": user.get_username(), "address": address, "revoked": revoked})


def revoke_family(*, user: Any, family: str) -> int:
    """Blacklist every live refresh token of one family; returns how many."""
    now = timezone.now()
    revoked = 0
    for outstanding in OutstandingToken.objects.filter(user=user, expires_at__gt=now, blacklistedtoken__isnull=True):
        try:
            payload = token_backend.decode(outstanding.token, verify=False)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001
            continue
        if payload.get(FAMILY_CLAIM) == family:
            _, created = BlacklistedToken.objects.get_or_create(token=outstanding)
            revoked += created
    return revoked


def _user_of(token: RefreshToken) -> User:
    user_id = token.get(jwt_settings.USER_ID_CLAIM)
    user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
    if user is None or not user.is_active:
        raise InvalidToken("No active account for this token.")
    return user


def device_for_claim(*, user: Any, claim: Any) -> Device:
    """The live device a token's `device` claim names, or DeviceRevoked."""
    try:
        device_id = uuid.UUID(str(claim))
    except ValueError as exc:
        raise DeviceRevoked("This device is not paired.") from exc
    device = Device.objects.filter(pk=device_id, user=user).first()
    if device is None or device.is_revoked:
        raise DeviceRevoked("This device was unpaired from the account; pair it again.")
    return device


def touch_device(*, device: Device, address: str, now: datetime | None = None) -> None:
    """Record that a device was just seen (at most once a minute, unless its address changed)."""
    now = now or timezone.now()
    if (
        device.last_seen_at is not None
        and now - device.last_seen_at < _LAST_SEEN_RESOLUTION
        and device.last_seen_address == address
    ):
        return
    Device.objects.filter(pk=device.pk).update(last_seen_at=now, last_seen_address=address[:64])
    device.last_seen_at, device.last_seen_address = now, address[:64]


def _spend(token: RefreshToken, *, address: str = "") -> None:
    """Blacklist a refresh token exactly once, even when two requests race with it; the loser of a race is a
    reuse like any other (its family is revoked)."""
    with transaction.atomic():
        token.outstand()
        outstanding = OutstandingToken.objects.select_for_update().get(jti=token[jwt_settings.JTI_CLAIM])
        _, created = BlacklistedToken.objects.get_or_create(token=outstanding)
    if not created:
        _revoke_family_of_spent(str(token), address=address)
        raise InvalidToken("Refresh token refused: Token is blacklisted.")


def refresh_tokens(*, refresh: str, address: str = "") -> dict[str, str]:
    """Rotate a refresh token: the old one is blacklisted, the scope re-derived from the current role."""
    token = _parse_refresh(refresh, address=address)
    user = _user_of(token)
    device = None
    if token.get(DEVICE_CLAIM) is not None:
        try:
            device = device_for_claim(user=user, claim=token[DEVICE_CLAIM])
        except DeviceRevoked as exc:
            raise InvalidToken(str(exc)) from exc
    _spend(token, address=address)
    if device is not None:
        touch_device(device=device, address=address)
    family = token.get(FAMILY_CLAIM) or token[jwt_settings.JTI_CLAIM]  # a pre-family token starts one
    return token_pair_for(user, device=device, family=str(family))


def logout(*, refresh: str, address: str = "") -> None:
    """Blacklist a refresh token; a device token also unpairs its device."""
    token = _parse_refresh(refresh, address=address)
    user = get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: token.get(jwt_settings.USER_ID_CLAIM)}).first()
    _spend(token, address=address)
    data: dict[str, Any] = {"address": address, "jti": token[jwt_settings.JTI_CLAIM]}
    device_id = _uuid_or_none(token.get(DEVICE_CLAIM))
    if device_id is not None and user is not None:
        device = Device.objects.filter(pk=device_id, user=user, revoked_at__isnull=True).first()
        if device is not None:
            revoke_device(device=device, actor=user)
            data["device"] = str(device.pk)
    audit.record(action=audit.Action.TOKEN_REVOKED, actor=user, target=user, data=data)


def _uuid_or_none(value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def revoke_password_tokens(*, user: Any) -> int:
    """Blacklist the user's live refresh tokens from password logins (device tokens survive)."""
    now = timezone.now()
    revoked = 0
    live = OutstandingToken.objects.filter(user=user, expires_at__gt=now, blacklistedtoken__isnull=True)
    for outstanding in live:
        try:
            payload = token_backend.decode(outstanding.token, verify=False)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001  (an unreadable row is revoked rather than trusted)
            payload = {}
        if DEVICE_CLAIM in payload:
            continue
        BlacklistedToken.objects.get_or_create(token=outstanding)
        revoked += 1
    return revoked


# --- Device pairing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedPairingCode:
    code: str
    expires_at: datetime


def _pairing_lifetime() -> timedelta:
    return timedelta(minutes=int(getattr(settings, "MIST_PAIRING_CODE_MINUTES", 10)))


def _hash_code(code: str) -> str:
    # Keyed with SECRET_KEY: a leaked table cannot be brute-forced offline (only 31^8 codes exist).
    return salted_hmac("mist.accounts.pairing-code", code, algorithm="sha256").hexdigest()


def normalise_pairing_code(raw: str) -> str:
    """Upper-case, without spaces or dashes; MalformedPairingCode if it cannot be a code."""
    code = "".join(ch for ch in raw.upper() if ch not in " -\t")
    if len(code) != PAIRING_CODE_LENGTH or any(ch not in PAIRING_ALPHABET for ch in code):
        raise MalformedPairingCode(
            f"A pairing code is {PAIRING_CODE_LENGTH} characters from {PAIRING_ALPHABET}."
        )
    return code


def create_pairing_code(*, user: Any, now: datetime | None = None) -> IssuedPairingCode:
    """A fresh single-use code for pairing a patcher; the friend's older unused codes are dropped."""
    now = now or timezone.now()
    code = "".join(secrets.choice(PAIRING_ALPHABET) for _ in range(PAIRING_CODE_LENGTH))
    expires_at = now + _pairing_lifetime()
    with transaction.atomic():
        PairingCode.objects.filter(user=user, used_at__isnull=True).delete()
        PairingCode.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()
        PairingCode.objects.create(user=user, code_hash=_hash_code(code), created_at=now, expires_at=expires_at)
        audit.record(action=audit.Action.PAIRING_CODE_ISSUED, actor=user, target=user,
                     data={"expires_at": expires_at.isoformat()}, now=now)
    return IssuedPairingCode(code=code, expires_at=expires_at)


def redeem_pairing_code(*, code: str, name: str, address: str, now: datetime | None = None) -> dict[str, str]:
    """Trade a pairing code for a new device and its token pair `{access, refresh, scope, device_id}`."""
    now = now or timezone.now()
    name = name.strip()[:100]
    if not name:
        raise MalformedPairingCode("A device needs a name.")
    normalised = normalise_pairing_code(code)
    check_allowed(username="", address=address, now=now)
    refusal = "Unknown pairing code."
    with transaction.atomic():
        pairing = (
            PairingCode.objects.select_for_update().select_related("user")
            .filter(code_hash=_hash_code(normalised)).first()
        )
        if pairing is not None:
            if pairing.used_at is not None:
                refusal = "This pairing code was already used; ask the store for a new one."
            elif pairing.is_expired(now=now):
                refusal = "This pairing code expired; ask the store for a new one."
            elif not pairing.user.is_active:
                refusal = "Unknown pairing code."
            else:
                device = Device.objects.create(user=pairing.user, name=name, last_seen_at=now,
                                               last_seen_address=address[:64])
                pairing.used_at, pairing.device = now, device
                pairing.save(update_fields=["used_at", "device"])
                pair = token_pair_for(pairing.user, device=device)
                audit.record(action=audit.Action.DEVICE_PAIRED, actor=pairing.user, target=device,
                             data={"name": name, "address": address}, now=now)
                audit.record(action=audit.Action.TOKEN_ISSUED, actor=pairing.user, target=pairing.user,
                             data={"scope": pair["scope"], "address": address, "via": "pairing",
                                   "device": str(device.pk)}, now=now)
                logger.info("device paired", extra={"username": pairing.user.get_username(),
                                                    "device": str(device.pk), "address": address})
                return pair
    record_failure(kind=LoginFailure.Kind.PAIRING, username="", address=address, now=now)
    logger.warning("pairing code refused", extra={"address": address, "reason": refusal})
    raise PairingCodeRejected(refusal)


def rename_device(*, device: Device, name: str, actor: Any) -> Device:
    """Give a device a new name."""
    name = name.strip()[:100]
    if not name:
        raise ValueError("A device needs a name.")
    old = device.name
    device.name = name
    device.save(update_fields=["name"])
    audit.record(action=audit.Action.DEVICE_RENAMED, actor=actor, target=device, data={"from": old, "to": name})
    return device


def revoke_device(*, device: Device, actor: Any, now: datetime | None = None) -> Device:
    """Unpair a device: its tokens are refused from the next request on. Revoking twice is a no-op."""
    now = now or timezone.now()
    with transaction.atomic():
        updated = Device.objects.filter(pk=device.pk, revoked_at__isnull=True).update(revoked_at=now)
        if updated:
            audit.record(action=audit.Action.DEVICE_REVOKED, actor=actor, target=device,
                         data={"name": device.name, "owner": device.user.get_username()}, now=now)
    device.refresh_from_db(fields=["revoked_at"])
    return device
