"""Issue 18 point 1: refresh tokens belong to a family (the rotation chain of one sign-in or pairing). A spent
refresh token presented again means two parties hold the chain: the whole family is revoked, the device (if
any) unpaired, and the event is in the audit log. Over the real API."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import AuditEntry, Device
from accounts.tests.conftest import bearer, pair_device
from conftest import password_of

pytestmark = [pytest.mark.django_db, pytest.mark.urls("accounts.tests.probe_urls")]

TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/token/refresh"
LOGOUT = "/api/v1/auth/logout"


@pytest.fixture(autouse=True)
def no_grace(settings: Any) -> None:
    """The reuses below come milliseconds after the spend; the race grace has its own test."""
    settings.MIST_REFRESH_REUSE_GRACE_SECONDS = 0


def _refresh(client: APIClient, token: str) -> Any:
    return client.post(REFRESH, {"refresh": token}, format="json")


def _sign_in(client: APIClient, user: Any) -> dict[str, str]:
    response = client.post(TOKEN, {"username": user.username, "password": password_of(user)}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_stolen_token_refreshed_by_the_attacker_dies_when_the_owner_refreshes(api_client: APIClient,
                                                                                 friend: Any) -> None:
    owner = _sign_in(api_client, friend)
    stolen = owner["refresh"]
    # The attacker refreshes first and keeps rotating: a chain of three.
    attacker = _refresh(APIClient(REMOTE_ADDR="203.0.113.9"), stolen).json()
    for _ in range(2):
        attacker = _refresh(APIClient(REMOTE_ADDR="203.0.113.9"), attacker["refresh"]).json()
    assert bearer(attacker["access"]).get("/probe/whoami").status_code == 200
    # The owner's refresh with the (now spent) token is refused ...
    refused = _refresh(api_client, stolen)
    assert refused.status_code == 401
    assert "blacklisted" in refused.json()["detail"]
    # ... and the attacker's whole chain is dead: no more renewals.
    dead = _refresh(APIClient(REMOTE_ADDR="203.0.113.9"), attacker["refresh"])
    assert dead.status_code == 401, dead.content
    entry = AuditEntry.objects.filter(action=AuditEntry.Action.TOKEN_REUSED).get()
    assert entry.data["family"] == RefreshToken(stolen, verify=False)["family"]  # type: ignore[arg-type]
    assert entry.data["refresh_tokens_revoked"] == 1  # the attacker's live token (the rest were spent)
    # The owner signs in again and carries on; the new sign-in is a new family.
    fresh = _sign_in(api_client, friend)
    assert RefreshToken(fresh["refresh"])["family"] != entry.data["family"]  # type: ignore[arg-type]
    assert _refresh(api_client, fresh["refresh"]).status_code == 200


def test_reuse_ends_only_that_family(api_client: APIClient, friend: Any) -> None:
    laptop = _sign_in(api_client, friend)
    desktop = _sign_in(api_client, friend)
    rotated = _refresh(api_client, laptop["refresh"]).json()
    assert _refresh(api_client, laptop["refresh"]).status_code == 401  # reuse
    assert _refresh(api_client, rotated["refresh"]).status_code == 401  # its family is gone
    assert _refresh(api_client, desktop["refresh"]).status_code == 200  # the other sign-in lives


def test_a_reused_device_token_unpairs_the_device(api_client: APIClient, friend: Any) -> None:
    device, pair = pair_device(friend)
    rotated = _refresh(api_client, pair["refresh"]).json()
    assert rotated["device_id"] == str(device.pk)
    assert _refresh(api_client, pair["refresh"]).status_code == 401
    device.refresh_from_db()
    assert device.is_revoked
    assert _refresh(api_client, rotated["refresh"]).status_code == 401
    entry = AuditEntry.objects.get(action=AuditEntry.Action.TOKEN_REUSED)
    assert entry.data["device"] == str(device.pk)
    assert Device.objects.filter(user=friend, revoked_at__isnull=True).count() == 0


def test_logout_with_a_spent_token_also_ends_the_family(api_client: APIClient, friend: Any) -> None:
    first = _sign_in(api_client, friend)
    second = _refresh(api_client, first["refresh"]).json()
    assert api_client.post(LOGOUT, {"refresh": first["refresh"]}, format="json").status_code == 401
    assert _refresh(api_client, second["refresh"]).status_code == 401


def test_a_forged_or_garbage_token_revokes_nothing(api_client: APIClient, friend: Any) -> None:
    owner = _sign_in(api_client, friend)
    forged = RefreshToken(owner["refresh"], verify=False)  # type: ignore[arg-type]
    header, payload, _ = owner["refresh"].split(".")
    for bad in ("garbage", f"{header}.{payload}.AAAA"):
        assert _refresh(api_client, bad).status_code == 401
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.TOKEN_REUSED).exists()
    assert forged["family"]
    assert _refresh(api_client, owner["refresh"]).status_code == 200


def test_a_reuse_within_the_grace_period_is_refused_but_keeps_the_family(api_client: APIClient, friend: Any,
                                                                          settings: Any) -> None:
    """Two processes of one patcher refreshing at once: the loser gets 401, the winner's chain lives."""
    settings.MIST_REFRESH_REUSE_GRACE_SECONDS = 10
    first = _sign_in(api_client, friend)
    winner = _refresh(api_client, first["refresh"]).json()
    assert _refresh(api_client, first["refresh"]).status_code == 401
    assert _refresh(api_client, winner["refresh"]).status_code == 200
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.TOKEN_REUSED).exists()
