"""The admin portal: Steam on save (every failure mode saves the game), actions, grants, dashboard."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone
from django_q.models import OrmQ, Task

from builds.models import CacheEntry, Job, Version
from catalog.models import Game, GameGrant
from catalog.tests.steam_fake import SteamFake, make_png
from mist.store.tests.factories import GB, MB, make_game, make_version

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/catalog/game/add/"


@pytest.fixture
def admin_client(admin_user: Any) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def _game_form(**overrides: Any) -> dict[str, Any]:
    data = {
        "title": "Portal", "slug": "portal", "app_id": "10", "description_override": "",
        "header_image_override": "",
        "versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0",
        "grants-TOTAL_FORMS": "0", "grants-INITIAL_FORMS": "0",
        "launch_options-TOTAL_FORMS": "0", "launch_options-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def _messages(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_add_game_fetches_steam_and_caches_header(admin_client: Client, steam: SteamFake) -> None:
    steam.app_ok(10, name="Portal", description="Think with portals.", header=steam.image("p.png", make_png(8, 8)))
    response = admin_client.post(ADD_URL, _game_form())
    assert response.status_code == 302, response.content.decode()[:3000]
    game = Game.objects.get(slug="portal")
    assert game.steam_name == "Portal" and game.description == "Think with portals."
    assert game.header_image_cached
    assert any("Fetched “Portal” from Steam" in m for m in _messages(response))


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        (lambda s: [s.server_error_reply()], "HTTP 500"),
        (lambda s: [s.not_found_reply()], "HTTP 404"),
        (lambda s: [s.failure_reply(10)], "success: false"),
        (lambda s: [s.bad_json_reply()], "not valid JSON"),
        (lambda s: [s.ok_reply(10, name="Portal", delay=3)], "timed out"),
    ],
    ids=["500", "404", "success-false", "bad-json", "slow"],
)
def test_steam_failure_never_breaks_saving(
    admin_client: Client, steam: SteamFake, replies: Any, expected: str
) -> None:
    steam.script(10, *replies(steam))
    response = admin_client.post(ADD_URL, _game_form(), follow=True)
    assert response.status_code == 200
    game = Game.objects.get(slug="portal")
    assert expected in game.steam_error
    html = response.content.decode()
    assert "was saved, but" in html and expected in html  # the admin sees why
    assert "Resync from Steam" in html


def test_steam_down_entirely(admin_client: Client) -> None:
    # STEAM_APPDETAILS_URL points at the discard port in tests: nothing answers there
    response = admin_client.post(ADD_URL, _game_form(), follow=True)
    assert Game.objects.filter(slug="portal").exists()
    assert "could not be reached" in response.content.decode()


def test_edit_without_app_id_change_does_not_call_steam(admin_client: Client, steam: SteamFake) -> None:
    steam.app_ok(10, name="Portal", description="Fetched")
    admin_client.post(ADD_URL, _game_form())
    game = Game.objects.get(slug="portal")
    url = f"/admin/catalog/game/{game.pk}/change/"
    admin_client.post(url, _game_form(description_override="Ours"))
    assert len(steam.requests_for(10)) == 1
    game.refresh_from_db()
    assert game.description == "Ours" and game.steam_description == "Fetched"
    steam.app_ok(20, name="Portal 2")
    admin_client.post(url, _game_form(app_id="20"))
    game.refresh_from_db()
    assert game.steam_name == "Portal 2" and len(steam.requests_for(20)) == 1


def test_header_override_is_cached_on_save(admin_client: Client, steam: SteamFake) -> None:
    own = steam.image("own.png", make_png(12, 6))
    admin_client.post(ADD_URL, _game_form(app_id="", header_image_override=own))
    game = Game.objects.get(slug="portal")
    assert game.header_image_cached_from == own and game.header_image_cached.endswith(".png")


def test_resync_action(admin_client: Client, steam: SteamFake) -> None:
    a = make_game("a", "A", app_id=1)
    b = make_game("b", "B", app_id=2)
    steam.app_ok(1, name="Alpha")
    steam.script(2, steam.not_found_reply())
    response = admin_client.post(
        "/admin/catalog/game/", {"action": "resync_from_steam", "_selected_action": [a.pk, b.pk]}, follow=True
    )
    html = response.content.decode()
    assert "A: Fetched “Alpha” from Steam" in html and "B: Steam appdetails for app 2 answered HTTP 404" in html
    assert Game.objects.get(pk=a.pk).steam_name == "Alpha"


def test_grant_access_action_with_intermediate_page(
    admin_client: Client, admin_user: Any, friend: Any, outsider: Any
) -> None:
    secret = make_game("secret", "Secret", is_private=True)
    other = make_game("other", "Other", is_private=True)
    selected = {"action": "grant_access", "_selected_action": [secret.pk, other.pk]}
    page = admin_client.post("/admin/catalog/game/", selected)
    html = page.content.decode()
    assert page.status_code == 200 and "Choose who may see these 2 games" in html
    assert f'value="{friend.pk}"' in html and "outsider" in html
    response = admin_client.post("/admin/catalog/game/", {**selected, "apply": "1", "users": [friend.pk]}, follow=True)
    assert "2 new grant(s): friend may now see 2 game(s)." in response.content.decode()
    assert set(GameGrant.objects.values_list("game__slug", "user__username", "granted_by__username")) == {
        ("secret", "friend", "admin"), ("other", "friend", "admin")
    }
    # no user chosen: the page comes back with an error and nothing changes
    again = admin_client.post("/admin/catalog/game/", {**selected, "apply": "1"})
    assert again.status_code == 200 and "This field is required" in again.content.decode()
    assert GameGrant.objects.count() == 2


def test_game_change_page_shows_versions_with_sizes(admin_client: Client) -> None:
    game = make_game("doom", "Doom")
    v1 = make_version(game, "1.0", total_size=2 * GB, archive_size=GB)
    make_version(game, "1.1", parent=v1, update_size=48 * MB)
    failed = make_version(game, "1.2", seq=3, status=Version.Status.FAILED)
    Version.objects.filter(pk=failed.pk).update(error="hdiff ran out of memory")
    html = admin_client.get(f"/admin/catalog/game/{game.pk}/change/").content.decode().replace("\xa0", " ")
    assert "2.0 GB" in html and "48.0 MB from 1.0" in html and "1.0 GB" in html
    assert "hdiff ran out of memory" in html and "failed" in html.lower()


def test_version_actions(admin_client: Client, django_capture_on_commit_callbacks: Any) -> None:
    game = make_game("doom", "Doom")
    v1 = make_version(game, "1.0")
    v2 = make_version(game, "1.1", parent=v1, update_size=MB)
    admin_client.post("/admin/builds/version/", {"action": "unpublish", "_selected_action": [v2.pk]})
    assert not Version.objects.get(pk=v2.pk).published
    admin_client.post("/admin/builds/version/", {"action": "publish", "_selected_action": [v2.pk]})
    assert Version.objects.get(pk=v2.pk).published
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/builds/version/", {"action": "regenerate_delta", "_selected_action": [v1.pk, v2.pk]}, follow=True
        )
    html = response.content.decode()
    assert "is the base version" in html and "delta queued" in html
    job = Job.objects.get(kind=Job.Kind.DIRECT_DELTA)
    assert job.key == f"direct:{v1.pk}:{v2.pk}" and job.requested_by is not None
    assert OrmQ.objects.count() == 1  # really queued for the worker


def test_dashboard(admin_client: Client, friend: Any) -> None:
    game = make_game("doom", "Doom")
    make_version(game, "1.0", total_size=3 * GB)
    Job.objects.create(kind=Job.Kind.ARCHIVE, key="archive:x", task="t", status=Job.Status.FAILED,
                       error="disk full", finished_at=timezone.now())
    Job.objects.create(kind=Job.Kind.ARCHIVE, key="archive:old", task="t", status=Job.Status.FAILED,
                       error="long ago", finished_at=timezone.now() - timezone.timedelta(days=3))
    CacheEntry.objects.create(key="a", relpath="archives/a", size=5 * MB)
    CacheEntry.objects.create(key="b", relpath="archives/b", size=7 * MB, pinned=True)
    Task.objects.create(id="f" * 32, name="boom", func="deltas.tasks.make_direct_delta", started=timezone.now(),
                        stopped=timezone.now(), success=False, result="Traceback: kaboom")
    index = admin_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in index
    html = admin_client.get("/admin/dashboard/").content.decode().replace("\xa0", " ")
    assert "Storage (MIST_STORAGE_ROOT)" in html and "Cache (MIST_CACHE_ROOT)" in html and "% used" in html
    assert "2 entries, 12.0 MB" in html and "7.0 MB pinned" in html
    assert re.search(r'data-testid="failed-jobs">1<', html)
    assert re.search(r'data-testid="task-failures">1<', html)
    assert re.search(r'data-testid="queue-length">0<', html)
    assert "disk full" in html and "long ago" not in html and "kaboom" in html
    assert "Doom 1.0" in html and "3.0 GB" in html
    # friends are sent to the admin login
    friend_client = Client()
    friend_client.force_login(friend)
    assert friend_client.get("/admin/dashboard/").status_code == 302


def test_rebuild_archive_actions(admin_client: Client, django_capture_on_commit_callbacks: Any) -> None:
    game = make_game("doom", "Doom")
    v1 = make_version(game, "1.0", archive_size=GB)
    v2 = make_version(game, "1.1", parent=v1, update_size=MB)
    pending = make_version(game, "1.2", parent=v2, status=Version.Status.PENDING)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/builds/version/", {"action": "rebuild_archive", "_selected_action": [v1.pk, v2.pk, pending.pk]},
            follow=True,
        )
    html = response.content.decode().replace("\xa0", " ")
    assert "1.0 (windows): the archive is already built and intact (1.0 GB)." in html
    assert "1.1 (windows): archive build queued" in html
    assert "1.2 (windows): not ready, no archive to build." in html
    assert list(Job.objects.filter(kind=Job.Kind.ARCHIVE).values_list("version_id", flat=True)) == [v2.pk]
    # the game-level action targets the latest ready version
    admin_client.post("/admin/catalog/game/", {"action": "rebuild_latest_archive", "_selected_action": [game.pk]})
    assert Job.objects.filter(kind=Job.Kind.ARCHIVE).count() == 1  # 1.1 already has its job
