"""Every JSON endpoint answers a malformed body with a 400 and a reason, never a 500 with a traceback.

Issue 18 point 2: `[` x 100000 made json.loads raise RecursionError, which DRF does not turn into a
ParseError, so anonymous login answered 500 and logged a 10 KB traceback per request.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from rest_framework.test import APIClient

DEEP = b"[" * 100_000
CASES = [b"{", b'{"username": ', DEEP, b'{"a":' * 50_000, b"\xff\xfe"]


@pytest.mark.django_db
@pytest.mark.parametrize("body", CASES, ids=["open-brace", "truncated", "deep-list", "deep-object", "not-utf8"])
@pytest.mark.parametrize("url", ["/api/v1/auth/token", "/api/v1/auth/token/refresh", "/api/v1/auth/logout"])
def test_anonymous_json_endpoints_refuse_malformed_bodies(url: str, body: bytes, caplog: Any) -> None:
    caplog.set_level(logging.WARNING)
    response = APIClient().generic("POST", url, body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "JSON parse error" in response.json()["detail"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a traceback was logged"


@pytest.mark.django_db
def test_signed_in_json_endpoints_refuse_deep_nesting(admin_api: APIClient, friend_api: APIClient, caplog: Any) -> None:
    from catalog.models import Game

    Game.objects.create(slug="space-game", title="Space Game")
    caplog.set_level(logging.WARNING)
    for client, url in [(admin_api, "/api/v1/builds/uploads"), (friend_api, "/api/v1/games/space-game/updates")]:
        response = client.generic("POST", url, DEEP, content_type="application/json")
        assert response.status_code == 400, (url, response.status_code, response.content[:300])
        assert "nested too deeply" in response.json()["detail"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a traceback was logged"
