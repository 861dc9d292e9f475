"""Device pairing: codes from the account page, redeemed by the patcher for a device token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts import services
from accounts.models import Device, LoginFailure, PairingCode
from accounts.services import PAIRING_ALPHABET, create_pairing_code, redeem_pairing_code
from accounts.tests.conftest import bearer, pair_device

pytestmark = [pytest.mark.django_db, pytest.mark.urls("accounts.tests.probe_urls")]

REDEEM = "/api/v1/auth/devices/redeem"
REFRESH = "/api/v1/auth/token/refresh"


def redeem(code: str, name: str = "Living-room PC", address: str = "127.0.0.1") -> Any:
    return APIClient(REMOTE_ADDR=address).post(REDEEM, {"code": code, "name": name}, format="json")


def test_a_pairing_code_is_eight_unambiguous_characters_stored_hashed(friend: Any) -> None:
    before = timezone.now()
    issued = create_pairing_code(user=friend)
    assert len(issued.code) == 8
    assert set(issued.code) <= set(PAIRING_ALPHABET)
    assert not set(issued.code) & set("01OIL")
    assert timedelta(minutes=10) <= issued.expires_at - before <= timedelta(minutes=10, seconds=5)
    row = PairingCode.objects.get(user=friend)
    assert issued.code not in row.code_hash
    assert issued.code.lower() not in row.code_hash
    assert len(row.code_hash) == 64


def test_redeeming_a_code_pairs_a_device_and_returns_device_tokens(friend: Any) -> None:
    issued = create_pairing_code(user=friend)
    response = redeem(issued.code)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"access", "refresh", "scope", "device_id"}
    assert body["scope"] == "user"
    device = Device.objects.get(pk=body["device_id"])
    assert (device.user, device.name) == (friend, "Living-room PC")
    assert device.last_seen_at is not None
    assert AccessToken(body["access"])["device"] == body["device_id"]
    assert RefreshToken(body["refresh"])["device"] == body["device_id"]
    me = bearer(body["access"]).get("/probe/whoami").json()
    assert me == {"username": "friend", "scope": "user", "device": body["device_id"]}


def test_codes_are_accepted_in_lower_case_and_with_separators(friend: Any) -> None:
    code = create_pairing_code(user=friend).code
    typed = f" {code[:4].lower()}-{code[4:].lower()} "
    assert redeem(typed).status_code == 200


def test_a_code_is_single_use(friend: Any) -> None:
    code = create_pairing_code(user=friend).code
    assert redeem(code).status_code == 200
    again = redeem(code, name="Second PC")
    assert again.status_code == 401
    assert "already used" in again.json()["detail"]
    assert Device.objects.count() == 1


def test_an_expired_code_is_refused_with_a_fixed_clock(friend: Any) -> None:
    t0 = timezone.now()
    code = create_pairing_code(user=friend, now=t0).code
    with pytest.raises(services.PairingCodeRejected, match="expired"):
        redeem_pairing_code(code=code, name="Late PC", address="127.0.0.1", now=t0 + timedelta(minutes=10))
    # One second earlier it would still have worked.
    assert redeem_pairing_code(code=code, name="On-time PC", address="127.0.0.1",
                               now=t0 + timedelta(minutes=9, seconds=59))["device_id"]


def test_an_expired_code_is_refused_over_http(friend: Any) -> None:
    code = create_pairing_code(user=friend).code
    # Time travel: the code was issued 11 minutes ago.
    PairingCode.objects.update(created_at=timezone.now() - timedelta(minutes=11),
                               expires_at=timezone.now() - timedelta(minutes=1))
    response = redeem(code)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]
    assert not Device.objects.exists()


def test_unknown_codes_are_401_and_malformed_ones_400(friend: Any) -> None:
    create_pairing_code(user=friend)
    unknown = redeem("ABCDEFGH")
    assert unknown.status_code == 401
    assert unknown.json()["detail"] == "Unknown pairing code."
    for bad in ("SHORT", "ABCDEFG0", "ABCDEFGHJ"):
        response = redeem(bad)
        assert response.status_code == 400, bad
        assert "8 characters" in response.json()["detail"]
    missing_name = APIClient().post(REDEEM, {"code": "ABCDEFGH"}, format="json")
    assert missing_name.status_code == 400
    assert "name" in missing_name.json()["errors"]
    # Only the well-formed wrong guess counts towards the throttle.
    assert LoginFailure.objects.filter(kind="pairing").count() == 1
    assert not Device.objects.exists()


def test_guessing_codes_is_throttled_per_address(friend: Any) -> None:
    code = create_pairing_code(user=friend).code
    for _ in range(20):
        assert redeem("ABCDEFGH", address="127.0.0.3").status_code == 401
    blocked = redeem(code, address="127.0.0.3")
    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) > 0
    assert redeem(code, address="127.0.0.4").status_code == 200


def test_a_new_code_replaces_the_unused_one(friend: Any) -> None:
    first = create_pairing_code(user=friend).code
    second = create_pairing_code(user=friend).code
    assert redeem(first).status_code == 401
    assert redeem(second).status_code == 200


def test_an_inactive_users_code_is_refused(friend: Any) -> None:
    code = create_pairing_code(user=friend).code
    friend.is_active = False
    friend.save()
    assert redeem(code).status_code == 401
    assert not Device.objects.exists()


def test_a_revoked_device_is_refused_at_its_next_request_and_refresh(friend: Any) -> None:
    device, pair = pair_device(friend)
    client = bearer(pair["access"])
    assert client.get("/probe/whoami").status_code == 200
    # when: the friend unpairs it on the account page
    browser = Client()
    browser.force_login(friend)
    assert browser.post(f"/accounts/devices/{device.pk}/revoke").status_code == 302
    # then: the still-unexpired access token is refused right away, and so is a refresh
    response = client.get("/probe/whoami")
    assert response.status_code == 401
    assert "unpaired" in response.json()["detail"]
    refused = APIClient().post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert refused.status_code == 401
    assert "unpaired" in refused.json()["detail"]


def test_device_refresh_keeps_the_device_claim(friend: Any) -> None:
    device, pair = pair_device(friend)
    response = APIClient().post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert AccessToken(body["access"])["device"] == str(device.pk)
    assert RefreshToken(body["refresh"])["device"] == str(device.pk)


def test_requests_record_last_seen(friend: Any) -> None:
    device, pair = pair_device(friend)
    long_ago = timezone.now() - timedelta(days=3)
    Device.objects.filter(pk=device.pk).update(last_seen_at=long_ago, last_seen_address="127.0.0.1")
    bearer(pair["access"]).get("/probe/whoami", REMOTE_ADDR="127.0.0.8")
    device.refresh_from_db()
    assert device.last_seen_at is not None
    assert device.last_seen_at > long_ago
    assert device.last_seen_address == "127.0.0.8"


def test_logout_with_a_device_token_unpairs_the_device(friend: Any) -> None:
    device, pair = pair_device(friend)
    assert APIClient().post("/api/v1/auth/logout", {"refresh": pair["refresh"]}, format="json").status_code == 204
    device.refresh_from_db()
    assert device.is_revoked
    assert bearer(pair["access"]).get("/probe/whoami").status_code == 401


def test_admin_device_token_has_admin_scope(admin_user: Any) -> None:
    _, pair = pair_device(admin_user)
    assert pair["scope"] == "admin"
    assert bearer(pair["access"]).get("/probe/admin").status_code == 200
