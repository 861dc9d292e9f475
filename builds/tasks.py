"""django-q2 tasks of the builds app: each takes a Job id and calls one service via run_job."""

from __future__ import annotations

from typing import Any

from builds import services
from builds.announce import send_announcement
from builds.jobs import recover_jobs, run_job
from builds.models import Job


def _version_failed(job: Job, error: str) -> None:
    if job.version_id:
        services.mark_failed(version=job.version, error=error)


def process_base_version(job_id: str) -> None:
    def handle(job: Job) -> dict[str, Any]:
        services.mark_processing(version=job.version)
        result = services.make_base_archive(version=job.version)
        services.mark_ready(version=job.version)
        return result

    run_job(job_id, handle, on_failure=_version_failed)


def announce_version(job_id: str) -> None:
    def handle(job: Job) -> dict[str, Any]:
        version = job.version
        outcome = send_announcement(version=version, patch_size=version.update_size)
        return {"outcome": outcome}

    run_job(job_id, handle)


def recover_stale_jobs() -> list[str]:
    return recover_jobs()
