"""Access helpers: what a user may see answers; everything else is a 404, like a missing game."""

from __future__ import annotations

from typing import Any

from django.http import Http404

from builds.models import Version
from catalog.models import Game


def visible_game(user: Any, slug: str) -> Game:
    game = Game.objects.visible_to(user).filter(slug=slug).first()
    if game is None:
        raise Http404("No such game.")
    return game


def visible_versions(user: Any, game: Game) -> Any:
    """Friends see ready, published versions; admins see every version."""
    qs = game.versions.all()
    return qs if getattr(user, "is_staff", False) else qs.visible()


def visible_version(user: Any, game: Game, name: str) -> Version:
    version = visible_versions(user, game).filter(name=name).first()
    if version is None:
        raise Http404("No such version.")
    return version


def latest_visible_version(user: Any, game: Game) -> Version | None:
    return visible_versions(user, game).filter(status=Version.Status.READY).order_by("-seq").first()
