"""Downloads API: full archives on request, and the status of any worker job."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from builds.access import visible_game, visible_version
from builds.api import requested_platform
from builds.models import Job
from catalog.models import Game
from downloads import playtime, services
from mistcore.platforms import PLATFORMS


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


class PlaySessionReport(serializers.Serializer):
    id = serializers.UUIDField()
    game = serializers.SlugField(max_length=64)
    version = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    platform = serializers.ChoiceField(choices=list(PLATFORMS), required=False, allow_blank=True, default="")
    option = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField()
    exit_code = serializers.IntegerField(required=False, allow_null=True, default=None,
                                         min_value=-(2**31), max_value=2**31 - 1)


class PlaySessionsView(APIView):
    """The friend's playtime. POST one session the patcher recorded: 201 when new, 200 when it was already
    reported (counted once), 404 for a game the friend may not see, 409 for an id reused with other data."""

    @extend_schema(operation_id="playtime_list", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        by_game = playtime.playtime_by_game(user=request.user)
        games = {g.pk: g.slug for g in Game.objects.filter(pk__in=by_game)}
        return Response({"games": {games[pk]: p.to_dict() for pk, p in by_game.items() if pk in games}})

    @extend_schema(operation_id="playtime_report", request=PlaySessionReport,
                   responses={200: OpenApiTypes.OBJECT, 201: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT,
                              409: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = PlaySessionReport(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        try:
            recorded = playtime.record_session(
                user=request.user, session_id=d["id"], game_slug=d["game"], started_at=d["started_at"],
                ended_at=d["ended_at"], version=d["version"], platform=d["platform"], option=d["option"],
                exit_code=d["exit_code"],
            )
        except playtime.SessionRejected as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        except playtime.SessionConflict as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        total = playtime.playtime_by_game(user=request.user, games=[recorded.session.game])[recorded.session.game_id]
        return Response({"id": str(recorded.session.pk), "created": recorded.created, "seconds": recorded.session.seconds,
                         "game": d["game"], "playtime": total.to_dict()},
                        status=status.HTTP_201_CREATED if recorded.created else status.HTTP_200_OK)
