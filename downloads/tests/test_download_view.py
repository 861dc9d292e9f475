"""The /dl/ view through Django's test client: ranges, HEAD, headers, access rules, bad input."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import Client, RequestFactory
from django.utils import timezone

from accounts.authentication import token_pair_for
from builds import storage
from builds.models import CacheEntry, Version
from catalog.models import Game
from downloads.models import DownloadRecord, FullArchive
from downloads.tests.conftest import (
    grant,
    make_direct_delta,
    make_game,
    make_indirect_job,
    make_version,
    random_bytes,
    sha256,
)
from downloads.views import download

pytestmark = pytest.mark.django_db


def bearer(user: Any) -> dict[str, Any]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token_pair_for(user)['access']}"}


def body(response: Any) -> bytes:
    """The whole body; the test client closes a streaming response once it is consumed."""
    return b"".join(response.streaming_content) if response.streaming else response.content


def close_early(response: Any) -> None:
    """Close a response the way a WSGI server does when the client goes away, keeping the test's
    database connection (request_finished would otherwise close it mid-transaction)."""
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def archive_bytes(archive: FullArchive) -> bytes:
    return (storage.cache_root() / archive.relpath).read_bytes()


ARCHIVE_URL = "/dl/archive/game/1.0"


# --- Whole downloads and headers -----------------------------------------------------------------


def test_archive_download_has_every_header_and_the_exact_bytes(client: Client, friend: Any, archive: FullArchive) -> None:
    response = client.get(ARCHIVE_URL, **bearer(friend))
    data = body(response)
    assert response.status_code == 200
    assert data == archive_bytes(archive)
    assert sha256(data) == archive.sha256
    assert response["Content-Length"] == str(archive.size)
    assert response["Accept-Ranges"] == "bytes"
    assert response["ETag"] == f'"{archive.sha256}"'
    assert response["X-Mist-SHA256"] == archive.sha256
    assert response["Content-Type"] == "application/zstd"
    assert response["Content-Disposition"] == 'attachment; filename="game-1.0-windows.tar.zst"'
    assert "Content-Range" not in response
    record = DownloadRecord.objects.get()
    assert (record.user, record.kind, record.artifact, record.game_slug) == (friend, "archive", "archive:game/1.0", "game")
    assert (record.size, record.range_start, record.bytes_requested, record.bytes_served) == (
        archive.size, 0, archive.size, archive.size)
    assert record.completed and record.finished_at is not None and not record.via_accel


def test_serving_touches_the_cache_entry(client: Client, friend: Any, archive: FullArchive) -> None:
    long_ago = timezone.now() - timedelta(days=3)
    CacheEntry.objects.filter(relpath=archive.relpath).update(last_used_at=long_ago)
    body(client.get(ARCHIVE_URL, **bearer(friend)))
    assert CacheEntry.objects.get(relpath=archive.relpath).last_used_at > long_ago + timedelta(days=2)


def test_session_login_works_for_the_browser(client: Client, friend: Any, archive: FullArchive) -> None:
    client.force_login(friend)
    assert client.get(ARCHIVE_URL).status_code == 200


def test_anonymous_is_401_with_json(client: Client, archive: FullArchive) -> None:
    response = client.get(ARCHIVE_URL)
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided."}
    assert DownloadRecord.objects.count() == 0


def test_a_bad_token_is_401(client: Client, archive: FullArchive) -> None:
    response = client.get(ARCHIVE_URL, HTTP_AUTHORIZATION="Bearer not.a.token")
    assert response.status_code == 401
    assert "detail" in response.json()


def test_a_deactivated_users_token_stops_working(client: Client, friend: Any, archive: FullArchive) -> None:
    headers = bearer(friend)
    friend.is_active = False
    friend.save()
    assert client.get(ARCHIVE_URL, **headers).status_code == 401


def test_post_is_405(client: Client, friend: Any, archive: FullArchive) -> None:
    response = client.post(ARCHIVE_URL, **bearer(friend))
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


# --- Ranges, one edge case at a time ---------------------------------------------------------------


@pytest.fixture
def data(archive: FullArchive) -> bytes:
    return archive_bytes(archive)


def get_range(client: Client, user: Any, header: str, **extra: str) -> Any:
    return client.get(ARCHIVE_URL, HTTP_RANGE=header, **bearer(user), **extra)


def test_range_first_byte(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, "bytes=0-0")
    assert r.status_code == 206
    assert body(r) == data[:1]
    assert r["Content-Range"] == f"bytes 0-0/{len(data)}"
    assert r["Content-Length"] == "1"


def test_range_suffix(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, "bytes=-5")
    assert r.status_code == 206
    assert body(r) == data[-5:]
    assert r["Content-Range"] == f"bytes {len(data) - 5}-{len(data) - 1}/{len(data)}"


def test_range_open_ended(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, "bytes=5-")
    assert r.status_code == 206
    assert body(r) == data[5:]
    assert r["Content-Length"] == str(len(data) - 5)
    record = DownloadRecord.objects.get()
    assert (record.range_start, record.bytes_requested, record.bytes_served, record.completed) == (
        5, len(data) - 5, len(data) - 5, True)


def test_range_backwards_is_ignored(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, "bytes=10-5")
    assert r.status_code == 200
    assert body(r) == data


def test_range_at_size_is_416(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, f"bytes={len(data)}-")
    assert r.status_code == 416
    assert r["Content-Range"] == f"bytes */{len(data)}"
    assert "not satisfiable" in r.json()["detail"]
    assert DownloadRecord.objects.count() == 0


def test_range_past_the_end_is_clamped(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, f"bytes=0-{len(data) + 100}")
    assert r.status_code == 206
    assert body(r) == data
    assert r["Content-Range"] == f"bytes 0-{len(data) - 1}/{len(data)}"


def test_range_garbage_is_ignored(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, "bytes=a-b")
    assert r.status_code == 200
    assert body(r) == data


def test_range_other_unit_is_ignored(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, "items=0-5")
    assert r.status_code == 200
    assert body(r) == data


def test_multiple_ranges_get_the_whole_body(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, "bytes=0-1,5-9")
    assert r.status_code == 200
    assert body(r) == data
    assert "multipart" not in r["Content-Type"]


def test_if_range_match_gives_the_range(client: Client, friend: Any, archive: FullArchive, data: bytes) -> None:
    r = get_range(client, friend, "bytes=100-", HTTP_IF_RANGE=f'"{archive.sha256}"')
    assert r.status_code == 206
    assert body(r) == data[100:]


def test_if_range_mismatch_gives_the_whole_body(client: Client, friend: Any, data: bytes) -> None:
    r = get_range(client, friend, "bytes=100-", HTTP_IF_RANGE='"' + "0" * 64 + '"')
    assert r.status_code == 200
    assert body(r) == data


def test_head_has_the_headers_and_no_body(client: Client, friend: Any, archive: FullArchive) -> None:
    r = client.head(ARCHIVE_URL, **bearer(friend))
    assert r.status_code == 200
    assert r.content == b""
    assert r["Content-Length"] == str(archive.size)
    assert r["X-Mist-SHA256"] == archive.sha256
    assert r["Accept-Ranges"] == "bytes"
    assert DownloadRecord.objects.count() == 0  # nothing was downloaded


def test_head_with_a_range(client: Client, friend: Any, archive: FullArchive) -> None:
    r = client.head(ARCHIVE_URL, HTTP_RANGE="bytes=10-19", **bearer(friend))
    assert r.status_code == 206
    assert r["Content-Length"] == "10"
    assert r["Content-Range"] == f"bytes 10-19/{archive.size}"


def test_a_download_closed_early_is_recorded_as_incomplete(client: Client, friend: Any, version: Version) -> None:
    # An artifact larger than one streaming block, so the body comes in several pieces.
    big = random_bytes(1_500_000, seed=3)
    make_version(version.game, "2.0", {"big.bin": big})
    # The view itself, as a WSGI server calls it (the test client would close the response its own way).
    request = RequestFactory().get("/dl/file/game/2.0/big.bin", **bearer(friend))
    response = download(request, kind="file", slug="game", version="2.0", path="big.bin")
    first = next(iter(response.streaming_content))
    close_early(response)  # the client went away
    record = DownloadRecord.objects.get()
    assert 0 < record.bytes_served == len(first) < len(big)
    assert record.bytes_requested == len(big)
    assert not record.completed


# --- Every artifact kind ---------------------------------------------------------------------------


def test_direct_bundle(client: Client, friend: Any, version: Version) -> None:
    v2 = make_version(version.game, "1.1", {"readme.txt": b"new"})
    payload = random_bytes(5000, seed=1)
    delta = make_direct_delta(version, v2, payload)
    r = client.get("/dl/direct/game/1.0__1.1", HTTP_RANGE="bytes=1000-", **bearer(friend))
    assert r.status_code == 206
    assert body(r) == payload[1000:]
    assert r["X-Mist-SHA256"] == delta.bundle_sha256
    assert r["Content-Disposition"] == 'attachment; filename="game-1.0__1.1-windows.tar.zst"'
    assert DownloadRecord.objects.get().artifact == "direct:game/1.0__1.1"


@pytest.mark.parametrize("pair", ["1.0__9.9", "1.0", "__1.1", "1.0__", "1.1__1.0"])
def test_direct_bundle_that_does_not_exist(client: Client, friend: Any, version: Version, pair: str) -> None:
    v2 = make_version(version.game, "1.1", {"readme.txt": b"new"})
    make_direct_delta(version, v2, b"x" * 10)
    assert client.get(f"/dl/direct/game/{pair}", **bearer(friend)).status_code == 404


def test_direct_bundle_to_an_unpublished_version_is_404_for_friends(
    client: Client, friend: Any, admin_user: Any, version: Version
) -> None:
    v2 = make_version(version.game, "1.1", {"readme.txt": b"new"}, published=False)
    make_direct_delta(version, v2, b"x" * 10)
    assert client.get("/dl/direct/game/1.0__1.1", **bearer(friend)).status_code == 404
    assert client.get("/dl/direct/game/1.0__1.1", **bearer(admin_user)).status_code == 200


def test_indirect_bundle(client: Client, friend: Any, version: Version) -> None:
    payload = random_bytes(3000, seed=2)
    job = make_indirect_job(version, friend, payload)
    r = client.get(f"/dl/indirect/{job.pk}", **bearer(friend))
    assert r.status_code == 200
    assert body(r) == payload
    assert r["X-Mist-SHA256"] == sha256(payload)
    assert r["Content-Disposition"].startswith('attachment; filename="game-1.0-update-')


def test_indirect_bundle_not_done_is_404(client: Client, friend: Any, version: Version) -> None:
    job = make_indirect_job(version, friend, b"x", status="running")
    r = client.get(f"/dl/indirect/{job.pk}", **bearer(friend))
    assert r.status_code == 404
    assert "not ready" in r.json()["detail"]


def test_file_of_the_latest_version(client: Client, friend: Any, version: Version, files: dict[str, bytes]) -> None:
    r = client.get("/dl/file/game/1.0/data/level1.dat", HTTP_RANGE="bytes=-10", **bearer(friend))
    assert r.status_code == 206
    assert body(r) == files["data/level1.dat"][-10:]
    assert r["X-Mist-SHA256"] == sha256(files["data/level1.dat"])
    assert r["Content-Type"] == "application/octet-stream"
    assert r["Content-Disposition"] == 'attachment; filename="level1.dat"'


def test_file_of_an_older_version_from_the_cache(client: Client, friend: Any, game: Game) -> None:
    old = make_version(game, "0.9", {"a.txt": b"old bytes"}, where="cache")
    make_version(game, "1.0", {"a.txt": b"new bytes"})
    r = client.get("/dl/file/game/0.9/a.txt", **bearer(friend))
    assert r.status_code == 200
    assert body(r) == b"old bytes"
    assert r["X-Mist-SHA256"] == sha256(b"old bytes")
    assert CacheEntry.objects.filter(key=f"version:{old.pk}").exists()


def test_unicode_file_name_gets_rfc5987(client: Client, friend: Any, game: Game) -> None:
    make_version(game, "1.0", {"Données/été.txt": b"oui"})
    r = client.get("/dl/file/game/1.0/Donn%C3%A9es/%C3%A9t%C3%A9.txt", **bearer(friend))
    assert r.status_code == 200
    assert body(r) == b"oui"
    assert r["Content-Disposition"] == "attachment; filename=\"ete.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"


def test_file_not_in_the_version_is_404(client: Client, friend: Any, version: Version) -> None:
    assert client.get("/dl/file/game/1.0/nope.txt", **bearer(friend)).status_code == 404


# --- Access rules ---------------------------------------------------------------------------------


def test_private_game_is_404_without_a_grant(client: Client, friend: Any, outsider: Any) -> None:
    game = make_game("secret", private=True)
    make_version(game, "1.0", {"a.txt": b"a"})
    grant(friend, game)
    assert client.get("/dl/file/secret/1.0/a.txt", **bearer(outsider)).status_code == 404
    r = client.get("/dl/file/secret/1.0/a.txt", **bearer(friend))
    assert r.status_code == 200
    assert body(r) == b"a"


def test_missing_game_and_invisible_game_answer_alike(client: Client, outsider: Any) -> None:
    game = make_game("secret", private=True)
    make_version(game, "1.0", {"a.txt": b"a"})
    hidden = client.get("/dl/file/secret/1.0/a.txt", **bearer(outsider))
    absent = client.get("/dl/file/nosuchgame/1.0/a.txt", **bearer(outsider))
    assert hidden.status_code == absent.status_code == 404
    assert hidden.json() == absent.json()


@pytest.mark.parametrize(
    ("status", "published"),
    [(Version.Status.READY, False), (Version.Status.PROCESSING, True), (Version.Status.FAILED, True)],
)
def test_unready_or_unpublished_version_is_404_for_friends_only(
    client: Client, friend: Any, admin_user: Any, game: Game, status: str, published: bool
) -> None:
    make_version(game, "1.0", {"a.txt": b"a"}, status=status, published=published)
    assert client.get("/dl/file/game/1.0/a.txt", **bearer(friend)).status_code == 404
    assert client.get("/dl/file/game/1.0/a.txt", **bearer(admin_user)).status_code == 200


def test_archive_not_built_is_404(client: Client, friend: Any, version: Version) -> None:
    r = client.get(ARCHIVE_URL, **bearer(friend))
    assert r.status_code == 404
    assert "not built" in r.json()["detail"]


# --- Bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../../../../etc/passwd",
        "data/../readme.txt",
        "%2e%2e/%2e%2e/etc/passwd",
        "data/%2E%2E/%2E%2E/x",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "data\\..\\readme.txt",
        "data%5c..%5creadme.txt",
        "C:/Windows/win.ini",
        "data/./level1.dat",
        "a%00b",
    ],
)
def test_path_traversal_is_refused(client: Client, friend: Any, version: Version, path: str) -> None:
    r = client.get(f"/dl/file/game/1.0/{path}", **bearer(friend))
    assert r.status_code in (400, 404)
    assert "detail" in r.json()
    assert DownloadRecord.objects.count() == 0


def test_artifact_deleted_from_disk_is_a_clear_404(
    client: Client, friend: Any, archive: FullArchive, caplog: pytest.LogCaptureFixture
) -> None:
    (storage.cache_root() / archive.relpath).unlink()
    with caplog.at_level(logging.ERROR, logger="mist.downloads"):
        r = client.get(ARCHIVE_URL, **bearer(friend))
    assert r.status_code == 404
    assert r.json() == {"detail": "artifact missing on the server"}
    assert any("artifact missing" in rec.getMessage() and rec.levelno == logging.ERROR for rec in caplog.records)


def test_artifact_of_the_wrong_size_on_disk_is_not_served(client: Client, friend: Any, archive: FullArchive) -> None:
    (storage.cache_root() / archive.relpath).write_bytes(b"truncated")
    r = client.get(ARCHIVE_URL, HTTP_RANGE="bytes=0-3", **bearer(friend))
    assert r.status_code == 404
    assert r.json() == {"detail": "artifact missing on the server"}


def test_direct_bundle_missing_on_disk(client: Client, friend: Any, version: Version) -> None:
    v2 = make_version(version.game, "1.1", {"readme.txt": b"new"})
    make_direct_delta(version, v2, b"payload")
    storage.delta_bundle_path("game", "windows", "1.0", "1.1").unlink()
    r = client.get("/dl/direct/game/1.0__1.1", **bearer(friend))
    assert (r.status_code, r.json()) == (404, {"detail": "artifact missing on the server"})


def test_indirect_job_with_a_hostile_result_path(client: Client, friend: Any, version: Version) -> None:
    job = make_indirect_job(version, friend, b"payload")
    job.result = {**job.result, "path": "../../etc/passwd"}
    job.save()
    r = client.get(f"/dl/indirect/{job.pk}", **bearer(friend))
    assert (r.status_code, r.json()) == (404, {"detail": "artifact missing on the server"})


# --- Production mode: nginx sends the bytes -------------------------------------------------------


def test_accel_redirect_for_a_cache_artifact(client: Client, friend: Any, archive: FullArchive, settings: Any) -> None:
    settings.MIST_ACCEL_REDIRECT = True
    r = client.get(ARCHIVE_URL, HTTP_RANGE="bytes=10-", **bearer(friend))
    assert r.status_code == 200
    assert r.content == b""
    assert r["X-Accel-Redirect"] == "/_protected/cache/archives/game/windows/1.0.tar.zst"
    assert r["X-Accel-Buffering"] == "no"
    assert r["X-Mist-SHA256"] == archive.sha256
    assert r["ETag"] == f'"{archive.sha256}"'
    assert r["Content-Disposition"] == 'attachment; filename="game-1.0-windows.tar.zst"'
    record = DownloadRecord.objects.get()
    assert record.via_accel
    assert (record.range_start, record.bytes_requested, record.bytes_served) == (10, archive.size - 10, archive.size - 10)
    assert record.completed


def test_accel_redirect_for_a_storage_file_is_url_encoded(
    client: Client, friend: Any, game: Game, settings: Any
) -> None:
    settings.MIST_ACCEL_REDIRECT = True
    make_version(game, "1.0", {"My Docs/été #1.txt": b"x"})
    r = client.get("/dl/file/game/1.0/My%20Docs/%C3%A9t%C3%A9%20%231.txt", **bearer(friend))
    assert r.status_code == 200
    assert r["X-Accel-Redirect"] == "/_protected/storage/games/game/windows/trees/1.0/My%20Docs/%C3%A9t%C3%A9%20%231.txt"


def test_accel_mode_still_answers_416_and_missing_itself(
    client: Client, friend: Any, archive: FullArchive, settings: Any
) -> None:
    settings.MIST_ACCEL_REDIRECT = True
    assert get_range(client, friend, f"bytes={archive.size + 1}-").status_code == 416
    Path(storage.cache_root() / archive.relpath).unlink()
    r = client.get(ARCHIVE_URL, **bearer(friend))
    assert (r.status_code, r.json()) == (404, {"detail": "artifact missing on the server"})
    assert "X-Accel-Redirect" not in r


@pytest.mark.parametrize(
    "url",
    ["/dl/archive/game/%2e%2e", "/dl/archive/game/..", "/dl/direct/game/..__..", "/dl/direct/game/%2e%2e__1.0",
     "/dl/file/game/%2e%2e/readme.txt", "/dl/indirect/..", "/dl/archive/%2e%2e/1.0"],
)
def test_dots_in_other_parameters_find_nothing(client: Client, friend: Any, archive: FullArchive, url: str) -> None:
    r = client.get(url, **bearer(friend))
    assert r.status_code == 404
    assert DownloadRecord.objects.count() == 0
