"""Access helpers: what a user may see answers; everything else is a 404, like a missing game."""

from __future__ import annotations

from typing import Any

from django.db.models import OuterRef, Subquery
from django.http import Http404

from builds.models import Version
from catalog.models import Game
from catalog.platforms import default_platform
from mistcore.platforms import PLATFORMS


def visible_game(user: Any, slug: str) -> Game:
    game = Game.objects.visible_to(user).filter(slug=slug).first()
    if game is None:
        raise Http404("No such game.")
    return game


def visible_versions(user: Any, game: Game, platform: str | None = None) -> Any:
    """Friends see ready, published versions; admins see every version. All platforms unless one is named."""
    qs = game.versions.all() if platform is None else game.versions.filter(platform=platform)
    return qs if getattr(user, "is_staff", False) else qs.visible()


def visible_version(user: Any, game: Game, name: str, platform: str | None = None) -> Version:
    """The build of version `name` for `platform` (MIST_DEFAULT_PLATFORM when None); Http404 if not visible."""
    platform = platform or default_platform()
    version = visible_versions(user, game, platform).filter(name=name).first()
    if version is None:
        raise Http404(f"No such version (no {platform} build of {name}).")
    return version


def latest_visible_version(user: Any, game: Game, platform: str | None = None) -> Version | None:
    """The newest ready build of the game for `platform` (MIST_DEFAULT_PLATFORM when None)."""
    platform = platform or default_platform()
    return visible_versions(user, game, platform).filter(status=Version.Status.READY).order_by("-seq").first()


def visible_platforms(user: Any, game: Game) -> list[str]:
    """The platforms the game has ready builds of that the user may see, in PLATFORMS order."""
    present = set(visible_versions(user, game).filter(status=Version.Status.READY).values_list("platform", flat=True))
    return [p for p in PLATFORMS if p in present]


def visible_games_with_latest(user: Any, platform: str | None = None) -> list[tuple[Game, Version | None]]:
    """The games the user may see, by title, each with its latest version the user may see.

    With a platform: the newest build for that platform; without: the newest build of any
    platform. Two queries whatever the number of games or versions: the latest version's id comes
    from a subquery, then the versions themselves by primary key.
    """
    latest = Version.objects.filter(game=OuterRef("pk"), status=Version.Status.READY)
    if platform is not None:
        latest = latest.filter(platform=platform)
    if not getattr(user, "is_staff", False):
        latest = latest.visible()
    order = ["-seq"] if platform is not None else ["-created_at", "-pk"]
    games = list(
        Game.objects.visible_to(user)
        .annotate(latest_version_id=Subquery(latest.order_by(*order).values("pk")[:1]))
        .order_by("title", "slug")
    )
    versions = Version.objects.in_bulk([g.latest_version_id for g in games if g.latest_version_id is not None])
    return [(game, versions.get(game.latest_version_id)) for game in games]


def visible_platforms_by_game(user: Any, games: list[Game]) -> dict[int, list[str]]:
    """visible_platforms of many games in one query: {game id: platforms in PLATFORMS order}."""
    qs = Version.objects.filter(game__in=games, status=Version.Status.READY)
    if not getattr(user, "is_staff", False):
        qs = qs.visible()
    found: dict[int, set[str]] = {}
    for game_id, platform in qs.values_list("game_id", "platform").distinct():
        found.setdefault(game_id, set()).add(platform)
    return {game.pk: [p for p in PLATFORMS if p in found.get(game.pk, set())] for game in games}
