"""Catalog services: creating games, Steam appdetails pull-through, header image cache, grants.

Steam is a nice-to-have: nothing here ever fails because Steam is down, slow, or answers garbage.
Errors become a clear message (returned in a `SteamResult` and kept in `Game.steam_error`), and the
previously fetched metadata stays in place.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.html import strip_tags

from catalog.models import Game, GameGrant
from mistcore.fsutil import atomic_write, sha256_bytes

logger = logging.getLogger("mist.catalog")

USER_AGENT = "Mist/0.1 (self-hosted private game store; Steam appdetails pull-through)"
# appdetails answers are tens of KB; anything far larger is not what we asked for.
MAX_APPDETAILS_BYTES = 4 * 1024 * 1024
MAX_HEADER_IMAGE_BYTES = 5 * 1024 * 1024
HEADER_DIR = "catalog/headers"

# Magic bytes of the image formats a header may be in, and the extension we store it under.
_IMAGE_MAGIC: list[tuple[bytes, int, str, str]] = [
    # (magic, offset, extension, content type)
    (b"\xff\xd8\xff", 0, "jpg", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png", "image/png"),
    (b"GIF87a", 0, "gif", "image/gif"),
    (b"GIF89a", 0, "gif", "image/gif"),
    (b"WEBP", 8, "webp", "image/webp"),
]
IMAGE_CONTENT_TYPES = {ext: ctype for _, _, ext, ctype in _IMAGE_MAGIC}


class CatalogError(Exception):
    """A user mistake in a catalog operation (bad slug, duplicate game): the message is shown as is."""


class SteamError(Exception):
    """Steam could not give us the app's details; the message says why, for the admin."""


@dataclass(frozen=True)
class SteamDetails:
    name: str
    short_description: str
    header_image: str


@dataclass(frozen=True)
class SteamResult:
    """What a Steam resync did: `ok` is False when Steam or the image failed (the game is saved anyway)."""

    ok: bool
    message: str
    fetched: bool = False
    image_cached: bool = False


# --- Steam appdetails ---------------------------------------------------------------------------


def _steam_timeout() -> tuple[float, float]:
    read = float(getattr(settings, "MIST_STEAM_TIMEOUT", 5.0))
    return (min(read, 3.0), read)


def _read_capped(response: requests.Response, *, limit: int, what: str, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise SteamError(f"{what} is {int(declared)} bytes, over the {limit} byte limit")
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_content(64 * 1024):
        total += len(chunk)
        if total > limit:
            raise SteamError(f"{what} is over the {limit} byte limit")
        # The read timeout is per socket read: a server dribbling bytes needs an overall deadline.
        if time.monotonic() > deadline:
            raise SteamError(f"{what} was too slow to arrive")
        chunks.append(chunk)
    return b"".join(chunks)


def _get(url: str, *, params: dict[str, Any] | None = None, what: str, limit: int) -> tuple[str, bytes]:
    """GET with timeouts and our User-Agent, one retry on a 5xx or a dropped connection: (content type, body)."""
    connect, read = _steam_timeout()
    attempts = 2
    for attempt in range(1, attempts + 1):
        try:
            response = requests.get(
                url, params=params, timeout=(connect, read), headers={"User-Agent": USER_AGENT}, stream=True
            )
        except requests.Timeout as exc:
            # A slow answer is not retried: the admin is waiting on the save.
            raise SteamError(f"{what} timed out after {read:g} s") from exc
        except requests.ConnectionError as exc:
            if attempt < attempts:
                time.sleep(0.2)
                continue
            raise SteamError(f"{what} could not be reached (connection failed)") from exc
        except requests.RequestException as exc:
            raise SteamError(f"{what} failed: {exc}") from exc
        with response:
            if response.status_code >= 500 and attempt < attempts:
                time.sleep(0.2)
                continue
            if response.status_code != 200:
                raise SteamError(f"{what} answered HTTP {response.status_code}")
            try:
                body = _read_capped(response, limit=limit, what=what, deadline=time.monotonic() + 2 * read)
            except requests.RequestException as exc:
                raise SteamError(f"{what} broke off or was too slow ({type(exc).__name__})") from exc
            return response.headers.get("Content-Type", ""), body
    raise AssertionError("unreachable")  # pragma: no cover


def _clean_text(value: Any, *, limit: int) -> str:
    # Steam's short_description carries HTML entities (and now and then tags): store plain text.
    if not isinstance(value, str):
        return ""
    return html.unescape(strip_tags(value)).strip()[:limit]


def fetch_appdetails(*, app_id: int) -> SteamDetails:
    """Fetch name, short description and header image URL of a Steam app; SteamError says why not."""
    what = f"Steam appdetails for app {app_id}"
    _, body = _get(settings.STEAM_APPDETAILS_URL, params={"appids": app_id}, what=what, limit=MAX_APPDETAILS_BYTES)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise SteamError(f"{what}: the answer is not valid JSON") from exc
    entry = payload.get(str(app_id)) if isinstance(payload, dict) else None
    if not isinstance(entry, dict):
        raise SteamError(f"{what}: the answer has no entry for app {app_id}")
    if entry.get("success") is not True:
        raise SteamError(f"Steam has no public store page for app {app_id} (success: false); check the app id")
    data = entry.get("data")
    if not isinstance(data, dict):
        raise SteamError(f"{what}: the answer has no data object")
    raw_header = data.get("header_image")
    header = raw_header if isinstance(raw_header, str) else ""
    if header and urlparse(header).scheme not in ("http", "https"):
        header = ""
    details = SteamDetails(
        name=_clean_text(data.get("name"), limit=200),
        short_description=_clean_text(data.get("short_description"), limit=5000),
        header_image=header[:500],
    )
    if not details.name:
        raise SteamError(f"{what}: the answer has no name")
    return details


# --- Header image cache ---------------------------------------------------------------------------


def sniff_image(data: bytes) -> str | None:
    """The extension of the image format `data` starts with, or None if it is not an image we take."""
    for magic, offset, ext, _ in _IMAGE_MAGIC:
        if data[offset : offset + len(magic)] == magic:
            if ext == "webp" and data[:4] != b"RIFF":
                continue
            return ext
    return None


def download_image(url: str) -> tuple[bytes, str]:
    """Download an image (<= 5 MB, image/* content type, known magic bytes): (bytes, extension)."""
    if urlparse(url).scheme not in ("http", "https"):
        raise SteamError(f"header image URL {url!r} is not http(s)")
    content_type, data = _get(url, what="the header image download", limit=MAX_HEADER_IMAGE_BYTES)
    ctype = content_type.split(";")[0].strip().lower()
    if not ctype.startswith("image/"):
        raise SteamError(f"the header image URL answered {ctype or 'no content type'}, not an image")
    ext = sniff_image(data)
    if ext is None:
        raise SteamError("the header image is not a JPEG, PNG, GIF or WebP file (its first bytes say otherwise)")
    return data, ext


def _media_root() -> Path:
    return Path(settings.MEDIA_ROOT)


def header_image_path(game: Game) -> Path | None:
    """Absolute path of the game's cached header image, if it has one on disk."""
    if not game.header_image_cached:
        return None
    path = _media_root() / game.header_image_cached
    return path if path.is_file() else None


def _remove_cached(relpath: str) -> None:
    if relpath:
        (_media_root() / relpath).unlink(missing_ok=True)


def refresh_header_image(*, game: Game, force: bool = False) -> str:
    """Make the local header copy match the game's header source; returns an error message or ""."""
    source = game.header_image_source
    if not source:
        if game.header_image_cached:
            _remove_cached(game.header_image_cached)
            game.header_image_cached = ""
            game.header_image_cached_from = ""
            game.save(update_fields=["header_image_cached", "header_image_cached_from", "updated_at"])
        return ""
    if not force and source == game.header_image_cached_from and header_image_path(game) is not None:
        return ""
    try:
        data, ext = download_image(source)
    except SteamError as exc:
        # Keep whatever copy we had: a stale header beats a broken card.
        logger.warning("header image for %s not cached: %s", game.slug, exc)
        return f"Header image not cached: {exc}"
    relpath = f"{HEADER_DIR}/{game.slug}-{sha256_bytes(data)[:16]}.{ext}"
    target = _media_root() / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as f:
        f.write(data)
    old = game.header_image_cached
    game.header_image_cached = relpath
    game.header_image_cached_from = source
    game.save(update_fields=["header_image_cached", "header_image_cached_from", "updated_at"])
    if old and old != relpath:
        _remove_cached(old)
    return ""


# --- Steam resync -----------------------------------------------------------------------------------


def resync_steam(*, game: Game) -> SteamResult:
    """Fetch the game's Steam details and cache its header image; never raises because of Steam."""
    fetched = False
    problems: list[str] = []
    if game.app_id:
        try:
            details = fetch_appdetails(app_id=game.app_id)
        except SteamError as exc:
            game.steam_error = str(exc)[:500]
            game.save(update_fields=["steam_error", "updated_at"])
            problems.append(f"{exc}. The previously fetched details are kept.")
        else:
            game.steam_name = details.name
            game.steam_description = details.short_description
            game.steam_header_url = details.header_image
            game.steam_fetched_at = timezone.now()
            game.steam_error = ""
            game.save(
                update_fields=[
                    "steam_name", "steam_description", "steam_header_url", "steam_fetched_at",
                    "steam_error", "updated_at",
                ]
            )
            fetched = True
    image_error = refresh_header_image(game=game)
    if image_error:
        problems.append(image_error)
    image_cached = header_image_path(game) is not None
    if problems:
        return SteamResult(ok=False, message=" ".join(problems), fetched=fetched, image_cached=image_cached)
    if fetched:
        return SteamResult(
            ok=True, message=f"Fetched “{game.steam_name}” from Steam (app {game.app_id}).",
            fetched=True, image_cached=image_cached,
        )
    return SteamResult(ok=True, message="No Steam app id: nothing to fetch.", image_cached=image_cached)


def needs_steam_fetch(*, game: Game, changed_fields: Iterable[str], adding: bool) -> bool:
    """Whether saving the game from the admin should ask Steam again."""
    if not game.app_id:
        return False
    return adding or "app_id" in changed_fields or game.steam_fetched_at is None or bool(game.steam_error)


def sync_after_save(*, game: Game, changed_fields: Iterable[str], adding: bool) -> SteamResult | None:
    """After an admin save: fetch Steam if the app id is new or never fetched, and re-cache the header."""
    if needs_steam_fetch(game=game, changed_fields=changed_fields, adding=adding):
        return resync_steam(game=game)
    image_error = refresh_header_image(game=game)
    if image_error:
        return SteamResult(ok=False, message=image_error, image_cached=header_image_path(game) is not None)
    return None


# --- Games and grants --------------------------------------------------------------------------------


def create_game(*, slug: str, title: str, app_id: int | None = None, is_private: bool = False) -> Game:
    """Create a game; with an app id, fetch its Steam details (a Steam failure is kept in steam_error)."""
    try:
        validate_slug(slug)
    except ValidationError as exc:
        raise CatalogError(f"invalid slug {slug!r}: use letters, digits, '-' and '_' only") from exc
    if len(slug) > 64:
        raise CatalogError(f"invalid slug {slug!r}: at most 64 characters")
    title = title.strip()
    if not title and not app_id:
        raise CatalogError("a title is required when there is no Steam app id")
    if app_id is not None and app_id <= 0:
        raise CatalogError(f"invalid Steam app id {app_id}")
    try:
        with transaction.atomic():
            game = Game.objects.create(slug=slug, title=title or slug, app_id=app_id, is_private=is_private)
    except IntegrityError as exc:
        raise CatalogError(f"a game with slug {slug!r} already exists") from exc
    if app_id:
        resync_steam(game=game)
        if not title and game.steam_name:
            game.title = game.steam_name
            game.save(update_fields=["title", "updated_at"])
    return game


def grant_access(*, game: Game, users: Iterable[Any], granted_by: Any) -> list[GameGrant]:
    """Let these users see the (private) game; returns the grants that are new (existing ones stay)."""
    created: list[GameGrant] = []
    with transaction.atomic():
        for user in users:
            grant, is_new = GameGrant.objects.get_or_create(
                game=game, user=user, defaults={"granted_by": granted_by}
            )
            if is_new:
                created.append(grant)
    return created


def revoke_access(*, game: Game, users: Iterable[Any]) -> int:
    """Remove these users' grants to the game; returns how many were removed."""
    deleted, _ = GameGrant.objects.filter(game=game, user__in=list(users)).delete()
    return deleted
