"""Patcher-facing API of deltas: the update plan and indirect-update requests."""

from __future__ import annotations

import json
from typing import Any

from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsAdminScope
from builds.access import latest_visible_version, visible_game, visible_version
from builds.api import requested_platform
from builds.jobs import job_payload
from builds.models import Version
from deltas import services
from deltas.models import DirectDelta
from mistcore.errors import MistCoreError
from mistcore.manifest import Manifest


class UpdateRequest(serializers.Serializer):
    from_version = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=64)
    to_version = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=64)
    local_manifest = serializers.JSONField(required=False, allow_null=True)
    platform = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=16)


class UpdatePlanView(APIView):
    """Which route an update should take, what it costs and why; every route stays within one platform."""

    @extend_schema(request=UpdateRequest, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, slug: str) -> Response:
        game = visible_game(request.user, slug)
        data = UpdateRequest(data=request.data)
        data.is_valid(raise_exception=True)
        platform = requested_platform(request, data.validated_data.get("platform") or request.query_params.get("platform"))
        wanted = data.validated_data.get("to_version") or None
        to_version = (
            visible_version(request.user, game, wanted, platform) if wanted
            else latest_visible_version(request.user, game, platform)
        )
        if to_version is None:
            return Response({"detail": f"this game has no ready {platform} version yet"},
                            status=status.HTTP_404_NOT_FOUND)
        from_name = data.validated_data.get("from_version") or None
        from_version = None
        if from_name and from_name != "unknown":
            from_version = game.versions.filter(name=from_name, platform=platform).first()
            if from_version is None:
                return Response({"detail": f"from_version {from_name!r} is not a version of {slug} ({platform})"},
                                status=status.HTTP_400_BAD_REQUEST)
        local = data.validated_data.get("local_manifest")
        local_manifest = None
        if local is not None:
            try:
                local_manifest = Manifest.from_json(json.dumps(local).encode())
            except (MistCoreError, ValueError) as exc:
                return Response({"detail": f"local_manifest: {exc}"}, status=status.HTTP_400_BAD_REQUEST)
        plan = services.plan_update(
            game=game, from_version=from_version, to_version=to_version, local_manifest=local_manifest
        )
        base = f"/api/v1/games/{slug}"
        query = f"?platform={platform}"
        jump_job = services.jump_for_plan(plan=plan, from_version=from_version, to_version=to_version,
                                          user=request.user)
        return Response({
            "jump": jump_job,
            "platform": platform,
            "from_version": plan.from_version,
            "to_version": plan.to_version,
            "route": plan.route,
            "reason": plan.reason,
            "download_bytes": plan.download_bytes,
            "disk_bytes": plan.disk_bytes,
            "alternatives": plan.alternatives,
            "steps": plan.steps,
            "indirect": {"paths": plan.indirect_paths, "request_url": f"{base}/indirect"},
            "full": {"archive_url": f"{base}/versions/{plan.to_version}/archive{query}", "size": plan.full_size},
            "target_manifest_url": f"{base}/versions/{plan.to_version}/manifest{query}",
        })


class IndirectRequestView(APIView):
    """Upload librsync signatures of local files; a worker answers with rdiff deltas (202 + job)."""

    parser_classes = [MultiPartParser]

    @extend_schema(request={"multipart/form-data": OpenApiTypes.OBJECT}, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request, slug: str) -> Response:
        game = visible_game(request.user, slug)
        platform = requested_platform(request, request.data.get("platform") or request.query_params.get("platform"))
        to_name = request.data.get("to_version") or ""
        to_version = (
            visible_version(request.user, game, to_name, platform) if to_name
            else latest_visible_version(request.user, game, platform)
        )
        if to_version is None:
            return Response({"detail": "this game has no ready version yet"}, status=status.HTTP_404_NOT_FOUND)
        upload = request.FILES.get("signatures")
        if upload is None:
            return Response({"detail": "signatures: attach the signature tar as a file field"},
                            status=status.HTTP_400_BAD_REQUEST)
        try:
            paths = json.loads(request.data.get("paths") or "[]")
        except (ValueError, RecursionError):
            return Response({"detail": "paths: must be a JSON list of file paths"}, status=status.HTTP_400_BAD_REQUEST)
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            return Response({"detail": "paths: must be a JSON list of file paths"}, status=status.HTTP_400_BAD_REQUEST)
        try:
            engines = [e for e in str(request.data.get("engines") or "").split(",") if e][:32]
            job = services.request_indirect_update(
                game=game, to_version=to_version, signatures_upload=upload, paths=paths, user=request.user,
                engines=engines,
            )
        except services.DeltaError as exc:
            code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE if "larger than" in str(exc) else status.HTTP_400_BAD_REQUEST
            return Response({"detail": str(exc)}, status=code)
        return Response({"job": job_payload(job), "job_url": f"/api/v1/jobs/{job.pk}"}, status=status.HTTP_202_ACCEPTED)


class AdminVersionView(APIView):
    """Remove a version (like `manage.py rm`): `DELETE admin/games/<slug>/versions/<version>?platform=P[&force=1]`.
    Its child is re-linked to its parent and gets a new direct delta; the base or the only version needs force."""

    def get_permissions(self) -> list[Any]:
        return [IsAdminScope()]

    @extend_schema(operation_id="admin_versions_remove", responses={200: OpenApiTypes.OBJECT})
    def delete(self, request: Request, slug: str, version: str) -> Response:
        platform = requested_platform(request)
        found = Version.objects.filter(game__slug=slug, name=version, platform=platform).select_related("game").first()
        if found is None:
            return Response({"detail": f"no {platform} build of version {version!r} of {slug!r}"},
                            status=status.HTTP_404_NOT_FOUND)
        force = request.query_params.get("force", "") in ("1", "true", "yes")
        try:
            result = services.remove_version(version=found, force=force)
        except services.DeltaError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response({"removed": result.removed, "platform": platform, "messages": result.messages,
                         "queued": [f"{j.kind} {j.key}" for j in result.queued]})


class AdminDeltaReportView(APIView):
    """The patch-efficiency report of a version's direct update (like `manage.py delta_report`)."""

    def get_permissions(self) -> list[Any]:
        return [IsAdminScope()]

    @extend_schema(operation_id="admin_delta_report", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, slug: str, version: str) -> Response:
        platform = requested_platform(request)
        found = Version.objects.filter(game__slug=slug, name=version, platform=platform).first()
        if found is None:
            return Response({"detail": f"no {platform} build of version {version!r} of {slug!r}"},
                            status=status.HTTP_404_NOT_FOUND)
        delta = DirectDelta.objects.filter(to_version=found).select_related("from_version").first()
        body: dict[str, Any] = {"game": slug, "version": found.name, "platform": platform, "status": found.status,
                                "total_size": found.total_size, "from_version": None}
        if delta is not None:
            body.update({"from_version": delta.from_version.name, "bundle_size": delta.bundle_size,
                         "op_counts": delta.op_counts, "files": delta.report})
        return Response(body)
