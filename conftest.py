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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3-compatible server (moto's standalone server) on loopback for the whole session."""
    from mist.testing.s3 import S3Server, moto_command

    if moto_command() is None:
        from mist.testing.environment import IN_CI

        why = "moto[server] is not installed: the object storage tests need it (./dev setup installs it)"
        if IN_CI:
            pytest.fail(f"CI=true: {why}")
        pytest.skip(why)
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_storage(settings: Any, s3_server: Any) -> dict[str, str]:
    """MIST_STORAGE=s3 on a fresh bucket of the session's server (the worker fixture passes it on)."""
    from builds import objectstore

    values = s3_server.settings_for(s3_server.new_bucket())
    for name, value in values.items():
        setattr(settings, name, value)
    settings.MIST_S3_PART_BYTES = 5 * 1024**2  # the smallest S3 allows: several parts even for small test files
    objectstore._client_for.cache_clear()
    return values
