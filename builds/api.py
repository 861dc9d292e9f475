"""Patcher-facing API of builds: games, versions, manifests; and the admin's remote push."""

from __future__ import annotations

import io
import secrets
from typing import Any

from django.http import FileResponse, HttpResponse
from django.http.response import HttpResponseBase
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsAdminScope
from builds import launch, partial, storage, uploads
from builds.access import (
    latest_visible_version,
    visible_game,
    visible_games_with_latest,
    visible_platforms,
    visible_platforms_by_game,
    visible_version,
    visible_versions,
)
from builds.manifest_cache import cached_manifest
from builds.models import Version
from builds.services import BuildError, PushBlocked
from catalog import services as catalog_services
from catalog.models import Game
from catalog.platforms import PLATFORMS, PlatformError, platform_or_default
from mistcore.errors import MistCoreError


def requested_platform(request: Request, value: str | None = None) -> str:
    """The platform a request names (`?platform=`, or `value` from its body), else MIST_DEFAULT_PLATFORM; 400 if unknown."""
    raw = value if value is not None else request.query_params.get("platform")
    try:
        return platform_or_default(raw or None)
    except PlatformError as exc:
        raise ValidationError({"platform": [str(exc)]}) from None


def _header_image_url(game: Game) -> str:
    if game.header_image_cached:
        return f"/media/{game.header_image_cached}"
    return game.header_image_source


def _version_data(version: Version) -> dict[str, Any]:
    return {
        "name": version.name,
        "platform": version.platform,
        "seq": version.seq,
        "parent": version.parent.name if version.parent_id else None,
        "status": version.status,
        "published": version.published,
        "total_size": version.total_size,
        "file_count": version.file_count,
        "update_size": version.update_size,
        "created_at": version.created_at.isoformat(),
        "notes": version.notes,
        "error": version.error,
    }


class GameListView(APIView):
    """The games the caller may see, with their latest version (for `?platform=` if given) and their platforms."""

    @extend_schema(operation_id="games_list", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        platform = requested_platform(request) if request.query_params.get("platform") else None
        out = []
        listed = visible_games_with_latest(request.user, platform)
        platforms = visible_platforms_by_game(request.user, [game for game, _ in listed])
        for game, version in listed:
            out.append({
                "slug": game.slug,
                "title": game.title,
                "description": game.description,
                "header_image_url": _header_image_url(game),
                "is_private": game.is_private,
                "platforms": platforms[game.pk],
                "latest_version": version.name if version else None,
                "latest_platform": version.platform if version else None,
                "latest_size": version.total_size if version else None,
                "updated_at": (version.ready_at or version.created_at).isoformat() if version else None,
            })
        return Response({"games": out})


class GameDetailView(APIView):
    """A game with its builds: `versions` of one platform (`?platform=`, default MIST_DEFAULT_PLATFORM),
    `platforms` it has builds for, and `latest_by_platform`."""

    @extend_schema(operation_id="games_detail", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, slug: str) -> Response:
        platform = requested_platform(request)
        game = visible_game(request.user, slug)
        versions = visible_versions(request.user, game, platform).select_related("parent").order_by("seq")
        latest = latest_visible_version(request.user, game, platform)
        platforms = visible_platforms(request.user, game)
        latest_by_platform = {}
        for other in platforms:
            found = latest if other == platform else latest_visible_version(request.user, game, other)
            latest_by_platform[other] = found.name if found else None
        return Response({
            "slug": game.slug,
            "title": game.title,
            "description": game.description,
            "header_image_url": _header_image_url(game),
            "is_private": game.is_private,
            "platform": platform,
            "platforms": platforms,
            "latest_by_platform": latest_by_platform,
            "latest_version": latest.name if latest else None,
            "versions": [_version_data(v) for v in versions],
        })


class ManifestView(APIView):
    """A version's manifest, byte for byte the mistcore format the patcher verifies against."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, slug: str, version: str) -> HttpResponse:
        game = visible_game(request.user, slug)
        v = visible_version(request.user, game, version, requested_platform(request))
        response = HttpResponse(cached_manifest(version=v).to_json(), content_type="application/json")
        response["X-Mist-Content-Hash"] = v.content_hash
        response["X-Mist-Platform"] = v.platform
        return response


class LaunchOptionsView(APIView):
    """How to start this version's build: its usable launch options (the first is the default) and those
    that do not fit this build (their executable or folder is not part of it), with the reason."""

    @extend_schema(operation_id="games_launch_options", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, slug: str, version: str) -> Response:
        game = visible_game(request.user, slug)
        v = visible_version(request.user, game, version, requested_platform(request))
        usable, unusable = launch.options_for(version=v, manifest=cached_manifest(version=v))
        return Response({"game": game.slug, "version": v.name, "platform": v.platform, "options": usable,
                         "unusable": unusable})


# --- Remote push (admin scope) --------------------------------------------------------------


class UploadCreate(serializers.Serializer):
    game = serializers.SlugField()
    version = serializers.CharField(max_length=64)
    platform = serializers.ChoiceField(choices=list(PLATFORMS), required=False)
    filename = serializers.CharField(max_length=255)
    total_size = serializers.IntegerField(min_value=1)
    sha256 = serializers.RegexField(r"^[0-9a-f]{64}$", required=False, allow_blank=True)
    notes = serializers.CharField(required=False, allow_blank=True, default="")
    manifest = serializers.JSONField(required=False, default=None,
                                     help_text="The whole build's manifest: the upload then holds only the files "
                                               "`builds/uploads/plan` listed as needed")
    layout = serializers.ChoiceField(choices=["files", "rdiff"], required=False, default="files",
                                     help_text="`rdiff`: the upload is a mistcore indirect bundle, the files the plan "
                                               "listed under `rdiff` as librsync deltas against "
                                               "`builds/uploads/signatures`")


def _admin_permission() -> list[Any]:
    return [IsAdminScope()]


class UploadListView(APIView):
    def get_permissions(self) -> list[Any]:
        return _admin_permission()

    @extend_schema(request=UploadCreate, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = UploadCreate(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            session = uploads.start_upload(user=request.user, **data.validated_data)
        except BuildError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(session.as_dict(), status=status.HTTP_201_CREATED)


class UploadDetailView(APIView):
    def get_permissions(self) -> list[Any]:
        return _admin_permission()

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, upload_id: str) -> Response:
        return Response(uploads.get_upload(upload_id=upload_id).as_dict())

    @extend_schema(request=OpenApiTypes.BINARY, responses={200: OpenApiTypes.OBJECT})
    def put(self, request: Request, upload_id: str) -> Response:
        session = uploads.get_upload(upload_id=upload_id)
        try:
            session = uploads.write_chunk(
                # DRF gives no stream for an empty body: an empty chunk is a short chunk, not a crash.
                session=session, content_range=request.headers.get("Content-Range", ""),
                body=request.stream or io.BytesIO(), chunk_sha256=request.headers.get("X-Mist-Chunk-SHA256", ""),
            )
        except uploads.RangeMismatch as exc:
            return Response({"detail": str(exc), "received": exc.received}, status=status.HTTP_409_CONFLICT)
        except uploads.UploadBusy as exc:
            return Response({"detail": str(exc), "status": exc.state}, status=status.HTTP_409_CONFLICT)
        except BuildError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(session.as_dict())


class UploadFinalizeView(APIView):
    def get_permissions(self) -> list[Any]:
        return _admin_permission()

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT})
    def post(self, request: Request, upload_id: str) -> Response:
        session = uploads.get_upload(upload_id=upload_id)
        try:
            result = uploads.finalize_upload(session=session, user=request.user)
        except PushBlocked as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except uploads.UploadBusy as exc:
            return Response({"detail": str(exc), "status": exc.state}, status=status.HTTP_409_CONFLICT)
        except BuildError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            {"version": _version_data(result.version), "queued": [f"{j.kind} {j.key}" for j in result.queued]},
            status=status.HTTP_202_ACCEPTED,
        )


# --- The admin's remote CLI (`mist-patcher admin ...`, admin scope) ------------------------------------


class PushPlanRequest(serializers.Serializer):
    game = serializers.SlugField()
    platform = serializers.ChoiceField(choices=list(PLATFORMS), required=False)
    manifest = serializers.JSONField()


class PushPlanView(APIView):
    """Which files of a new build the server lacks: the client then uploads only those (a .tar.zst) with the
    manifest (`POST builds/uploads` with `manifest`), and finalize takes the rest from `basis_version`."""

    def get_permissions(self) -> list[Any]:
        return _admin_permission()

    @extend_schema(operation_id="builds_push_plan", request=PushPlanRequest, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = PushPlanRequest(data=request.data)
        data.is_valid(raise_exception=True)
        game = Game.objects.filter(slug=data.validated_data["game"]).first()
        if game is None:
            return Response({"detail": f"no game {data.validated_data['game']!r}: create it first"},
                            status=status.HTTP_404_NOT_FOUND)
        try:
            platform = platform_or_default(data.validated_data.get("platform"))
            manifest = partial.parse_manifest(data.validated_data["manifest"])
        except (BuildError, PlatformError) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(partial.plan_push(game=game, platform=platform, manifest=manifest).to_dict())


class GameCreate(serializers.Serializer):
    slug = serializers.SlugField(max_length=64)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    app_id = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)
    private = serializers.BooleanField(required=False, default=False)


class AdminGameCreateView(APIView):
    """Create a game (like `manage.py new_game`); with a Steam app id its details are fetched."""

    def get_permissions(self) -> list[Any]:
        return _admin_permission()

    @extend_schema(operation_id="admin_games_create", request=GameCreate, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = GameCreate(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        if Game.objects.filter(slug=d["slug"]).exists():
            return Response({"detail": f"a game with slug {d['slug']!r} already exists"}, status=status.HTTP_409_CONFLICT)
        try:
            game = catalog_services.create_game(slug=d["slug"], title=d["title"], app_id=d["app_id"],
                                                is_private=d["private"])
        except catalog_services.CatalogError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"slug": game.slug, "title": game.title, "is_private": game.is_private,
                         "app_id": game.app_id, "steam_error": game.steam_error}, status=status.HTTP_201_CREATED)


class AdminResyncView(APIView):
    """Fetch the game's Steam details again (like `manage.py resync_steam`): `{slug, ok, message}`."""

    def get_permissions(self) -> list[Any]:
        return _admin_permission()

    @extend_schema(operation_id="admin_games_resync", request=None, responses={200: OpenApiTypes.OBJECT})
    def post(self, request: Request, slug: str) -> Response:
        game = Game.objects.filter(slug=slug).first()
        if game is None:
            return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
        result = catalog_services.resync_steam(game=game)
        # Steam being down is an outcome to report, not a failure of this server: 200 with ok false.
        return Response({"slug": slug, "ok": result.ok, "message": result.message})


class PushSignaturesRequest(serializers.Serializer):
    game = serializers.SlugField()
    platform = serializers.ChoiceField(choices=list(PLATFORMS), required=False)
    basis_version = serializers.CharField(max_length=64)
    paths = serializers.ListField(child=serializers.CharField(max_length=4096), allow_empty=False, max_length=100_000)


class PushSignaturesView(APIView):
    """The librsync signatures of the server's copies of some files of a build (a mistcore signature set, an
    uncompressed tar): the admin's client diffs its large changed files against them and uploads the deltas."""

    def get_permissions(self) -> list[Any]:
        return _admin_permission()

    @extend_schema(operation_id="builds_push_signatures", request=PushSignaturesRequest,
                   responses={(200, "application/x-tar"): OpenApiTypes.BINARY})
    def post(self, request: Request) -> HttpResponseBase:
        data = PushSignaturesRequest(data=request.data)
        data.is_valid(raise_exception=True)
        game = Game.objects.filter(slug=data.validated_data["game"]).first()
        if game is None:
            return Response({"detail": f"no game {data.validated_data['game']!r}"}, status=status.HTTP_404_NOT_FOUND)
        folder = storage.storage_root() / "uploads"
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f".signatures-{secrets.token_hex(8)}.tar"
        try:
            platform = platform_or_default(data.validated_data.get("platform"))
            partial.basis_signatures(game=game, platform=platform, basis_version=data.validated_data["basis_version"],
                                     paths=data.validated_data["paths"], out=out)
            handle = open(out, "rb")  # noqa: SIM115 - FileResponse closes it
        except (BuildError, PlatformError, MistCoreError) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        finally:
            out.unlink(missing_ok=True)  # the open handle keeps the bytes until the response is sent
        return FileResponse(handle, content_type="application/x-tar")
