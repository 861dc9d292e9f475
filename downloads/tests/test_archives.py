"""Full archives: building, pinning, requesting through the API, job status, the cache budget."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from django_q.models import OrmQ
from rest_framework.test import APIClient

from builds import cache, storage
from builds.jobs import JobFailed
from builds.models import CacheEntry, Job, Version
from builds.signals import version_ready
from catalog.models import Game
from conftest import bearer_client
from downloads import services
from downloads.models import FullArchive
from downloads.tests.conftest import grant, make_game, make_indirect_job, make_version, random_bytes, sha256
from mistcore.safetar import extract_tar_zst

pytestmark = pytest.mark.django_db

API = "/api/v1/games/game/versions/{}/archive"


def extracted(archive: FullArchive, dest: Path) -> dict[str, bytes]:
    extract_tar_zst(src=storage.cache_root() / archive.relpath, dest=dest, max_total_bytes=10**9)
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


# --- Building -------------------------------------------------------------------------------------


def test_build_archive_packs_exactly_the_versions_files(version: Version, files: dict[str, bytes], tmp_path: Path) -> None:
    # A stray file in the tree is not part of the version and must not end up in its archive.
    (storage.tree_dir("game", "windows", "1.0") / "stray.log").write_bytes(b"not in the manifest")
    archive = services.build_archive(version=version)
    path = storage.cache_root() / archive.relpath
    assert path == storage.archive_path("game", "windows", "1.0")
    assert (archive.size, archive.sha256) == (path.stat().st_size, sha256(path.read_bytes()))
    assert extracted(archive, tmp_path / "out") == files
    assert (tmp_path / "out" / "bin" / "game.sh").stat().st_mode & 0o100  # executable bit kept


def test_build_archive_is_deterministic(version: Version) -> None:
    first = services.build_archive(version=version)
    second = services.build_archive(version=version)
    assert FullArchive.objects.count() == 1
    assert first.sha256 == second.sha256


def test_latest_archive_is_pinned_and_a_newer_one_takes_the_pin(game: Game) -> None:
    v1 = make_version(game, "1.0", {"a": b"one"})
    a1 = services.build_archive(version=v1)
    assert CacheEntry.objects.get(relpath=a1.relpath).pinned
    v2 = make_version(game, "2.0", {"a": b"two"})
    a2 = services.build_archive(version=v2)
    assert CacheEntry.objects.get(relpath=a2.relpath).pinned
    assert not CacheEntry.objects.get(relpath=a1.relpath).pinned


def test_archive_of_an_old_version_from_its_cached_copy_is_not_pinned(game: Game, tmp_path: Path) -> None:
    old = make_version(game, "0.9", {"a": b"old"}, where="cache")
    make_version(game, "1.0", {"a": b"new"})
    archive = services.build_archive(version=old)
    assert extracted(archive, tmp_path / "x") == {"a": b"old"}
    assert not CacheEntry.objects.get(relpath=archive.relpath).pinned


def test_a_tree_that_does_not_match_the_version_is_refused(version: Version) -> None:
    (storage.tree_dir("game", "windows", "1.0") / "readme.txt").write_bytes(b"changed under our feet, longer")
    with pytest.raises(JobFailed, match="readme.txt"):
        services.build_archive(version=version)
    assert not FullArchive.objects.exists()


def test_a_missing_file_is_refused(version: Version) -> None:
    (storage.tree_dir("game", "windows", "1.0") / "readme.txt").unlink()
    with pytest.raises(JobFailed, match="missing"):
        services.build_archive(version=version)


# --- Requesting -------------------------------------------------------------------------------------


def test_request_archive_queues_one_job_and_then_returns_the_archive(version: Version, friend: Any) -> None:
    archive, job = services.request_archive(version=version, user=friend)
    assert archive is None and job is not None
    assert (job.kind, job.key, job.task, job.status) == ("archive", f"archive:{version.pk}", services.ARCHIVE_TASK, "queued")
    again_archive, again_job = services.request_archive(version=version, user=friend)
    assert again_archive is None and again_job is not None and again_job.pk == job.pk
    built = services.build_archive(version=version)
    assert services.request_archive(version=version, user=friend) == (built, None)


def test_request_archive_rebuilds_an_evicted_archive(version: Version, friend: Any) -> None:
    archive = services.build_archive(version=version)
    Job.objects.create(kind="archive", key=f"archive:{version.pk}", task=services.ARCHIVE_TASK, game=version.game,
                       version=version, status=Job.Status.DONE)
    (storage.cache_root() / archive.relpath).unlink()
    found, job = services.request_archive(version=version, user=friend)
    assert found is None and job is not None
    assert job.status == Job.Status.QUEUED  # the done job was queued again
    assert not FullArchive.objects.exists()


@pytest.mark.django_db(transaction=True)  # run_job reconnects: it cannot run inside a test transaction
def test_archive_task_builds_through_the_job_framework(version: Version) -> None:
    from downloads import tasks

    _, job = services.request_archive(version=version, user=None)
    assert job is not None
    tasks.build_archive(str(job.pk))
    job.refresh_from_db()
    archive = FullArchive.objects.get(version=version)
    assert job.status == Job.Status.DONE
    assert job.result == {"url": "/dl/archive/game/windows/1.0", "size": archive.size, "sha256": archive.sha256}


@pytest.mark.django_db(transaction=True)
def test_archive_task_failure_is_recorded_on_the_job(version: Version) -> None:
    from downloads import tasks

    (storage.tree_dir("game", "windows", "1.0") / "readme.txt").unlink()
    _, job = services.request_archive(version=version, user=None)
    tasks.build_archive(str(job.pk))  # type: ignore[union-attr]
    job.refresh_from_db()  # type: ignore[union-attr]
    assert job.status == Job.Status.FAILED  # type: ignore[union-attr]
    assert "readme.txt" in job.error and "missing" in job.error  # type: ignore[union-attr]


# --- When a version becomes ready ---------------------------------------------------------------------


def test_on_version_ready_queues_the_latest_archive_only(game: Game) -> None:
    v1 = make_version(game, "1.0", {"a": b"1"})
    v2 = make_version(game, "2.0", {"a": b"2"})
    assert services.on_version_ready(version=v1) is None  # not the latest any more
    job = services.on_version_ready(version=v2)
    assert job is not None and job.key == f"archive:{v2.pk}"


def test_on_version_ready_ignores_unready_versions(game: Game) -> None:
    v = make_version(game, "1.0", {"a": b"1"}, status=Version.Status.PROCESSING)
    assert services.on_version_ready(version=v) is None
    assert not Job.objects.exists()


def test_version_ready_signal_queues_the_archive(game: Game) -> None:
    v = make_version(game, "1.0", {"a": b"1"})
    version_ready.send(sender=Version, version=v)
    assert Job.objects.filter(key=f"archive:{v.pk}", kind="archive").exists()


# --- The API ----------------------------------------------------------------------------------------


def test_api_get_before_build_is_404_and_starts_nothing(friend_api: APIClient, version: Version) -> None:
    r = friend_api.get(API.format("1.0"))
    assert (r.status_code, r.json()) == (404, {"detail": "not built"})
    assert not Job.objects.exists()


def test_api_post_queues_a_job_then_answers_with_the_archive(
    friend_api: APIClient, version: Version, django_capture_on_commit_callbacks: Any
) -> None:
    queued_before = OrmQ.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        r = friend_api.post(API.format("1.0"))
    assert r.status_code == 202
    job = r.json()["job"]
    assert r.json()["job_url"] == f"/api/v1/jobs/{job['id']}"
    assert (job["kind"], job["status"], job["progress"], job["error"], job["result"]) == ("archive", "queued", 0.0, "", {})
    assert OrmQ.objects.count() == queued_before + 1  # really on django-q2's queue

    assert friend_api.get(API.format("1.0")).status_code == 202  # in progress, GET says so
    archive = services.build_archive(version=version)
    for method in (friend_api.get, friend_api.post):
        r = method(API.format("1.0"))
        assert r.status_code == 200
        assert r.json() == {"url": "/dl/archive/game/windows/1.0", "size": archive.size, "sha256": archive.sha256}


def test_api_hides_private_games_and_unpublished_versions(friend: Any, outsider: Any, admin_api: APIClient) -> None:
    secret = make_game("secret", private=True)
    make_version(secret, "1.0", {"a": b"a"})
    grant(friend, secret)
    game = make_game("game")
    make_version(game, "1.0", {"a": b"a"}, published=False)
    assert bearer_client(outsider).post("/api/v1/games/secret/versions/1.0/archive").status_code == 404
    assert bearer_client(friend).post("/api/v1/games/secret/versions/1.0/archive").status_code == 202
    assert bearer_client(friend).post(API.format("1.0")).status_code == 404
    assert admin_api.post(API.format("1.0")).status_code == 202
    assert Job.objects.count() == 2


def test_api_needs_authentication(api_client: APIClient, version: Version) -> None:
    assert api_client.post(API.format("1.0")).status_code == 401
    assert not Job.objects.exists()


# --- Jobs -------------------------------------------------------------------------------------------


def test_job_status_for_a_visible_game(friend_api: APIClient, version: Version, friend: Any) -> None:
    payload = random_bytes(100)
    job = make_indirect_job(version, friend, payload)
    r = friend_api.get(f"/api/v1/jobs/{job.pk}")
    assert r.status_code == 200
    assert r.json() == {
        "id": str(job.pk), "kind": "indirect", "status": "done", "progress": 0.0, "error": "",
        # The server path is not the client's business: the download URL is.
        "result": {"size": 100, "sha256": sha256(payload), "url": f"/dl/indirect/{job.pk}"},
    }


def test_job_of_a_hidden_game_is_404(outsider: Any, friend: Any) -> None:
    secret = make_game("secret", private=True)
    v = make_version(secret, "1.0", {"a": b"a"})
    job = make_indirect_job(v, friend, b"x")
    r = bearer_client(outsider).get(f"/api/v1/jobs/{job.pk}")
    assert r.status_code == 404
    assert "detail" in r.json()


def test_job_without_a_game_is_for_admins_only(friend_api: APIClient, admin_api: APIClient) -> None:
    job = Job.objects.create(kind="announce", key="x", task="t")
    assert friend_api.get(f"/api/v1/jobs/{job.pk}").status_code == 404
    assert admin_api.get(f"/api/v1/jobs/{job.pk}").status_code == 200


def test_unknown_job_is_404(friend_api: APIClient) -> None:
    assert friend_api.get("/api/v1/jobs/00000000-0000-0000-0000-000000000000").status_code == 404
    r = friend_api.get("/api/v1/jobs/not-a-uuid")
    assert (r.status_code, r.json()) == (404, {"detail": "No such job."})


# --- The cache budget ---------------------------------------------------------------------------------


def test_cache_budget_evicts_least_recently_used_unpinned_entries(game: Game, settings: Any) -> None:
    versions = [make_version(game, f"1.{i}", {"data.bin": random_bytes(20_000, seed=i)}) for i in range(4)]
    archives = [services.build_archive(version=v) for v in versions]  # the last one is pinned
    now = timezone.now()
    # Use order: 1.2 long ago, then 1.0, then 1.1 recently; 1.3 (pinned) long ago too.
    for archive, age in zip(archives, (2, 1, 3, 10), strict=True):
        CacheEntry.objects.filter(relpath=archive.relpath).update(last_used_at=now - timedelta(hours=age))
    sizes = [a.size for a in archives]
    budget = sizes[3] + sizes[1] + 10  # room for the pinned archive and one more
    evicted = services.enforce_cache_budget(budget=budget)
    assert evicted == [f"archive:{versions[2].pk}", f"archive:{versions[0].pk}"]
    for i in (0, 2):
        assert not (storage.cache_root() / archives[i].relpath).exists()
        assert not FullArchive.objects.filter(pk=archives[i].pk).exists()
    for i in (1, 3):
        assert (storage.cache_root() / archives[i].relpath).is_file()
        assert FullArchive.objects.filter(pk=archives[i].pk).exists()
    assert cache.used_bytes() <= budget


def test_archive_rows_outlive_nothing_but_an_eviction(version: Version) -> None:
    # An archive recorded without a cache entry (restored, or made by hand) stays while its file is there.
    archive = services.build_archive(version=version)
    CacheEntry.objects.all().delete()
    assert services.forget_evicted_archives() == 0
    (storage.cache_root() / archive.relpath).unlink()
    assert services.forget_evicted_archives() == 1
    assert not FullArchive.objects.exists()


def test_evicted_by_another_app_reads_as_not_built(client: Client, friend: Any, version: Version) -> None:
    archive = services.build_archive(version=version)
    CacheEntry.objects.filter(relpath=archive.relpath).update(pinned=False)
    cache.enforce_budget(budget=0)  # builds' own eviction knows nothing of FullArchive rows
    assert FullArchive.objects.exists()
    r = client.get("/dl/archive/game/1.0", HTTP_AUTHORIZATION=bearer_client(friend)._credentials["HTTP_AUTHORIZATION"])
    assert (r.status_code, "not built" in r.json()["detail"]) == (404, True)


def test_cache_budget_uses_the_setting_and_never_evicts_pinned(game: Game, settings: Any) -> None:
    v = make_version(game, "1.0", {"data.bin": random_bytes(5000)})
    archive = services.build_archive(version=v)
    settings.MIST_CACHE_BUDGET_BYTES = 1
    assert services.enforce_cache_budget() == []
    assert (storage.cache_root() / archive.relpath).is_file()


def test_evicted_archive_download_then_rebuild(client: Client, friend: Any, friend_api: APIClient, game: Game) -> None:
    old = make_version(game, "1.0", {"a": b"old"})
    services.build_archive(version=old)
    make_version(game, "2.0", {"a": b"new"})
    services.build_archive(version=make_version(game, "3.0", {"a": b"newest"}))
    services.enforce_cache_budget(budget=0)  # only the pinned latest survives
    r = client.get("/dl/archive/game/1.0", HTTP_AUTHORIZATION=friend_api._credentials["HTTP_AUTHORIZATION"])
    assert r.status_code == 404
    assert "not built" in r.json()["detail"]  # evicted is not "missing on the server"
    assert friend_api.post(API.format("1.0")).status_code == 202


# --- The real worker ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_worker_builds_a_requested_archive_end_to_end(worker: Any, friend: Any, tmp_path: Path) -> None:
    game = make_game("game")
    files = {"bin/run.sh": b"#!/bin/sh\n", "data.bin": random_bytes(300_000, seed=9)}
    make_version(game, "1.0", files)
    api = bearer_client(friend)
    r = api.post(API.format("1.0"))
    assert r.status_code == 202
    job_url = r.json()["job_url"]
    worker.wait_for(lambda: api.get(job_url).json()["status"] in ("done", "failed"), timeout=60, what="archive job")
    job = api.get(job_url).json()
    assert job["status"] == "done", job
    r = api.get(API.format("1.0"))
    assert r.status_code == 200
    info = r.json()
    assert info == job["result"]
    download = Client().get(info["url"], HTTP_AUTHORIZATION=api._credentials["HTTP_AUTHORIZATION"])
    data = b"".join(download.streaming_content)
    assert (len(data), sha256(data)) == (info["size"], info["sha256"])
    archive = FullArchive.objects.get()
    assert extracted(archive, tmp_path / "x") == files
