"""A worker SIGKILLed in the middle of an upload to the bucket (MIST_STORAGE=s3, a real S3-compatible server on
loopback): no object appears under the final key, the job finishes once after a restart with the right
bytes in the bucket, and the killed attempt's incomplete upload (invisible to readers) is swept."""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from pathlib import Path

import pytest

from battery.faults import freeze_when, jobs_settled, kill_frozen, ready
from builds import objectstore, storage
from builds.models import Job, Version
from builds.services import push_version
from catalog.models import Game
from mist.testing.gamedata import make_build
from mist.testing.worker import WorkerCluster

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SLUG = "cloudy"


@pytest.mark.fault("worker SIGKILL mid-upload to the bucket")
def test_a_worker_killed_mid_upload_leaves_no_object_under_a_final_key(s3_storage: dict[str, str], tmp_path: Path) -> None:
    src = make_build(tmp_path / "src", seed=173, big_file_bytes=24_000_000)  # incompressible: ~5 parts of 5 MiB
    game = Game.objects.create(slug=SLUG, title="Cloudy")
    key = objectstore.prefix() + f"storage/games/{SLUG}/windows/base/1.0.tar.zst"
    stale = {"MIST_JOB_STALE_SECONDS": "2"}
    worker = WorkerCluster(tmp_path / "w1.log", **stale).start()
    try:
        version = push_version(game=game, name="1.0", source=src).version
        freeze_when(worker, lambda: key in objectstore.incomplete_uploads(), timeout=180,
                    what="the base archive being uploaded")
        kill_frozen(worker)
    finally:
        worker.stop()
    assert objectstore.head(key) is None  # nothing under the final key: readers see no object at all
    assert key in objectstore.incomplete_uploads()  # only an incomplete upload, which no reader sees
    assert Version.objects.get(pk=version.pk).status != Version.Status.READY

    time.sleep(2.5)  # the dead attempt's heartbeat goes stale
    worker = WorkerCluster(tmp_path / "w2.log", **stale).start()
    try:
        worker.wait_for(lambda: ready(version.pk), timeout=180, what="1.0 ready after the restart")
        worker.wait_for(jobs_settled, timeout=180, what="every job settled")
    finally:
        worker.stop()
    job = Job.objects.get(kind=Job.Kind.PROCESS_VERSION, version=version)
    assert (job.status, job.attempts) == (Job.Status.DONE, 2), job.error
    info = objectstore.head(key)
    local = storage.base_archive_path(SLUG, "windows", "1.0")
    assert info is not None and info.size == local.stat().st_size
    assert info.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    # the new worker's job recovery saw the killed attempt's upload but left it (six hours by our own clock,
    # though moto dates every upload 2010); a sweep with no age limit removes it
    assert key in objectstore.incomplete_uploads()
    objectstore.abort_stale_uploads(older_than=timedelta(0))
    assert objectstore.incomplete_uploads() == []
