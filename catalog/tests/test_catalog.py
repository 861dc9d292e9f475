"""Override logic, visibility of private games, and grants."""

from __future__ import annotations

from typing import Any

import pytest

from catalog.models import Game, GameGrant
from catalog.services import CatalogError, create_game, grant_access, revoke_access

pytestmark = pytest.mark.django_db


def test_override_wins_where_set_else_fetched() -> None:
    game = Game(title="T", steam_description="from steam", steam_header_url="https://cdn/s.jpg")
    assert game.description == "from steam" and game.header_image_source == "https://cdn/s.jpg"
    game.description_override = "mine"
    game.header_image_override = "https://me/h.png"
    assert game.description == "mine" and game.header_image_source == "https://me/h.png"
    game.description_override = ""
    assert game.description == "from steam"


def test_private_games_visible_only_with_grant(admin_user: Any, friend: Any, outsider: Any) -> None:
    public = Game.objects.create(slug="pub", title="Public")
    secret = Game.objects.create(slug="sec", title="Secret", is_private=True)
    new = grant_access(game=secret, users=[friend], granted_by=admin_user)
    assert [g.user for g in new] == [friend]
    assert grant_access(game=secret, users=[friend, outsider], granted_by=admin_user)[0].user == outsider
    assert GameGrant.objects.filter(game=secret).count() == 2  # granting twice is harmless
    assert revoke_access(game=secret, users=[outsider]) == 1

    assert set(Game.objects.visible_to(friend)) == {public, secret}
    assert list(Game.objects.visible_to(outsider)) == [public]
    assert Game.objects.visible_to(outsider).search("secret").count() == 0
    assert set(Game.objects.visible_to(admin_user)) == {public, secret}
    assert list(Game.objects.visible_to(None)) == []
    outsider.is_active = False
    assert list(Game.objects.visible_to(outsider)) == []


def test_search_matches_title_steam_name_and_slug() -> None:
    a = Game.objects.create(slug="hl2", title="Half-Life 2", steam_name="Half-Life 2")
    b = Game.objects.create(slug="the-witness", title="Witness", steam_name="The Witness")
    assert list(Game.objects.search("half")) == [a]
    assert list(Game.objects.search("the witness")) == [b]
    assert list(Game.objects.search("  ")) == [a, b]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slug": "bad slug", "title": "X"}, "invalid slug"),
        ({"slug": "x" * 65, "title": "X"}, "at most 64"),
        ({"slug": "ok", "title": " "}, "title is required"),
        ({"slug": "ok", "title": "X", "app_id": -1}, "invalid Steam app id"),
    ],
)
def test_create_game_rejects_bad_input(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        create_game(**kwargs)
    assert not Game.objects.exists()


def test_create_game_duplicate_slug() -> None:
    create_game(slug="dup", title="One")
    with pytest.raises(CatalogError, match="already exists"):
        create_game(slug="dup", title="Two")
    assert Game.objects.get().title == "One"
