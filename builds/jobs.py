"""Worker jobs: one row per unit of work, so django-q2's re-deliveries and kills are harmless.

django-q2 hands a task out again when it outlives `retry`, and retries a SIGKILLed task forever
without counting it (see PITFALLS.md). So every task here is a thin door onto `run_job`, which:
- claims the Job row (select_for_update, waiting for a planner that holds it) and does nothing if it is done, failed, or
  running with a live heartbeat elsewhere;
- counts attempts itself and gives up with a clear error after MIST_JOB_MAX_ATTEMPTS;
- sends a heartbeat from a side thread while the work runs, so a killed worker is noticed;
- records the result or the error on the row, where the admin and the API show it.
`recover_jobs` (run when a worker process starts, and every minute) re-queues jobs whose worker died.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from builds import objectstore
from builds.models import Job

logger = logging.getLogger("mist.jobs")

def _heartbeat_seconds() -> float:
    """Beat several times per staleness window, so a live job never looks dead."""
    return max(0.5, min(5.0, settings.MIST_JOB_STALE_SECONDS / 4))


class JobFailed(Exception):
    """Raised by a job handler for an expected failure: the message is shown to the user as is."""


def _stale_after() -> timedelta:
    return timedelta(seconds=settings.MIST_JOB_STALE_SECONDS)


def _enqueue(job: Job) -> None:
    from django_q.tasks import async_task

    async_task(job.task, str(job.pk), task_name=f"{job.kind}:{job.key}"[:100], group=job.kind)


def ensure_job(
    *,
    kind: str,
    key: str,
    task: str,
    game: Any = None,
    version: Any = None,
    params: dict[str, Any] | None = None,
    requested_by: Any = None,
    retry_failed: bool = False,
) -> tuple[Job, bool]:
    """Get the job for `key`, creating and queueing it if new. Concurrent callers share one job."""
    with transaction.atomic():
        job, created = Job.objects.select_for_update().get_or_create(
            key=key,
            defaults={
                "kind": kind,
                "task": task,
                "game": game,
                "version": version,
                "params": params or {},
                "requested_by": requested_by if getattr(requested_by, "pk", None) else None,
            },
        )
        if not created and retry_failed and job.status == Job.Status.FAILED:
            _reset(job, params=params)
            created = True
        if created:
            transaction.on_commit(lambda: _enqueue(job))
    return job, created


def _reset(job: Job, *, params: dict[str, Any] | None = None) -> None:
    job.status = Job.Status.QUEUED
    job.attempts = 0
    job.error = ""
    job.result = {}
    job.progress = 0.0
    job.started_at = job.heartbeat_at = job.finished_at = None
    if params is not None:
        job.params = params
    job.save()


def retry_job(job: Job) -> Job:
    """Queue a failed (or stuck) job again from scratch: the admin's "retry" action."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job.pk)
        if job.status == Job.Status.RUNNING and not job.is_stale(after=_stale_after()):
            return job
        _reset(job)
        transaction.on_commit(lambda: _enqueue(job))
    return job


def _claim(job_id: str) -> Job | None:
    with transaction.atomic():
        # Wait for the row lock, never skip it: a planner queueing the same job (ensure_job) holds it for a
        # moment, and a delivery that skipped it would leave the job queued with no task to run it. A second
        # delivery of a task being claimed waits here too, then finds the job running and does nothing.
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return None  # deleted
        if job.is_finished:
            return None
        if job.status == Job.Status.RUNNING and not job.is_stale(after=_stale_after()):
            return None  # alive in another worker: a re-delivery of the same task
        if job.attempts >= settings.MIST_JOB_MAX_ATTEMPTS:
            job.status = Job.Status.FAILED
            job.error = (
                f"gave up after {job.attempts} attempts: the worker died or timed out each time "
                f"(killed, out of memory, or over MIST_TASK_TIMEOUT). {job.error}"
            ).strip()
            job.finished_at = timezone.now()
            job.save()
            return job  # returned so the caller can run the failure hook
        now = timezone.now()
        job.status = Job.Status.RUNNING
        job.attempts += 1
        job.started_at = job.heartbeat_at = now
        job.save(update_fields=["status", "attempts", "started_at", "heartbeat_at"])
    return job


class _Heartbeat(threading.Thread):
    """Touches job.heartbeat_at every few seconds while the work runs, on its own connection."""

    def __init__(self, job_id: Any) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.job_id = job_id
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(_heartbeat_seconds()):
                Job.objects.filter(pk=self.job_id, status=Job.Status.RUNNING).update(heartbeat_at=timezone.now())
        except Exception:  # a lost heartbeat only makes the job look stale sooner
            logger.exception("job heartbeat failed", extra={"job": str(self.job_id)})
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)


def set_progress(job: Job, fraction: float) -> None:
    Job.objects.filter(pk=job.pk).update(progress=max(0.0, min(1.0, fraction)), heartbeat_at=timezone.now())


def run_job(
    job_id: str,
    handler: Callable[[Job], dict[str, Any] | None],
    *,
    on_failure: Callable[[Job, str], None] | None = None,
) -> Job | None:
    """Claim the job, run `handler(job)`, record its result or error. Safe to call twice."""
    close_old_connections()
    job = _claim(job_id)
    if job is None:
        return None
    if job.status == Job.Status.FAILED:
        if on_failure:
            on_failure(job, job.error)
        return job
    heartbeat = _Heartbeat(job.pk)
    heartbeat.start()
    try:
        result = handler(job) or {}
    except Exception as exc:
        heartbeat.stop()
        close_old_connections()
        message = str(exc) if isinstance(exc, JobFailed) else f"{exc.__class__.__name__}: {exc}"
        logger.error(
            "job failed",
            extra={"job": str(job.pk), "kind": job.kind, "key": job.key, "error": message,
                   "trace": traceback.format_exc(limit=8)},
        )
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.FAILED, error=message[:5000], finished_at=timezone.now()
        )
        job.refresh_from_db()
        if on_failure:
            on_failure(job, message)
        return job
    heartbeat.stop()
    # Long compute may have outlived the connection (PITFALLS.md): reconnect before writing.
    close_old_connections()
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.DONE, result=result, progress=1.0, error="", finished_at=timezone.now()
    )
    job.refresh_from_db()
    logger.info("job done", extra={"job": str(job.pk), "kind": job.kind, "key": job.key})
    return job


def recover_jobs() -> list[str]:
    """Re-queue jobs whose worker died (stale heartbeat) or whose queue message was lost."""
    cutoff = timezone.now() - _stale_after()
    requeued = []
    candidates = list(Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING]))
    for job in candidates:
        if job.status == Job.Status.RUNNING and not job.is_stale(after=_stale_after()):
            continue
        if job.status == Job.Status.QUEUED and job.created_at > cutoff:
            continue
        _enqueue(job)  # a duplicate delivery is harmless: _claim decides
        requeued.append(str(job.pk))
    if requeued:
        logger.warning("re-queued jobs whose worker died", extra={"jobs": ",".join(requeued)})
    try:  # MIST_STORAGE=s3: uploads a killed worker left incomplete (invisible to readers) are removed
        # six hours after this server first saw them, whatever the store's clock says
        objectstore.abort_stale_uploads()
    except Exception:  # noqa: BLE001 - a bucket that does not answer must not stop job recovery
        logger.exception("could not sweep incomplete uploads")
    return requeued


def job_payload(job: Job) -> dict[str, Any]:
    """How a job looks in the API (the patcher polls this)."""
    return {
        "id": str(job.pk),
        "kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "attempts": job.attempts,
        "error": job.error,
        "result": {k: v for k, v in job.result.items() if k != "path"},
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
