"""Steam appdetails pull-through against a real local HTTP server: every failure mode saves the game."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.models import Game
from catalog.services import USER_AGENT, create_game, resync_steam
from catalog.tests.steam_fake import Reply, SteamFake, make_png

pytestmark = pytest.mark.django_db


def _game(app_id: int | None = 10, **kw: object) -> Game:
    return Game.objects.create(slug=kw.pop("slug", "portal"), title=kw.pop("title", "Portal"), app_id=app_id, **kw)


def test_ok_stores_name_description_header_and_time(steam: SteamFake, mist_roots: dict[str, Path]) -> None:
    # given
    header = steam.image("portal.png", make_png(40, 20))
    steam.app_ok(10, name="Portal", description="A &quot;puzzle&quot; <b>game</b> &amp; more", header=header)
    game = _game()
    # when
    result = resync_steam(game=game)
    # then
    game.refresh_from_db()
    assert result.ok and result.fetched and result.image_cached, result
    assert game.steam_name == "Portal"
    assert game.steam_description == 'A "puzzle" game & more'  # entities decoded, tags dropped
    assert game.steam_header_url == header
    assert game.steam_fetched_at is not None and game.steam_error == ""
    cached = mist_roots["storage"] / "media" / game.header_image_cached
    assert cached.read_bytes() == make_png(40, 20)
    assert game.header_image_cached_from == header
    [req] = steam.requests_for(10)
    assert req.user_agent == USER_AGENT


def test_500_then_ok_is_retried_once(steam: SteamFake) -> None:
    steam.script(10, steam.server_error_reply(), steam.ok_reply(10, name="Portal"))
    game = _game()
    result = resync_steam(game=game)
    assert result.ok, result.message
    assert len(steam.requests_for(10)) == 2
    game.refresh_from_db()
    assert game.steam_name == "Portal"


def test_500_twice_gives_up_after_one_retry(steam: SteamFake) -> None:
    steam.script(10, steam.server_error_reply())
    game = _game()
    result = resync_steam(game=game)
    assert not result.ok
    assert "HTTP 500" in result.message
    assert len(steam.requests_for(10)) == 2


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (SteamFake.not_found_reply(), "HTTP 404"),
        (SteamFake.failure_reply(10), "success: false"),
        (SteamFake.bad_json_reply(), "not valid JSON"),
        (Reply(body=b'["not", "an", "object"]'), "no entry for app 10"),
        (Reply(body=b'{"10": {"success": true, "data": "nope"}}'), "no data object"),
    ],
    ids=["404", "success-false", "bad-json", "wrong-shape", "data-not-object"],
)
def test_failures_keep_previous_details_and_say_why(steam: SteamFake, reply: Reply, expected: str) -> None:
    # given a game fetched once before
    steam.app_ok(10, name="Portal", description="Old description")
    game = _game()
    assert resync_steam(game=game).ok
    fetched_at = Game.objects.get(pk=game.pk).steam_fetched_at
    # when Steam now answers badly
    steam.script(10, reply)
    result = resync_steam(game=game)
    # then nothing breaks, the message says why, and the old details stay
    assert not result.ok and expected in result.message, result.message
    game.refresh_from_db()
    assert expected in game.steam_error
    assert game.steam_name == "Portal" and game.steam_description == "Old description"
    assert game.steam_fetched_at == fetched_at
    assert len(steam.requests_for(10)) == 2  # no retry for 4xx or bad content


def test_slow_answer_times_out_quickly(steam: SteamFake) -> None:
    steam.app_ok(10, name="Portal", delay=3)
    game = _game()
    started = time.monotonic()
    result = resync_steam(game=game)
    elapsed = time.monotonic() - started
    assert not result.ok and "timed out" in result.message
    assert elapsed < 2.0, f"a slow Steam held us {elapsed:.1f} s"
    assert len(steam.requests_for(10)) == 1  # a timeout is not retried


def test_unreachable_steam(settings: object) -> None:
    # conftest points Steam at the discard port: nothing listens there
    game = _game()
    result = resync_steam(game=game)
    assert not result.ok and "could not be reached" in result.message
    game.refresh_from_db()
    assert game.steam_error and game.steam_fetched_at is None


def test_recovery_clears_the_error(steam: SteamFake) -> None:
    steam.script(10, steam.not_found_reply())
    game = _game()
    assert not resync_steam(game=game).ok
    steam.app_ok(10, name="Portal")
    assert resync_steam(game=game).ok
    game.refresh_from_db()
    assert game.steam_error == ""


def test_create_game_fetches_steam(steam: SteamFake) -> None:
    steam.app_ok(620, name="Portal 2", description="Sequel")
    game = create_game(slug="portal-2", title="", app_id=620)
    assert game.title == "Portal 2"  # no title given: Steam's name
    assert game.description == "Sequel" and game.steam_fetched_at is not None


def test_create_game_never_fails_because_of_steam(steam: SteamFake) -> None:
    steam.script(620, steam.bad_json_reply())
    game = create_game(slug="portal-2", title="Portal 2", app_id=620, is_private=True)
    assert Game.objects.filter(slug="portal-2", is_private=True).exists()
    assert "not valid JSON" in game.steam_error


def test_resync_command(steam: SteamFake) -> None:
    steam.app_ok(10, name="Portal")
    steam.script(20, steam.not_found_reply())
    _game(10)
    _game(20, slug="broken", title="Broken")
    _game(None, slug="local", title="Local only")
    call_command("resync_steam", "portal")
    assert Game.objects.get(slug="portal").steam_name == "Portal"
    with pytest.raises(CommandError, match="1 of 2"):
        call_command("resync_steam")  # all games with an app id: one fails
    assert "HTTP 404" in Game.objects.get(slug="broken").steam_error
    with pytest.raises(CommandError, match="no such game: nope"):
        call_command("resync_steam", "nope")
