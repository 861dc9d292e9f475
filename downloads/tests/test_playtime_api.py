"""Playtime reports from the patcher: idempotent by session id, only for games the friend may see."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from catalog.models import Game, GameGrant
from conftest import bearer_client
from downloads.models import PlaySession
from downloads.playtime import format_duration, totals_per_game

pytestmark = pytest.mark.django_db

URL = "/api/v1/playtime/sessions"


def _report(game: str = "portal", minutes: int = 90, **extra: Any) -> dict[str, Any]:
    end = timezone.now() - timedelta(minutes=1)
    return {"id": str(uuid.uuid4()), "game": game, "version": "1.0", "platform": "linux", "option": "Play",
            "started_at": (end - timedelta(minutes=minutes)).isoformat(), "ended_at": end.isoformat(),
            "exit_code": 0, **extra}


@pytest.fixture
def games(admin_user: Any, friend: Any) -> None:
    Game.objects.create(slug="portal", title="Portal")
    Game.objects.create(slug="secret", title="Secret", is_private=True)
    granted = Game.objects.create(slug="granted", title="Granted", is_private=True)
    GameGrant.objects.create(game=granted, user=friend, granted_by=admin_user)


def test_a_session_is_recorded_once_however_often_it_is_sent(games: None, friend: Any) -> None:
    api = bearer_client(friend)
    body = _report(minutes=90)
    first = api.post(URL, body, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["seconds"] == 5400 and first.json()["playtime"]["sessions"] == 1
    again = api.post(URL, body, format="json")
    assert again.status_code == 200 and again.json()["created"] is False
    assert PlaySession.objects.count() == 1
    api.post(URL, _report(minutes=30), format="json")
    mine = api.get(URL).json()["games"]["portal"]
    assert mine["seconds"] == 7200 and mine["sessions"] == 2 and mine["last_played"]


def test_a_game_the_friend_may_not_see_is_404_and_records_nothing(games: None, friend: Any) -> None:
    api = bearer_client(friend)
    assert api.post(URL, _report(game="secret"), format="json").status_code == 404
    assert api.post(URL, _report(game="nope"), format="json").status_code == 404
    assert api.post(URL, _report(game="granted"), format="json").status_code == 201
    assert PlaySession.objects.filter(game__slug="secret").count() == 0


@pytest.mark.parametrize(("change", "status"), [
    ({"id": "not-a-uuid"}, 400),
    ({"started_at": "yesterday"}, 400),
    ({"exit_code": "zero"}, 400),
    ({"platform": "amiga"}, 400),
    ({"ended_at": (timezone.now() + timedelta(days=1)).isoformat()}, 400),
    ({"started_at": (timezone.now() - timedelta(days=30)).isoformat()}, 400),
])
def test_bad_reports_are_a_clear_400(games: None, friend: Any, change: dict[str, Any], status: int) -> None:
    response = bearer_client(friend).post(URL, _report(**change), format="json")
    assert response.status_code == status, response.content
    assert PlaySession.objects.count() == 0


def test_a_reused_id_is_a_conflict_not_a_second_count(games: None, friend: Any, outsider: Any) -> None:
    body = _report()
    assert bearer_client(friend).post(URL, body, format="json").status_code == 201
    assert bearer_client(outsider).post(URL, body, format="json").status_code == 409
    assert bearer_client(friend).post(URL, {**body, "started_at": _report(minutes=5)["started_at"]},
                                      format="json").status_code == 409
    assert PlaySession.objects.count() == 1


def test_strangers_cannot_report(games: None, api_client: Any) -> None:
    assert api_client.post(URL, _report(), format="json").status_code == 401


def test_dashboard_totals_and_durations(games: None, friend: Any, outsider: Any) -> None:
    bearer_client(friend).post(URL, _report(minutes=60), format="json")
    bearer_client(outsider).post(URL, _report(minutes=25), format="json")
    [row] = totals_per_game()
    assert (row["slug"], row["seconds"], row["players"], row["sessions"]) == ("portal", 5100, 2, 2)
    assert format_duration(5100) == "1 h 25 min" and format_duration(59) == "under a minute"
    assert format_duration(3600) == "1 h" and format_duration(720) == "12 min"
