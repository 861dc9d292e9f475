"""The store's pages through Django's test client on real PostgreSQL: visibility, search, paging, sizes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from builds.models import Job, Version
from catalog.models import Game, GameGrant
from catalog.services import refresh_header_image
from catalog.tests.steam_fake import SteamFake, make_png
from conftest import password_of
from mist.store.tests.factories import GB, MB, make_game, make_version

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    assert client.login(username=user.username, password=password_of(user))
    return client


def _titles(html: str) -> list[str]:
    return re.findall(r'<h2 class="card__title">([^<]+)</h2>', html)


@pytest.fixture
def catalog(admin_user: Any, friend: Any) -> dict[str, Any]:
    portal = make_game("portal", "Portal", steam_description="Think with portals.")
    v1 = make_version(portal, "1.0", total_size=4 * GB, archive_size=3 * GB, days_ago=30, notes="First release")
    v2 = make_version(portal, "1.1", parent=v1, total_size=4 * GB + 10 * MB, update_size=48 * MB,
                      archive_size=3 * GB, days_ago=2, notes="Fixes the *cake*.\n\nAnd more.")
    pending = make_version(portal, "1.2", parent=v2, status=Version.Status.PROCESSING)
    secret = make_game("secret-beta", "Secret Beta", is_private=True)
    make_version(secret, "0.1", total_size=2 * GB)
    hidden = make_game("hidden-gem", "Hidden Gem", is_private=True)
    GameGrant.objects.create(game=hidden, user=friend, granted_by=admin_user)
    empty = make_game("coming-soon", "Coming Soon")
    return {"portal": portal, "v1": v1, "v2": v2, "pending": pending, "secret": secret, "hidden": hidden,
            "empty": empty}


def test_library_needs_login(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=/")


def test_library_shows_visible_games_with_latest_version(catalog: dict[str, Any], friend: Any) -> None:
    html = _client(friend).get("/").content.decode().replace("\xa0", " ")
    assert _titles(html) == ["Coming Soon", "Hidden Gem", "Portal"]
    assert "4 games" not in html and "3 games" in html
    portal_card = html[html.index(">Portal<"):]
    assert "<dd>1.1</dd>" in portal_card  # the processing 1.2 is not visible
    assert "3.0 GB" in portal_card  # download size = the archive
    assert "48.0 MB update" in portal_card
    assert "No release yet" in html  # Coming Soon
    assert "Private" in html  # Hidden Gem is private but granted


def test_private_games_never_leak(catalog: dict[str, Any], outsider: Any) -> None:
    client = _client(outsider)
    html = client.get("/").content.decode().replace("\xa0", " ")
    assert _titles(html) == ["Coming Soon", "Portal"] and "2 games" in html
    searched = client.get("/", {"q": "secret"}).content.decode().replace("\xa0", " ")
    assert _titles(searched) == [] and "0 games" in searched and "Secret" not in searched.replace("“secret”", "")
    for url in ["/games/secret-beta/", "/games/hidden-gem/", "/games/nope/"]:
        assert client.get(url).status_code == 404
    assert client.post("/games/secret-beta/versions/0.1/archive").status_code == 404


def test_admin_sees_everything(catalog: dict[str, Any], admin_user: Any) -> None:
    client = _client(admin_user)
    assert _titles(client.get("/").content.decode().replace("\xa0", " ")) == ["Coming Soon", "Hidden Gem", "Portal", "Secret Beta"]
    html = client.get("/games/portal/").content.decode().replace("\xa0", " ")
    assert "Version 1.2" in html and "Processing" in html


def test_search_and_paging(friend: Any) -> None:
    for i in range(30):
        make_game(f"game-{i:02d}", f"Game {i:02d}")
    make_game("other", "Zelda-like")
    client = _client(friend)
    first = client.get("/").content.decode().replace("\xa0", " ")
    assert len(_titles(first)) == 24 and "31 games" in first and 'rel="next"' in first
    second = client.get("/", {"page": 2}).content.decode().replace("\xa0", " ")
    assert _titles(second) == [f"Game {i:02d}" for i in range(24, 30)] + ["Zelda-like"]
    assert _titles(client.get("/", {"page": 99}).content.decode().replace("\xa0", " ")) == _titles(second)  # clamps to the last page
    assert _titles(client.get("/", {"q": "zelda"}).content.decode().replace("\xa0", " ")) == ["Zelda-like"]
    found = client.get("/", {"q": "game 1"}).content.decode().replace("\xa0", " ")
    assert _titles(found) == [f"Game {i:02d}" for i in range(10, 20)]
    assert 'value="game 1"' in found  # the search box keeps the query


def test_sort_by_recently_updated(catalog: dict[str, Any], friend: Any) -> None:
    old = make_game("old-game", "Aardvark")
    make_version(old, "1", days_ago=100)
    titles = _titles(_client(friend).get("/", {"sort": "updated"}).content.decode().replace("\xa0", " "))
    assert titles == ["Portal", "Aardvark", "Coming Soon", "Hidden Gem"]  # never-released games last


def test_game_page(catalog: dict[str, Any], friend: Any) -> None:
    html = _client(friend).get("/games/portal/").content.decode().replace("\xa0", " ")
    assert "<h1 id=\"game-title\">Portal" in html
    assert "Think with portals." in html
    assert 'href="mist://install/portal"' in html
    # versions newest first, each with its full size and what updating to it costs
    assert html.index("Version 1.1") < html.index("Version 1.0")
    assert "Version 1.2" not in html  # processing: friends do not see it
    assert "<strong>48.0 MB update</strong> from 1.0" in html
    assert "4.0 GB" in html and "first version" in html
    assert "Fixes the *cake*." in html and "<p>And more.</p>" in html
    # the latest archive downloads; older versions have one too here
    assert re.search(r'href="/dl/archive/portal/windows/1\.1(\?[^"]*)?"[^>]*download', html)


def test_description_override_wins(catalog: dict[str, Any], friend: Any) -> None:
    Game.objects.filter(slug="portal").update(description_override="Our own words.")
    html = _client(friend).get("/games/portal/").content.decode().replace("\xa0", " ")
    assert "Our own words." in html and "Think with portals." not in html


def test_older_versions_on_request(friend: Any) -> None:
    game = make_game("doom", "Doom")
    v1 = make_version(game, "1.0", days_ago=10)
    v2 = make_version(game, "1.1", parent=v1, update_size=5 * MB)
    make_version(game, "1.2", parent=v2, update_size=7 * MB, archive_size=GB)
    Job.objects.create(kind=Job.Kind.RECONSTRUCT, key=f"archive:{v2.pk}", task="x", game=game, version=v2)
    html = _client(friend).get("/games/doom/").content.decode().replace("\xa0", " ")
    assert 'action="/games/doom/versions/1.0/archive"' in html  # no archive yet: a request form
    assert "Being prepared" in html  # 1.1 has a running job
    assert 'action="/games/doom/versions/1.1/archive"' not in html


def test_archive_request_is_post_only(catalog: dict[str, Any], friend: Any) -> None:
    client = _client(friend)
    assert client.get("/games/portal/versions/1.0/archive").status_code == 405
    assert client.post("/games/portal/versions/1.2/archive").status_code == 404  # not visible yet
    assert client.post("/games/portal/versions/9.9/archive").status_code == 404


def test_header_image_served_with_caching_headers(steam: SteamFake, friend: Any, outsider: Any) -> None:
    game = make_game("portal", "Portal", steam_header_url=steam.image("h.png", make_png(16, 8)))
    assert refresh_header_image(game=game) == ""
    client = _client(friend)
    html = client.get("/").content.decode().replace("\xa0", " ")
    url = reverse("store:header_image", kwargs={"slug": "portal", "name": game.header_image_cached_name})
    assert f'src="{url}"' in html
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert b"".join(response.streaming_content) == make_png(16, 8)
    assert "max-age=31536000" in response["Cache-Control"] and "private" in response["Cache-Control"]
    assert client.get(url, HTTP_IF_NONE_MATCH=response["ETag"]).status_code == 304
    assert client.get(url.replace(".png", ".jpg")).status_code == 404
    # a private game's header is as invisible as the game
    Game.objects.filter(pk=game.pk).update(is_private=True)
    assert _client(outsider).get(url).status_code == 404


def test_header_falls_back_to_source_then_placeholder(friend: Any) -> None:
    make_game("remote", "Remote", steam_header_url="https://cdn.example/remote.jpg")
    make_game("plain", "Plain")
    html = _client(friend).get("/").content.decode().replace("\xa0", " ")
    assert 'src="https://cdn.example/remote.jpg"' in html
    assert 'class="card__placeholder"' in html


def test_missing_cached_file_falls_back(friend: Any, mist_roots: dict[str, Path]) -> None:
    make_game("g", "G", header_image_cached="catalog/headers/gone.png", steam_header_url="https://cdn.example/g.jpg")
    html = _client(friend).get("/").content.decode().replace("\xa0", " ")
    assert 'src="https://cdn.example/g.jpg"' in html


def test_request_an_older_version(friend: Any, django_capture_on_commit_callbacks: Any) -> None:
    game = make_game("doom", "Doom")
    v1 = make_version(game, "1.0", days_ago=10)
    make_version(game, "1.1", parent=v1, update_size=5 * MB, archive_size=GB)
    client = _client(friend)
    # when the friend asks for 1.0, which has no archive
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/games/doom/versions/1.0/archive", follow=True)
    # then the worker gets a job, and the page says it is being prepared
    job = Job.objects.get(key=f"archive:{v1.pk}")
    assert job.kind == Job.Kind.ARCHIVE and job.status == Job.Status.QUEUED and job.requested_by == friend
    assert response.redirect_chain[-1][0] == "/games/doom/?platform=windows#v-1.0"
    html = response.content.decode()
    assert "Version 1.0 is being prepared." in html and "Being prepared" in html
    assert 'action="/games/doom/versions/1.0/archive"' not in html
    # asking again does not queue a second job
    client.post("/games/doom/versions/1.0/archive")
    assert Job.objects.filter(kind=Job.Kind.ARCHIVE).count() == 1
    # a version whose archive is intact is simply ready
    ready = client.post("/games/doom/versions/1.1/archive", follow=True).content.decode()
    assert "Version 1.1 is ready to download." in ready


def test_archive_row_without_its_file_is_not_offered(friend: Any, mist_roots: dict[str, Path]) -> None:
    game = make_game("doom", "Doom")
    version = make_version(game, "1.0", archive_size=GB)
    (mist_roots["cache"] / version.archive.relpath).unlink()  # evicted behind the row's back
    html = _client(friend).get("/games/doom/").content.decode()
    assert "/dl/archive/doom/1.0" not in html
    assert 'action="/games/doom/versions/1.0/archive"' in html  # the friend can ask for it again


def test_store_shows_the_platforms_of_a_game_and_lists_each_platforms_versions(friend: Any) -> None:
    # given: 1.0 and 1.1 for Windows, only 1.1 for Linux (with its own size)
    game = make_game("crossplay", "Crossplay")
    w1 = make_version(game, "1.0", days_ago=5)
    make_version(game, "1.1", parent=w1, days_ago=2, update_size=30 * MB)
    make_version(game, "1.1", platform="linux", total_size=7 * GB, days_ago=1)
    client = _client(friend)
    # then: the library card names both platforms
    library = client.get("/").content.decode()
    assert re.search(r'data-testid="card-platforms">.*Windows.*Linux', library)
    # the game page offers both, lists the default platform's versions, and switches with ?platform=
    page = client.get(reverse("store:game", kwargs={"slug": "crossplay"})).content.decode().replace("\xa0", " ")
    assert 'data-platform="windows"' in page and 'data-platform="linux"' in page
    assert 'id="v-1.0"' in page and "12.0 GB" in page
    linux = client.get(reverse("store:game", kwargs={"slug": "crossplay"}) + "?platform=linux").content.decode()
    linux = linux.replace("\xa0", " ")
    assert 'id="v-1.0"' not in linux and 'id="v-1.1"' in linux and "7.0 GB" in linux
    assert 'name="platform" value="linux"' in linux
