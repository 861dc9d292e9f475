"""django-q2 tasks of the deltas app: each takes a Job id and calls one service via run_job."""

from __future__ import annotations

from typing import Any

from builds import services as builds_services
from builds.jobs import run_job
from builds.models import Job, Version
from deltas import localcopies, services


def _version_failed(job: Job, error: str) -> None:
    if job.version_id:
        builds_services.mark_failed(version=job.version, error=error)


def make_direct_delta(job_id: str) -> None:
    def handle(job: Job) -> dict[str, Any]:
        delta = services.make_direct_delta(to_version=job.version)
        localcopies.trim_after_job(job)  # MIST_S3_LOCAL_BYTES: the disk stays a bounded cache of the bucket
        return {"download_size": delta.download_size, "bundle_size": delta.bundle_size, "ops": delta.op_counts}

    run_job(job_id, handle, on_failure=_version_failed)


def make_indirect_bundle(job_id: str) -> None:
    run_job(
        job_id,
        lambda job: services.make_indirect_bundle(job=job),
        on_failure=lambda job, error: services.discard_indirect_upload(job=job),
    )


def reconstruct(job_id: str) -> None:
    def handle(job: Job) -> dict[str, Any]:
        path = services.reconstruct_version(version=job.version)
        return {"path": str(path)}

    run_job(job_id, handle)


def make_jump_delta(job_id: str) -> None:
    def handle(job: Job) -> dict[str, Any]:
        from_version = Version.objects.select_related("game").get(pk=job.params["from_version"])
        jump = services.make_jump_delta(from_version=from_version, to_version=job.version)
        return {"bundle_size": jump.bundle_size, "seconds": round(jump.seconds, 2)}

    run_job(job_id, handle)  # a failed jump fails only itself: the version and the other routes stay
