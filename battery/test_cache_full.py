"""The cache volume fills up: jobs fail cleanly with a "no space" error, nothing half-written looks
finished, the server keeps serving, and work that fits succeeds afterwards.

MIST_CACHE_ROOT is a real 3 MiB tmpfs (`mount -t tmpfs`, so this needs root, as CI and the dev
machines have; elsewhere the test is skipped, or fails in CI). The game's later versions carry a
4 MB incompressible file: neither their archives nor their chain replays fit.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from battery.faults import jobs_settled, orphan_jobs, ready, temp_entries
from builds import storage
from builds.models import CacheEntry, Job
from builds.services import push_version
from catalog.models import Game
from conftest import bearer_client
from downloads import services as download_services
from downloads.models import FullArchive
from mist.testing.environment import IN_CI
from mist.testing.gamedata import make_build
from mist.testing.worker import WorkerCluster

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CACHE_SIZE = "3m"


@pytest.fixture
def small_cache(mist_roots: dict[str, Path]) -> Iterator[Path]:
    """Mount a 3 MiB tmpfs over this test's (empty) cache root."""
    cache = mist_roots["cache"]
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={CACHE_SIZE},mode=0755", "tmpfs", str(cache)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        why = f"cannot mount a tmpfs as the cache (needs root): {mounted.stderr.strip()}"
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield cache
    finally:
        if subprocess.run(["umount", str(cache)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(cache)], capture_output=True)


def _no_space(job: Job) -> bool:
    return job.status == Job.Status.FAILED and "no space left" in job.error.lower()


@pytest.mark.fault("cache volume full (archives and chain replays that do not fit)")
def test_a_full_cache_fails_jobs_cleanly_and_the_server_keeps_serving(small_cache: Path, tmp_path: Path,
                                                                      friend: Any) -> None:
    # given: 1.0 is small; 2.0 adds a 4 MB incompressible file; 3.0 changes one line
    src = {"1.0": make_build(tmp_path / "v1", seed=91)}
    src["2.0"] = tmp_path / "v2"
    shutil.copytree(src["1.0"], src["2.0"])
    (src["2.0"] / "data" / "movie.bik").write_bytes(random.Random(91).randbytes(4_000_000))
    src["3.0"] = tmp_path / "v3"
    shutil.copytree(src["2.0"], src["3.0"])
    (src["3.0"] / "config.ini").write_text("[game]\nversion=3\n")
    game = Game.objects.create(slug="full", title="Full")
    api = bearer_client(friend)
    worker = WorkerCluster(tmp_path / "worker.log").start()
    try:
        versions = {name: push_version(game=game, name=name, source=s).version for name, s in src.items()}
        for version in versions.values():
            worker.wait_for(lambda v=version: ready(v.pk), timeout=240, what=f"{version} ready")  # type: ignore[misc]
        worker.wait_for(jobs_settled, timeout=120, what="the latest archive job")

        # then: the latest archive (5+ MB) did not fit; its job says so, and nothing looks built
        latest_job = Job.objects.get(kind=Job.Kind.ARCHIVE, version=versions["3.0"])
        assert _no_space(latest_job), (latest_job.status, latest_job.error)
        final = storage.archive_path("full", "windows", "3.0")
        assert not final.exists() and temp_entries(final.parent, final.name) == []
        big = [versions["2.0"], versions["3.0"]]  # 1.0's archive (small) was made while 1.0 was the latest
        assert not FullArchive.objects.filter(version__in=big).exists()
        assert not CacheEntry.objects.filter(key__in=[f"archive:{v.pk}" for v in big]).exists()
        shown = api.get(f"/api/v1/jobs/{latest_job.pk}").json()
        assert shown["status"] == "failed" and "no space left" in shown["error"].lower()
        assert api.get("/api/v1/games/full/versions/3.0/archive").status_code == 404  # not built, not "ready"

        # when: a friend asks for 2.0, whose files exist only as base + delta (a 5 MB replay)
        asked = api.post("/api/v1/games/full/versions/2.0/archive")
        assert asked.status_code == 202, asked.content
        job = Job.objects.get(kind=Job.Kind.ARCHIVE, version=versions["2.0"])
        worker.wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, timeout=120, what="2.0's archive job")
        job.refresh_from_db()
        assert _no_space(job), (job.status, job.error)
        replayed = storage.cached_version_dir("full", "windows", "2.0")
        assert not replayed.exists() and temp_entries(replayed.parent, "2.0") == []
        assert not CacheEntry.objects.filter(key=f"version:{versions['2.0'].pk}").exists()
        # a single file of 2.0 needs the same replay, inline: refused without a 500, nothing left behind
        one_file = api.get("/dl/file/full/2.0/config.ini")
        assert one_file.status_code in (404, 503) and "detail" in one_file.json(), one_file.status_code
        assert not replayed.exists() and temp_entries(replayed.parent, "2.0") == []
        work = small_cache / "work"
        assert not work.exists() or not list(work.iterdir()), "replay scratch left in the cache"

        # and: everything that does not need the cache is served as before
        assert api.get("/healthz").status_code == 200
        assert api.get("/api/v1/games/full").status_code == 200
        direct = api.get("/dl/direct/full/1.0__2.0")
        assert direct.status_code == 200 and b"".join(direct.streaming_content)
        latest_file = api.get("/dl/file/full/3.0/data/movie.bik")
        assert b"".join(latest_file.streaming_content) == (src["3.0"] / "data" / "movie.bik").read_bytes()

        # and: work that fits still succeeds (the failed attempts gave their space back): 1.0's archive,
        # evicted first so it is made again
        CacheEntry.objects.update(pinned=False)
        download_services.enforce_cache_budget(budget=0)
        assert not FullArchive.objects.exists()
        used = sum(f.stat().st_size for f in small_cache.rglob("*") if f.is_file())
        assert used == 0, f"{used} bytes still used in the cache after the failures and the eviction"
        small = api.post("/api/v1/games/full/versions/1.0/archive")
        assert small.status_code == 202, small.content
        worker.wait_for(lambda: FullArchive.objects.filter(version=versions["1.0"]).exists(), timeout=120,
                        what="1.0's archive")
        worker.wait_for(jobs_settled, timeout=60, what="jobs settled")
    finally:
        worker.stop()
    archive = api.get("/dl/archive/full/1.0")
    assert archive.status_code == 200 and int(archive["Content-Length"]) == FullArchive.objects.get().size
    assert orphan_jobs() == []
    assert os.path.ismount(small_cache)
