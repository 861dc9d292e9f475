"""A worker SIGKILLed mid-archive, mid-chain-replay and inside the delta engine: nothing half-made looks
finished, and the job completes once, with the right bytes and no temporary file left.

deltas/tests/test_worker_faults.py kills a delta job as soon as its staging folder exists; the
engine case here waits until the windowed engine is part-way through writing the big file's patch. Each test runs a real django-q2 cluster on the test database, catches it with its
temporary file or folder on disk (see battery.faults.freeze_when), SIGKILLs it, checks what the
server shows, then starts a new cluster and checks the job finishes with the right bytes.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from battery.faults import freeze_when, jobs_settled, kill_frozen, orphan_jobs, ready, temp_entries
from builds import storage
from builds.models import CacheEntry, Job, Version
from builds.services import push_version
from catalog.models import Game
from conftest import bearer_client
from deltas.models import DirectDelta
from downloads import services as download_services
from downloads.models import FullArchive
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mist.testing.worker import WorkerCluster
from mistcore import delta as mdelta
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


def _partial_engine_output(parent: Path, name: str) -> tuple[Path, int] | None:
    """The windowed engine's open output inside a delta job's staging folder: it exists only while
    `windowed.diff_file` runs (created after both inputs are opened, renamed away when the last window is
    written), and the diff of the big file's window takes seconds in C, so the kill lands inside the engine,
    not before or after it. (Its header still sits in the write buffer: the file reads 0 bytes.)"""
    for staging in temp_entries(parent, name):
        for part in (staging / "patches").glob(".*.hdiffw.tmp-*"):
            try:
                return part, part.stat().st_size
            except FileNotFoundError:
                continue
    return None


def _dot_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


@pytest.mark.fault("worker SIGKILL inside the delta engine")
def test_worker_killed_inside_the_delta_engine_recovers(tmp_path: Path, settings: Any, friend: Any) -> None:
    settings.MIST_HDIFF_MAX_BYTES = 1 << 20  # the 48 MB file goes through the windowed engine, window by window
    v1 = make_build(tmp_path / "v1", seed=84, big_file_bytes=48_000_000)
    v2 = next_version(v1, tmp_path / "v2", seed=84, step=1)
    game = Game.objects.create(slug="engine", title="Engine")
    final = storage.delta_dir("engine", "windows", "1.0", "1.1")
    worker = WorkerCluster(tmp_path / "w1.log", **STALE).start()
    try:
        base = push_version(game=game, name="1.0", source=v1).version
        worker.wait_for(lambda: ready(base.pk), timeout=240, what="1.0 ready")
        worker.wait_for(jobs_settled, timeout=240, what="1.0's jobs")
        push_version(game=game, name="1.1", source=v2)
        found = freeze_when(worker, lambda: _partial_engine_output(final.parent, final.name), timeout=240,
                            what="the windowed engine writing the big file's patch")
        kill_frozen(worker)
    finally:
        worker.stop()
    assert isinstance(found, tuple)
    part, partial_size = found
    job = Job.objects.get(kind=Job.Kind.DIRECT_DELTA)
    assert (job.status, job.attempts) == (Job.Status.RUNNING, 1)
    # The kill landed inside the engine: its output is still there, unfinished, under a temp name.
    assert part.exists() and part.stat().st_size == partial_size
    assert not list(part.parent.glob("*.hdiffw"))  # the big file's patch never got its final name
    # Nothing looks finished: no delta folder, no bundle, no row, the version not ready.
    assert not final.exists()
    assert not storage.delta_bundle_path("engine", "windows", "1.0", "1.1").exists()
    assert not DirectDelta.objects.filter(status=DirectDelta.Status.READY).exists()
    assert Version.objects.get(name="1.1").status != Version.Status.READY

    job = _restart_and_finish(tmp_path, job, "w2")
    assert (job.status, job.attempts) == (Job.Status.DONE, 2), job.error
    assert Job.objects.filter(kind=Job.Kind.DIRECT_DELTA).count() == 1  # finished once, not queued again
    assert DirectDelta.objects.count() == 1
    assert Version.objects.get(name="1.1").status == Version.Status.READY
    # Byte-correct: the bundle turns 1.0 into 1.1 exactly.
    install = tmp_path / "install"
    shutil.copytree(v1, install)
    unpacked = tmp_path / "bundle"
    mdelta.unpack_bundle(src=storage.delta_bundle_path("engine", "windows", "1.0", "1.1"), dest=unpacked,
                         max_total_bytes=10**9)
    mdelta.apply_delta_dir(delta_dir=unpacked, install_root=install, work_dir=tmp_path / "work")
    assert tree_bytes(install) == tree_bytes(v2)
    # No temporary file of the dead attempt remains anywhere in storage or the cache.
    assert not part.exists()
    assert _dot_files(settings.MIST_STORAGE_ROOT) == [] and _dot_files(settings.MIST_CACHE_ROOT) == []
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
