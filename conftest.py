"""Fixtures shared by every app's tests: personas, isolated storage, API clients, a real worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient


@pytest.fixture(autouse=True)
def mist_roots(settings: Any, tmp_path: Path) -> dict[str, Path]:
    """Every test gets its own empty storage and cache roots."""
    storage = tmp_path / "storage"
    cache = tmp_path / "cache"
    storage.mkdir()
    cache.mkdir()
    settings.MIST_STORAGE_ROOT = storage
    settings.MIST_CACHE_ROOT = cache
    settings.MEDIA_ROOT = storage / "media"
    return {"storage": storage, "cache": cache}


@pytest.fixture(autouse=True)
def plain_static_storage(settings: Any) -> None:
    # Production uses whitenoise's manifest storage, which needs `collectstatic` first; tests render
    # templates straight from the source tree.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    # Argon2 costs ~0.4 s per persona and login; tests that are about password storage override this.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]


def _make_user(django_user_model: Any, username: str, **extra: Any) -> Any:
    return django_user_model.objects.create_user(username=username, password=f"{username}-Passw0rd!", **extra)


@pytest.fixture
def admin_user(django_user_model: Any) -> Any:
    return _make_user(django_user_model, "admin", is_staff=True, is_superuser=True)


@pytest.fixture
def friend(django_user_model: Any) -> Any:
    return _make_user(django_user_model, "friend")


@pytest.fixture
def outsider(django_user_model: Any) -> Any:
    """A friend with no grants: sees public games only."""
    return _make_user(django_user_model, "outsider")


def password_of(user: Any) -> str:
    return f"{user.username}-Passw0rd!"


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def bearer_client(user: Any) -> APIClient:
    from accounts.authentication import token_pair_for

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_pair_for(user)['access']}")
    return client


@pytest.fixture
def admin_api(admin_user: Any) -> APIClient:
    return bearer_client(admin_user)


@pytest.fixture
def friend_api(friend: Any) -> APIClient:
    return bearer_client(friend)


@pytest.fixture
def worker(transactional_db: None, tmp_path: Path) -> Iterator[Any]:
    """A real django-q2 cluster in a subprocess on the test database, stopped after the test."""
    from mist.testing.worker import WorkerCluster

    cluster = WorkerCluster(tmp_path / "worker.log").start()
    try:
        yield cluster
    finally:
        cluster.stop()
