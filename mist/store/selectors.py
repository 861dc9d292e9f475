"""Read-only queries behind the store pages, shaped so each page costs a fixed handful of queries.

The library annotates every game with its latest visible version, sizes and dates in ONE query
(correlated subqueries), so 200 games cost the same number of queries as 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from builds.access import visible_platforms_by_game
from builds.models import Job, Version
from builds.storage import cache_root
from catalog.models import Game
from catalog.platforms import default_platform
from deltas.models import DirectDelta
from downloads.models import FullArchive
from mistcore.platforms import PLATFORMS

SORTS = {"title": ("title", "slug"), "updated": (F("latest_updated_at").desc(nulls_last=True), "title")}


def _delta_size_of(version_ref: Any) -> Subquery:
    """Bytes of the ready direct delta from the version's parent (what updating to it costs)."""
    return Subquery(
        DirectDelta.objects.filter(
            to_version=version_ref, status=DirectDelta.Status.READY
        ).values("download_size")[:1]
    )


def library_games(*, user: Any, query: str = "", sort: str = "title") -> QuerySet[Game]:
    """Games the user may see, matching `query`, with their latest visible version annotated."""
    # The newest build of any platform (seq counts each platform's history on its own).
    latest = Version.objects.visible().filter(game=OuterRef("pk")).order_by("-created_at", "-pk")
    return (
        Game.objects.visible_to(user)
        .search(query)
        .annotate(
            latest_version=Subquery(latest.values("name")[:1]),
            latest_version_id=Subquery(latest.values("pk")[:1]),
            latest_total_size=Subquery(latest.values("total_size")[:1]),
            latest_recorded_update_size=Subquery(latest.values("update_size")[:1]),
            latest_archive_size=Subquery(latest.values("archive__size")[:1]),
            latest_updated_at=Subquery(
                latest.annotate(when=Coalesce("published_at", "ready_at", "created_at")).values("when")[:1]
            ),
        )
        # The worker records the update size on the version; until then the delta row tells it.
        .annotate(
            latest_update_size=Coalesce(
                "latest_recorded_update_size", _delta_size_of(OuterRef("latest_version_id"))
            )
        )
        .order_by(*SORTS.get(sort, SORTS["title"]))
    )


def _on_disk(archive: FullArchive) -> bool:
    """The archive's file is in the cache with its recorded size (a row can outlive an eviction)."""
    try:
        return (cache_root() / archive.relpath).stat().st_size == archive.size
    except OSError:
        return False


@dataclass(frozen=True)
class GamePage:
    game: Game
    platform: str  # whose builds `versions` lists
    platforms: list[str]  # every platform the game has builds for that the user may see
    versions: list[Version]  # newest first, annotated with update_bytes and full_archive
    latest: Version | None
    preparing: set[int]  # ids of versions whose full archive the worker is building


def game_page(*, game: Game, user: Any, platform: str | None = None) -> GamePage:
    """The builds of one platform a user may see of a game (admins see every state), with sizes and archive state.

    Without a platform (or with one the game has no builds for): MIST_DEFAULT_PLATFORM if the
    game has builds for it, else the first platform it has.
    """
    all_qs = Version.objects.filter(game=game)
    if not user.is_staff:
        all_qs = all_qs.visible()
    present = set(all_qs.values_list("platform", flat=True).distinct())
    platforms = [p for p in PLATFORMS if p in present]
    if platform not in platforms:
        platform = default_platform() if default_platform() in platforms or not platforms else platforms[0]
    versions_qs = all_qs.filter(platform=platform)
    versions = list(
        versions_qs.select_related("archive", "parent")
        .annotate(update_bytes=Coalesce("update_size", _delta_size_of(OuterRef("pk"))))
        .order_by("-seq")
    )
    for version in versions:
        # A reverse one-to-one raises (an AttributeError subclass) when there is no archive yet.
        archive = getattr(version, "archive", None)
        version.full_archive = archive if archive is not None and _on_disk(archive) else None  # type: ignore[attr-defined]
    latest = next((v for v in versions if v.is_visible), None)
    preparing = set(
        Job.objects.active()
        .filter(version__in=[v.pk for v in versions], kind__in=[Job.Kind.ARCHIVE, Job.Kind.RECONSTRUCT])
        .values_list("version_id", flat=True)
    )
    return GamePage(
        game=game, platform=platform, platforms=platforms, versions=versions, latest=latest, preparing=preparing
    )


def platforms_by_game(*, user: Any, games: list[Game]) -> dict[int, list[str]]:
    """The platforms each game has builds of that the user may see (one query for a page of games)."""
    return visible_platforms_by_game(user, games)
