"""django-q2 tasks of the downloads app: each takes a Job id and calls one service via run_job."""

from __future__ import annotations

from typing import Any

from builds.jobs import run_job
from builds.models import Job
from downloads import services


def build_archive(job_id: str) -> None:
    def handle(job: Job) -> dict[str, Any]:
        archive = services.build_archive(version=job.version)
        return services.archive_result(archive=archive)

    run_job(job_id, handle)


def enforce_cache_budget() -> list[str]:
    return services.enforce_cache_budget()
