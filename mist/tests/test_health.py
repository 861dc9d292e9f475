"""/healthz and /readyz, including 503s that name the failing check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client


def test_healthz_is_ok_without_login(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["X-Request-ID"]


@pytest.mark.django_db
def test_readyz_without_worker_is_503_naming_the_worker(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["worker"]
    assert body["checks"]["database"] == "ok"
    assert "qcluster" in body["checks"]["worker"]


def test_readyz_with_a_real_worker_is_200(client: Client, worker: Any) -> None:
    worker.wait_for(lambda: client.get("/readyz").status_code == 200, timeout=60, what="readyz 200")
    body = client.get("/readyz").json()
    assert body == {
        "status": "ok",
        "checks": {"database": "ok", "storage": "ok", "cache": "ok", "worker": "ok"},
        "failing": [],
    }


@pytest.mark.django_db
def test_readyz_reports_unwritable_storage(client: Client, settings: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the storage folder should be")
    settings.MIST_STORAGE_ROOT = blocker
    body = client.get("/readyz").json()
    assert "storage" in body["failing"]
    assert str(blocker) in body["checks"]["storage"]


@pytest.mark.django_db
def test_readyz_reports_database_down(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_cursor(*args: Any, **kwargs: Any) -> Any:
        raise connection.Database.OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", broken_cursor)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database", "worker"]
    assert "database unreachable" in body["checks"]["database"]


def test_request_id_is_propagated(client: Client) -> None:
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")
    assert response["X-Request-ID"] == "abc-123"
    response = client.get("/healthz", HTTP_X_REQUEST_ID="bad id with spaces")
    assert response["X-Request-ID"] != "bad id with spaces"
