"""Downloads API: full archives on request, and the status of any worker job."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from builds.access import visible_game, visible_version
from builds.api import requested_platform
from builds.models import Job
from downloads import services


def _job_accepted(job: Job) -> Response:
    return Response(
        {"job": services.job_as_dict(job=job), "job_url": f"/api/v1/jobs/{job.pk}"},
        status=status.HTTP_202_ACCEPTED,
    )


class ArchiveView(APIView):
    """A version's full `.tar.zst` (of `?platform=`): 200 `{url, size, sha256}` when built, else 202 with the job.

    POST starts the work (chain replay for old versions); GET only reports (404 when not built).
    """

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 202: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT})
    def get(self, request: Request, slug: str, version: str) -> Response:
        v = visible_version(request.user, visible_game(request.user, slug), version, requested_platform(request))
        archive, job = services.archive_status(version=v)
        if archive is not None:
            return Response(services.archive_result(archive=archive))
        if job is not None:
            return _job_accepted(job)
        return Response({"detail": "not built"}, status=status.HTTP_404_NOT_FOUND)

    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, 202: OpenApiTypes.OBJECT})
    def post(self, request: Request, slug: str, version: str) -> Response:
        v = visible_version(request.user, visible_game(request.user, slug), version, requested_platform(request))
        archive, job = services.request_archive(version=v, user=request.user)
        if archive is not None:
            return Response(services.archive_result(archive=archive))
        assert job is not None
        return _job_accepted(job)


class JobView(APIView):
    """`{id, kind, status, progress, error, result}` of a job of a game the caller may see."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT})
    def get(self, request: Request, job_id: str) -> Response:
        job = services.visible_job(user=request.user, job_id=job_id)
        return Response(services.job_as_dict(job=job))
