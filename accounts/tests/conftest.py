"""Fixtures for the accounts tests."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Device
from accounts.services import create_pairing_code, redeem_pairing_code

AUDIT_MIDDLEWARE = "accounts.middleware.AuditContextMiddleware"


@pytest.fixture
def audit_middleware(settings: Any) -> None:
    """Install the audit-context middleware (the change this app asks for in settings.MIDDLEWARE)."""
    if AUDIT_MIDDLEWARE not in settings.MIDDLEWARE:
        index = settings.MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware")
        settings.MIDDLEWARE = [*settings.MIDDLEWARE[: index + 1], AUDIT_MIDDLEWARE, *settings.MIDDLEWARE[index + 1 :]]


def pair_device(user: Any, name: str = "Desk PC") -> tuple[Device, dict[str, str]]:
    """Pair a device for `user` through the real services; returns the device and its token pair."""
    issued = create_pairing_code(user=user)
    pair = redeem_pairing_code(code=issued.code, name=name, address="127.0.0.1")
    return Device.objects.get(pk=pair["device_id"]), pair


def bearer(access: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


@pytest.fixture(autouse=True)
def cheap_argon2(settings: Any) -> None:
    """Real argon2id, with tiny cost parameters: the production cost (~0.5 s a hash) would make
    every persona fixture slow. test_passwords_are_hashed_with_argon2id checks the real settings."""
    settings.PASSWORD_HASHERS = ["accounts.tests.hashers.CheapArgon2PasswordHasher"]


@pytest.fixture(autouse=True)
def plain_static_storage(settings: Any) -> None:
    """Pages render `{% static %}`; the manifest storage of production needs collectstatic first."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
