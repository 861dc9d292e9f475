"""The web store: server-rendered pages for friends (library, game page, archive requests, headers)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from builds.models import Version
from catalog.models import Game
from catalog.platforms import default_platform
from catalog.services import IMAGE_CONTENT_TYPES, header_image_path
from downloads import playtime
from downloads import services as download_services
from mist.store.selectors import SORTS, game_page, library_games, platforms_by_game
from mistcore.platforms import LABELS

PAGE_SIZE = 24
SORT_LABELS = {"title": "Title", "updated": "Recently updated"}


def _visible_game(request: HttpRequest, slug: str) -> Game:
    """The game, or 404 when it does not exist or the user may not see it (the same answer)."""
    return get_object_or_404(Game.objects.visible_to(request.user), slug=slug)


def header_url(game: Game) -> str:
    """Our cached copy of the header when we have one, else the source URL ("" = placeholder art)."""
    if game.header_image_cached and header_image_path(game) is not None:
        return reverse("store:header_image", kwargs={"slug": game.slug, "name": game.header_image_cached_name})
    return game.header_image_source


def archive_download_url(*, user: Any, game: Game, version: Version) -> str:
    """A resumable, signed download link of a version's full archive (works in any download manager)."""
    return download_services.signed_download_url(
        user=user, kind="archive", slug=game.slug, version=version.name, platform=version.platform
    )


@login_required
@require_GET
def library(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:100]
    sort = request.GET.get("sort", "title")
    if sort not in SORTS:
        sort = "title"
    page = Paginator(library_games(user=request.user, query=query, sort=sort), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    platforms = platforms_by_game(user=request.user, games=list(page))
    played = playtime.playtime_by_game(user=request.user, games=list(page))
    for game in page:
        game.header_url = header_url(game)  # type: ignore[attr-defined]
        game.playtime = played.get(game.pk)  # type: ignore[attr-defined]
        game.platform_labels = [LABELS[p] for p in platforms.get(game.pk, [])]  # type: ignore[attr-defined]
    return render(
        request,
        "store/library.html",
        {"page": page, "query": query, "sort": sort, "sort_labels": SORT_LABELS},
    )


@login_required
@require_GET
def game_detail(request: HttpRequest, slug: str) -> HttpResponse:
    game = _visible_game(request, slug)
    data = game_page(game=game, user=request.user, platform=request.GET.get("platform") or None)
    for version in data.versions:
        version.download_url = (  # type: ignore[attr-defined]
            archive_download_url(user=request.user, game=game, version=version)
            if version.full_archive and version.is_visible  # type: ignore[attr-defined]
            else ""
        )
    return render(
        request,
        "store/game.html",
        {
            "game": game,
            "header_url": header_url(game),
            "versions": data.versions,
            "latest": data.latest,
            "preparing": data.preparing,
            "platform": data.platform,
            "platform_label": LABELS[data.platform],
            "platform_tabs": [(p, LABELS[p]) for p in data.platforms],
            "patcher_url": f"mist://install/{game.slug}",
            "playtime": playtime.playtime_by_game(user=request.user, games=[game]).get(game.pk),
        },
    )


@login_required
@require_POST
def request_archive(request: HttpRequest, slug: str, version: str) -> HttpResponse:
    """Ask the worker to prepare a full archive of an (older) version; the game page shows progress."""
    game = _visible_game(request, slug)
    platform = request.POST.get("platform") or default_platform()
    target = get_object_or_404(Version.objects.visible().filter(game=game, platform=platform), name=version)
    back = reverse("store:game", kwargs={"slug": game.slug}) + f"?platform={target.platform}#v-{target.name}"
    archive, _job = download_services.request_archive(version=target, user=request.user)
    if archive is not None:
        messages.success(request, f"Version {target.name} is ready to download.")
    else:
        messages.success(
            request,
            f"Version {target.name} is being prepared. This page shows a download link when it is ready.",
        )
    return redirect(back)


@login_required
@require_GET
def header_image(request: HttpRequest, slug: str, name: str) -> HttpResponseBase:
    """Our local copy of a game's header: content-addressed name, so browsers may cache it for a year."""
    game = _visible_game(request, slug)
    path = header_image_path(game)
    if path is None or game.header_image_cached_name != name:
        raise Http404("no such header image")
    etag = f'"{name}"'
    # Private: the image of a private game is only for those who may see the game.
    cache_control = "private, max-age=31536000, immutable"
    if request.headers.get("If-None-Match") == etag:
        response: HttpResponseBase = HttpResponseNotModified()
    else:
        content_type = IMAGE_CONTENT_TYPES.get(path.suffix.lstrip("."), "application/octet-stream")
        response = FileResponse(path.open("rb"), content_type=content_type)
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    return response
