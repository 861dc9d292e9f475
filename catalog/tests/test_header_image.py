"""Header images: downloaded once, validated (content type, magic bytes, 5 MB cap), replaced on change."""

from __future__ import annotations

from pathlib import Path

import pytest

from catalog.models import Game
from catalog.services import MAX_HEADER_IMAGE_BYTES, refresh_header_image, sniff_image
from catalog.tests.steam_fake import SteamFake, make_png

pytestmark = pytest.mark.django_db

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 100


def _media(mist_roots: dict[str, Path]) -> Path:
    return mist_roots["storage"] / "media"


def test_sniff_image() -> None:
    assert sniff_image(make_png(2, 2)) == "png"
    assert sniff_image(JPEG) == "jpg"
    assert sniff_image(b"GIF89a....") == "gif"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_image(b"<html>") is None
    assert sniff_image(b"XXXX\x00\x00\x00\x00WEBP") is None


def test_downloaded_once_then_reused(steam: SteamFake, mist_roots: dict[str, Path]) -> None:
    url = steam.image("a.png", make_png(8, 8))
    game = Game.objects.create(slug="g", title="G", steam_header_url=url)
    assert refresh_header_image(game=game) == ""
    assert refresh_header_image(game=game) == ""
    assert len([r for r in steam.seen if r.path == "/img/a.png"]) == 1
    assert (_media(mist_roots) / game.header_image_cached).is_file()


def test_override_wins_and_replaces_the_old_copy(steam: SteamFake, mist_roots: dict[str, Path]) -> None:
    steam_url = steam.image("steam.png", make_png(8, 8))
    own_url = steam.image("own.jpg", JPEG, content_type="image/jpeg")
    game = Game.objects.create(slug="g", title="G", steam_header_url=steam_url)
    refresh_header_image(game=game)
    old = _media(mist_roots) / game.header_image_cached
    # when the admin sets an override
    game.header_image_override = own_url
    game.save()
    assert refresh_header_image(game=game) == ""
    # then the override is cached and the old copy is gone
    assert game.header_image_cached.endswith(".jpg")
    assert (_media(mist_roots) / game.header_image_cached).read_bytes() == JPEG
    assert not old.exists()
    # and clearing every source clears the cache
    game.header_image_override = ""
    game.steam_header_url = ""
    refresh_header_image(game=game)
    assert game.header_image_cached == "" and not any((_media(mist_roots) / "catalog" / "headers").iterdir())


@pytest.mark.parametrize(
    ("data", "content_type", "expected"),
    [
        (b"<html>login wall</html>", "text/html", "not an image"),
        (b"<html>lies</html>", "image/jpeg", "not a JPEG, PNG, GIF or WebP"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (MAX_HEADER_IMAGE_BYTES + 1), "image/png", "byte limit"),
    ],
    ids=["html", "wrong-magic", "too-big"],
)
def test_rejected_downloads_keep_the_old_copy(
    steam: SteamFake, mist_roots: dict[str, Path], data: bytes, content_type: str, expected: str
) -> None:
    good = steam.image("good.png", make_png(8, 8))
    game = Game.objects.create(slug="g", title="G", steam_header_url=good)
    refresh_header_image(game=game)
    kept = game.header_image_cached
    bad = steam.image("bad", data, content_type=content_type)
    game.steam_header_url = bad
    error = refresh_header_image(game=game)
    assert expected in error, error
    game.refresh_from_db()
    assert game.header_image_cached == kept and (_media(mist_roots) / kept).is_file()


def test_missing_and_slow_images(steam: SteamFake) -> None:
    game = Game.objects.create(slug="g", title="G", steam_header_url=f"{steam.base_url}/img/none.png")
    assert "HTTP 404" in refresh_header_image(game=game)
    game.steam_header_url = steam.image("slow.png", make_png(4, 4), delay=3)
    assert "timed out" in refresh_header_image(game=game)
    assert game.header_image_cached == ""
