"""A worker SIGKILLed mid-delta leaves nothing that looks finished, and the job completes after."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from builds import storage
from builds.models import Job, Version
from builds.services import push_version
from catalog.models import Game
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mist.testing.worker import WorkerCluster
from mistcore import delta as mdelta

pytestmark = pytest.mark.django_db(transaction=True)


def test_worker_killed_mid_delta_recovers(settings: Any, tmp_path: Path) -> None:
    settings.MIST_HDIFF_MAX_BYTES = 1 << 20
    v1 = make_build(tmp_path / "v1", seed=21, big_file_bytes=40_000_000)
    v2 = next_version(v1, tmp_path / "v2", seed=21, step=1)
    game = Game.objects.create(slug="faulty", title="Faulty")
    env = {"MIST_JOB_STALE_SECONDS": "2"}
    worker = WorkerCluster(tmp_path / "w1.log", **env).start()
    try:
        push_version(game=game, name="1.0", source=v1)
        worker.wait_for(lambda: Version.objects.get(name="1.0").status == Version.Status.READY, timeout=120,
                        what="base ready")
        push_version(game=game, name="1.1", source=v2)
        job = Job.objects.get(kind=Job.Kind.DIRECT_DELTA)
        worker.wait_for(lambda: Job.objects.get(pk=job.pk).status == Job.Status.RUNNING, timeout=60,
                        what="delta job running")
        # Kill as soon as the job's temporary delta folder exists: in the middle of diffing the big
        # file (a fixed sleep was too long once deltas got faster).
        parent = storage.delta_dir("faulty", "windows", "1.0", "1.1").parent
        worker.wait_for(lambda: parent.is_dir() and any(p.name.startswith(".") for p in parent.iterdir()),
                        timeout=60, what="delta staging folder")
        worker.kill()
    finally:
        worker.stop()
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.attempts == 1
    # nothing looks finished: no delta folder or bundle under its final name
    assert not storage.delta_dir("faulty", "windows", "1.0", "1.1").exists()
    assert not storage.delta_bundle_path("faulty", "windows", "1.0", "1.1").exists()
    assert Version.objects.get(name="1.1").status != Version.Status.READY

    time.sleep(2.5)  # the heartbeat goes stale
    worker = WorkerCluster(tmp_path / "w2.log", **env).start()
    try:
        worker.wait_for(lambda: Job.objects.get(pk=job.pk).is_finished, timeout=180, what="job retried")
    finally:
        worker.stop()
    job.refresh_from_db()
    assert job.status == Job.Status.DONE, job.error
    assert job.attempts == 2
    assert Version.objects.get(name="1.1").status == Version.Status.READY
    install = tmp_path / "install"
    shutil.copytree(v1, install)
    unpacked = tmp_path / "bundle"
    mdelta.unpack_bundle(src=storage.delta_bundle_path("faulty", "windows", "1.0", "1.1"), dest=unpacked, max_total_bytes=10**9)
    mdelta.apply_delta_dir(delta_dir=unpacked, install_root=install, work_dir=tmp_path / "work")
    assert tree_bytes(install) == tree_bytes(v2)
    leftovers = [p.name for p in storage.delta_dir("faulty", "windows", "1.0", "1.1").parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_job_that_keeps_dying_fails_clearly(settings: Any, db: None) -> None:
    from builds.jobs import run_job

    game = Game.objects.create(slug="doomed", title="Doomed")
    job = Job.objects.create(kind=Job.Kind.RECONSTRUCT, key="doomed", task="deltas.tasks.reconstruct", game=game,
                             status=Job.Status.RUNNING, attempts=settings.MIST_JOB_MAX_ATTEMPTS)
    Job.objects.filter(pk=job.pk).update(heartbeat_at=None, started_at=None)
    failures = []
    run_job(str(job.pk), lambda j: {"never": "called"}, on_failure=lambda j, e: failures.append(e))
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert "gave up after 3 attempts" in job.error
    assert failures and "gave up" in failures[0]


def test_a_redelivered_task_does_nothing_while_the_job_runs(db: None) -> None:
    from django.utils import timezone

    from builds.jobs import run_job

    job = Job.objects.create(kind=Job.Kind.RECONSTRUCT, key="busy", task="x", status=Job.Status.RUNNING,
                             attempts=1, heartbeat_at=timezone.now(), started_at=timezone.now())
    calls = []
    assert run_job(str(job.pk), lambda j: calls.append(j)) is None
    assert calls == []


def test_a_task_delivered_while_a_planner_holds_the_job_row_waits_and_runs_it(transactional_db: None) -> None:
    """A planner queueing the same job (ensure_job: select_for_update on the row) while the worker claims it:
    the claim waits for the lock and runs the job. Skipping the locked row left the job queued forever with
    no task to run it (the load test's 20 patchers planning the same jump)."""
    import threading

    from django.db import connection, transaction

    from builds.jobs import ensure_job, run_job

    job, _ = ensure_job(kind=Job.Kind.RECONSTRUCT, key="contended", task="x")
    locked, release = threading.Event(), threading.Event()

    def planner() -> None:
        try:
            with transaction.atomic():
                ensure_job(kind=Job.Kind.RECONSTRUCT, key="contended", task="x")  # holds the row lock
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    other = threading.Thread(target=planner)
    other.start()
    assert locked.wait(10)
    threading.Timer(0.5, release.set).start()
    calls: list[Any] = []

    def handler(claimed: Job) -> dict[str, Any]:
        calls.append(claimed.pk)
        return {"ran": True}

    result = run_job(str(job.pk), handler)
    other.join(10)
    job.refresh_from_db()
    assert calls == [job.pk] and result is not None
    assert (job.status, job.attempts, job.result) == (Job.Status.DONE, 1, {"ran": True})
