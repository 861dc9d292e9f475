"""A worker SIGKILLed mid-archive and mid-chain-replay: nothing half-made looks finished, and the job completes.

The mid-delta case is deltas/tests/test_worker_faults.py (counted in the battery's tally, not
repeated here). Each test runs a real django-q2 cluster on the test database, catches it with its
temporary file or folder on disk (see battery.faults.freeze_when), SIGKILLs it, checks what the
server shows, then starts a new cluster and checks the job finishes with the right bytes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from battery.faults import freeze_when, jobs_settled, kill_frozen, orphan_jobs, ready, temp_entries
from builds import storage
from builds.models import CacheEntry, Job
from builds.services import push_version
from catalog.models import Game
from conftest import bearer_client
from downloads import services as download_services
from downloads.models import FullArchive
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mist.testing.worker import WorkerCluster
from mistcore.safetar import extract_tar_zst

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

STALE = {"MIST_JOB_STALE_SECONDS": "2"}


def _archive_bytes(path: Path, dest: Path) -> dict[str, tuple[bytes, bool]]:
    extract_tar_zst(src=path, dest=dest, max_total_bytes=10**9)
    return tree_bytes(dest)


def _restart_and_finish(tmp_path: Path, job: Job, name: str) -> Job:
    time.sleep(2.5)  # the dead attempt's heartbeat goes stale
    worker = WorkerCluster(tmp_path / f"{name}.log", **STALE).start()
    try:
        worker.wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, timeout=180, what=f"{job.kind} retried")
        worker.wait_for(jobs_settled, timeout=180, what="every job settled")
    finally:
        worker.stop()
    job.refresh_from_db()
    return job


@pytest.mark.fault("worker SIGKILL mid-archive")
def test_worker_killed_mid_archive_recovers(tmp_path: Path, friend: Any) -> None:
    src = make_build(tmp_path / "v1", seed=81, big_file_bytes=3_000_000)
    game = Game.objects.create(slug="arch", title="Arch")
    final = storage.archive_path("arch", "windows", "1.0")
    worker = WorkerCluster(tmp_path / "w1.log", **STALE).start()
    try:
        version = push_version(game=game, name="1.0", source=src).version
        # The version becoming ready queues its full archive; catch the worker writing it.
        freeze_when(worker, lambda: temp_entries(final.parent, final.name), timeout=180, what="the archive being packed")
        kill_frozen(worker)
    finally:
        worker.stop()
    job = Job.objects.get(kind=Job.Kind.ARCHIVE, version=version)
    assert (job.status, job.attempts) == (Job.Status.RUNNING, 1)
    # nothing looks finished: no archive under its name, no row, no cache entry, and the API says "building"
    assert temp_entries(final.parent, final.name) and not final.exists()
    assert not FullArchive.objects.exists() and not CacheEntry.objects.filter(key=f"archive:{version.pk}").exists()
    api = bearer_client(friend)
    status = api.get("/api/v1/games/arch/versions/1.0/archive")
    assert status.status_code == 202 and status.json()["job"]["status"] == "running", status.content
    assert api.get("/dl/archive/arch/1.0").status_code == 404

    job = _restart_and_finish(tmp_path, job, "w2")
    assert (job.status, job.attempts) == (Job.Status.DONE, 2), job.error
    archive = FullArchive.objects.get(version=version)
    assert final.stat().st_size == archive.size
    assert _archive_bytes(final, tmp_path / "out") == tree_bytes(src)
    download = api.get("/dl/archive/arch/1.0")
    assert download.status_code == 200 and download["X-Mist-SHA256"] == archive.sha256
    assert orphan_jobs() == []


@pytest.mark.fault("worker SIGKILL mid-chain-replay")
def test_worker_killed_mid_chain_replay_recovers(tmp_path: Path, friend: Any) -> None:
    v1 = make_build(tmp_path / "v1", seed=82, big_file_bytes=2_000_000)
    builds = {"1.0": v1, "2.0": next_version(v1, tmp_path / "v2", seed=82, step=1)}
    builds["3.0"] = next_version(builds["2.0"], tmp_path / "v3", seed=82, step=2)
    game = Game.objects.create(slug="replay", title="Replay")
    worker = WorkerCluster(tmp_path / "w1.log", **STALE).start()
    try:
        versions = {name: push_version(game=game, name=name, source=src).version for name, src in builds.items()}
        for version in versions.values():
            worker.wait_for(lambda v=version: ready(v.pk), timeout=240, what=f"{version} ready")  # type: ignore[misc]
        worker.wait_for(jobs_settled, timeout=180, what="the latest archive")
        # The cache lets the retired trees of 1.0 and 2.0 go: 2.0 now exists only as base + delta.
        download_services.enforce_cache_budget(budget=0)
        cached = storage.cached_version_dir("replay", "windows", "2.0")
        assert not cached.exists()
        api = bearer_client(friend)
        asked = api.post("/api/v1/games/replay/versions/2.0/archive")
        assert asked.status_code == 202, asked.content
        freeze_when(worker, lambda: temp_entries(cached.parent, "2.0"), timeout=120, what="2.0 being replayed")
        kill_frozen(worker)
    finally:
        worker.stop()
    job = Job.objects.get(kind=Job.Kind.ARCHIVE, version=versions["2.0"])
    assert (job.status, job.attempts) == (Job.Status.RUNNING, 1)
    # a half-replayed tree never looks like the version: no folder under its name, no cache entry
    assert temp_entries(cached.parent, "2.0") and not cached.exists()
    assert not CacheEntry.objects.filter(key=f"version:{versions['2.0'].pk}").exists()
    assert not storage.archive_path("replay", "windows", "2.0").exists()
    assert api.get("/dl/file/replay/3.0/config.ini").status_code == 200  # serving goes on

    job = _restart_and_finish(tmp_path, job, "w2")
    assert (job.status, job.attempts) == (Job.Status.DONE, 2), job.error
    assert tree_bytes(cached) == tree_bytes(builds["2.0"])  # the replay, verified file by file
    assert _archive_bytes(storage.archive_path("replay", "windows", "2.0"), tmp_path / "out") == tree_bytes(builds["2.0"])
    assert orphan_jobs() == []


@pytest.mark.django_db
def test_a_killed_attempts_temporary_files_are_swept_by_the_next(tmp_path: Path) -> None:
    # What a SIGKILLed attempt leaves (the two tests above see these very names on disk mid-kill).
    game = Game.objects.create(slug="leak", title="Leak")
    version = push_version(game=game, name="1.0", source=make_build(tmp_path / "b", seed=83)).version
    final = storage.archive_path("leak", "windows", "1.0")
    final.parent.mkdir(parents=True)
    dead_archive = final.parent / f".{final.name}.tmp-0123456789ab"
    dead_archive.write_bytes(b"\0" * 100_000)
    download_services.build_archive(version=version)
    assert final.exists()
    assert not dead_archive.exists(), "the dead attempt's half archive is still in the cache"
