"""Access helpers: what a user may see answers; everything else is a 404, like a missing game."""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, Subquery
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


def visible_games_with_latest(user: Any) -> list[tuple[Game, Version | None]]:
    """The games the user may see, by title, each with its latest version the user may see.

    Two queries whatever the number of games or versions: the latest version's id comes from a
    subquery on the (game, seq) index, then the versions themselves by primary key.
    """
    latest = Version.objects.filter(game=OuterRef("pk"), status=Version.Status.READY)
    if not getattr(user, "is_staff", False):
        latest = latest.visible()
    games = list(
        Game.objects.visible_to(user)
        .annotate(latest_version_id=Subquery(latest.order_by("-seq").values("pk")[:1]))
        .order_by("title", "slug")
    )
    versions = Version.objects.in_bulk([g.latest_version_id for g in games if g.latest_version_id is not None])
    return [(game, versions.get(game.latest_version_id)) for game in games]
