"""Signed download URLs: cookie-free links bound to one user and one artifact, that expire."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client

from catalog.models import GameGrant
from downloads import services
from downloads.models import DownloadRecord, FullArchive
from downloads.tests.conftest import grant, make_game, make_version

pytestmark = pytest.mark.django_db


def split(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


def with_params(path: str, params: dict[str, str]) -> str:
    return f"{path}?{urlencode(params)}"


def test_signed_url_shape(friend: Any, archive: FullArchive) -> None:
    url = services.signed_download_url(user=friend, kind="archive", slug="game", version="1.0", ttl=60)
    path, params = split(url)
    assert path == "/dl/archive/game/windows/1.0"
    assert set(params) == {"u", "exp", "sig"}
    assert params["u"] == str(friend.pk)


def test_signed_url_downloads_without_credentials_and_records_the_user(
    client: Client, friend: Any, archive: FullArchive
) -> None:
    url = services.signed_download_url(user=friend, kind="archive", slug="game", version="1.0")
    r = client.get(url, HTTP_RANGE="bytes=0-9")
    assert r.status_code == 206
    assert len(b"".join(r.streaming_content)) == 10
    assert DownloadRecord.objects.get().user == friend


def test_public_url_setting_makes_it_absolute(friend: Any, archive: FullArchive, settings: Any) -> None:
    settings.MIST_PUBLIC_URL = "https://store.example.org/"
    url = services.signed_download_url(user=friend, kind="archive", slug="game", version="1.0")
    assert url.startswith("https://store.example.org/dl/archive/game/windows/1.0?u=")


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"sig": "0" * 64}, "invalid download link signature"),
        ({"exp": "99999999999"}, "invalid download link signature"),  # extended by hand
        ({"u": "999999"}, "invalid download link signature"),  # someone else's link
        ({"u": "abc"}, "malformed download link: u and exp must be numbers"),
        ({"exp": "-5"}, "malformed download link: u and exp must be numbers"),
        ({"exp": "\u0661\u0662"}, "malformed download link: u and exp must be numbers"),
    ],
)
def test_tampered_links_are_403(client: Client, friend: Any, archive: FullArchive, change: dict[str, str],
                                detail: str) -> None:
    path, params = split(services.signed_download_url(user=friend, kind="archive", slug="game", version="1.0"))
    r = client.get(with_params(path, {**params, **change}))
    assert r.status_code == 403
    assert r.json() == {"detail": detail}
    assert DownloadRecord.objects.count() == 0


def test_missing_parameters_are_403(client: Client, friend: Any, archive: FullArchive) -> None:
    path, params = split(services.signed_download_url(user=friend, kind="archive", slug="game", version="1.0"))
    r = client.get(with_params(path, {"sig": params["sig"]}))
    assert r.status_code == 403


def test_expired_link_is_403(client: Client, friend: Any, archive: FullArchive) -> None:
    url = services.signed_download_url(user=friend, kind="archive", slug="game", version="1.0", ttl=-1)
    r = client.get(url)
    assert (r.status_code, r.json()) == (403, {"detail": "download link expired"})


def test_link_is_bound_to_its_artifact(client: Client, friend: Any, version: Any, archive: FullArchive) -> None:
    _, params = split(services.signed_download_url(user=friend, kind="archive", slug="game", version="1.0"))
    # The same signature on another artifact of the same game is refused.
    r = client.get(with_params("/dl/file/game/1.0/readme.txt", params))
    assert r.status_code == 403
    file_url = services.signed_download_url(user=friend, kind="file", slug="game", version="1.0", ref="readme.txt")
    assert client.get(file_url).status_code == 200


def test_link_stops_working_when_the_user_is_deactivated(client: Client, friend: Any, archive: FullArchive) -> None:
    url = services.signed_download_url(user=friend, kind="archive", slug="game", version="1.0")
    friend.is_active = False
    friend.save()
    r = client.get(url)
    assert (r.status_code, r.json()) == (403, {"detail": "download link is no longer valid"})


def test_link_stops_working_when_the_user_loses_access(client: Client, friend: Any) -> None:
    secret = make_game("secret", private=True)
    make_version(secret, "1.0", {"a.txt": b"a"})
    grant(friend, secret)
    url = services.signed_download_url(user=friend, kind="file", slug="secret", version="1.0", ref="a.txt")
    assert client.get(url).status_code == 200
    GameGrant.objects.filter(user=friend, game=secret).delete()
    assert client.get(url).status_code == 404


def test_link_for_a_version_that_gets_unpublished(client: Client, friend: Any, version: Any) -> None:
    url = services.signed_download_url(user=friend, kind="file", slug="game", version="1.0", ref="readme.txt")
    version.published = False
    version.save()
    assert client.get(url).status_code == 404


def test_every_kind_can_be_signed(friend: Any, version: Any) -> None:
    assert services.signed_download_url(user=friend, kind="direct", slug="game", ref="1.0__1.1").startswith(
        "/dl/direct/game/windows/1.0__1.1?")
    assert services.signed_download_url(
        user=friend, kind="indirect", ref="6f1c1a44-5a5e-4c4e-9a43-3c1b8f9a2f00"
    ).startswith("/dl/indirect/6f1c1a44-5a5e-4c4e-9a43-3c1b8f9a2f00?")
    assert services.signed_download_url(user=friend, kind="file", slug="game", version="1.0", ref="dir/é.txt").startswith(
        "/dl/file/game/windows/1.0/dir/%C3%A9.txt?")
    with pytest.raises(ValueError, match="unknown artifact kind"):
        services.signed_download_url(user=friend, kind="nope", slug="game")


def test_unicode_file_link_round_trips(client: Client, friend: Any) -> None:
    game = make_game("game")
    make_version(game, "1.0", {"dir/été.txt": b"summer"})
    url = services.signed_download_url(user=friend, kind="file", slug="game", version="1.0", ref="dir/été.txt")
    r = client.get(url)
    assert r.status_code == 200
    assert b"".join(r.streaming_content) == b"summer"
