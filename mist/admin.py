"""The admin portal: games (versions inline, grants, Steam), versions, jobs, and a dashboard.

Every action is a thin door onto a service (catalog, builds, deltas, downloads), the same services
the API and the commands use. Steam problems never break a save: they become admin messages.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path
from django.utils import timezone
from django.utils.html import format_html
from django_q.models import Failure, OrmQ

from builds import objectstore
from builds import services as build_services
from builds.admin import JobAdmin
from builds.launch import validate_option
from builds.manifest_cache import cached_manifest
from builds.models import CacheEntry, Job, LaunchOption, Version
from builds.services import game_platforms, latest_version
from catalog import services as catalog_services
from catalog.models import Game, GameGrant
from deltas import services as delta_services
from deltas.models import DirectDelta
from downloads import services as download_services
from downloads.playtime import format_duration, totals_per_game
from mist.store.views import header_url
from mistcore.launch import LaunchConfigError


def _size(value: int | None) -> str:
    return filesizeformat(value) if value else "—"


def _delta_of(version_ref: Any, field: str) -> Subquery:
    return Subquery(DirectDelta.objects.filter(to_version=version_ref).values(field)[:1])


def _with_sizes(queryset: QuerySet[Version]) -> QuerySet[Version]:
    """Versions with their delta's status/size/error and archive size, in the same query (no N+1)."""
    return queryset.select_related("game", "parent", "archive").annotate(
        delta_status=_delta_of(OuterRef("pk"), "status"),
        delta_size=_delta_of(OuterRef("pk"), "download_size"),
        delta_error=_delta_of(OuterRef("pk"), "error"),
    )


class VersionSizesMixin:
    """Read-only columns shared by the inline and the version list."""

    @admin.display(description="size")
    def size(self, obj: Version) -> str:
        return _size(obj.total_size)

    @admin.display(description="update (delta)")
    def delta(self, obj: Version) -> str:
        if obj.parent_id is None:
            return "base version"
        status = getattr(obj, "delta_status", None)
        size = obj.update_size or getattr(obj, "delta_size", None)
        if status is None:
            return "no delta yet"
        if status == DirectDelta.Status.READY:
            return f"{_size(size)} from {obj.parent.name if obj.parent else '?'}"
        error = getattr(obj, "delta_error", "") or ""
        return f"{status}{': ' + error[:120] if error else ''}"

    @admin.display(description="full archive")
    def archive_size(self, obj: Version) -> str:
        archive = getattr(obj, "archive", None)
        return _size(archive.size) if archive else "not built"

    @admin.display(description="error")
    def short_error(self, obj: Version) -> str:
        return (obj.error or "")[:200]


class VersionInline(VersionSizesMixin, admin.TabularInline):
    """Versions come from pushes only: read-only here, with their processing state and sizes."""

    model = Version
    fk_name = "game"
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("platform", "-seq")
    fields = ("name", "platform", "status", "published", "size", "delta", "archive_size", "file_count", "created_at",
              "short_error")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Version]:
        return _with_sizes(super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class GameGrantInline(admin.TabularInline):
    model = GameGrant
    fk_name = "game"
    extra = 0
    fields = ("user", "granted_by", "created_at")
    readonly_fields = ("granted_by", "created_at")
    verbose_name = "grant (who may see this private game)"


class GrantAccessForm(forms.Form):
    users = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="They will see the selected games in the store, even the private ones.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["users"].queryset = get_user_model().objects.filter(is_active=True).order_by("username")


class LaunchOptionForm(forms.ModelForm):
    """Checked with mistcore.launch's rules, and against the latest build of that platform when there is one
    (the patcher checks again against the build it has installed)."""

    class Meta:
        model = LaunchOption
        fields = ("platform", "name", "executable", "arguments", "working_dir", "env", "position")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        game = getattr(self.instance, "game", None) if self.instance.game_id else None
        if self.errors or not data.get("executable"):
            return data
        latest = latest_version(game=game, platform=data["platform"]) if game is not None else None
        manifest = cached_manifest(version=latest) if latest is not None else None
        try:
            validate_option({"name": data.get("name") or "Play", "executable": data["executable"],
                             "arguments": data.get("arguments") or [], "working_dir": data.get("working_dir") or "",
                             "env": data.get("env") or {}}, manifest=manifest)
        except LaunchConfigError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data


class LaunchOptionInline(admin.TabularInline):
    model = LaunchOption
    form = LaunchOptionForm
    extra = 0
    verbose_name = "launch option"
    verbose_name_plural = "launch options (what the patcher's Play button starts; a build's mist-launch.json sets them too)"


@admin.register(Game)
class GameAdmin(admin.ModelAdmin):
    list_display = ("title", "slug", "app_id", "is_private", "latest", "version_count", "steam_state", "updated_at")
    list_filter = ("is_private",)
    list_per_page = 50  # admin rows are costly to render (~2 ms each); 50 keeps the list fast
    search_fields = ("title", "slug", "steam_name")
    prepopulated_fields = {"slug": ("title",)}
    readonly_fields = ("steam_name", "steam_description", "steam_header_url", "steam_fetched_at", "steam_error",
                       "header_preview", "header_image_cached")
    fieldsets = (
        (None, {"fields": ("title", "slug", "app_id", "is_private")}),
        ("Shown in the store (overrides win over Steam where set)",
         {"fields": ("description_override", "header_image_override", "header_preview")}),
        ("Fetched from Steam", {"fields": ("steam_name", "steam_description", "steam_header_url",
                                           "steam_fetched_at", "steam_error", "header_image_cached")}),
    )
    inlines = [VersionInline, LaunchOptionInline, GameGrantInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = ["resync_from_steam", "rebuild_latest_archive", "regenerate_latest_delta", "grant_access"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Game]:
        latest = Version.objects.filter(game=OuterRef("pk")).order_by("-created_at", "-pk")
        return super().get_queryset(request).annotate(
            latest_name=Subquery(latest.values("name")[:1]),
            latest_status=Subquery(latest.values("status")[:1]),
            n_versions=Count("versions", distinct=True),
        )

    @admin.display(description="latest version", ordering="latest_name")
    def latest(self, obj: Game) -> str:
        name = getattr(obj, "latest_name", None)
        return f"{name} ({obj.latest_status})" if name else "—"  # type: ignore[attr-defined]

    @admin.display(description="versions", ordering="n_versions")
    def version_count(self, obj: Game) -> int:
        return getattr(obj, "n_versions", 0)

    @admin.display(description="Steam")
    def steam_state(self, obj: Game) -> str:
        if not obj.app_id:
            return "—"
        if obj.steam_error:
            return f"error: {obj.steam_error[:80]}"
        return f"fetched {timezone.localtime(obj.steam_fetched_at):%Y-%m-%d %H:%M}" if obj.steam_fetched_at else "never"

    @admin.display(description="header image in the store")
    def header_preview(self, obj: Game) -> str:
        url = header_url(obj) if obj.pk else ""
        if not url:
            return "none (the store shows a placeholder)"
        where = "cached copy" if obj.header_image_cached else "not cached yet: the store links the source"
        return format_html('<img src="{}" alt="" style="max-width:300px;border-radius:6px"><br>{}', url, where)

    def save_model(self, request: HttpRequest, obj: Game, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        result = catalog_services.sync_after_save(game=obj, changed_fields=form.changed_data, adding=not change)
        if result is None:
            return
        if result.ok:
            self.message_user(request, result.message, messages.SUCCESS)
        else:
            self.message_user(
                request,
                f"“{obj.title}” was saved, but: {result.message} Use the “Resync from Steam” action to try again.",
                messages.WARNING,
            )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is GameGrant:
            for grant_form in formset.forms:
                if grant_form.instance.pk is None:
                    grant_form.instance.granted_by = request.user
        super().save_formset(request, form, formset, change)

    # --- actions ---------------------------------------------------------------------------------------
    @admin.action(description="Resync from Steam (description, header image)")
    def resync_from_steam(self, request: HttpRequest, queryset: QuerySet[Game]) -> None:
        for game in queryset:
            result = catalog_services.resync_steam(game=game)
            level = messages.SUCCESS if result.ok else messages.WARNING
            self.message_user(request, f"{game.title}: {result.message}", level)

    @admin.action(description="Rebuild the full archive of the latest version (of each platform)")
    def rebuild_latest_archive(self, request: HttpRequest, queryset: QuerySet[Game]) -> None:
        versions = [v for g in queryset for p in game_platforms(game=g) if (v := _latest_ready(g, p)) is not None]
        _rebuild_archives(self, request, versions)

    @admin.action(description="Regenerate the direct delta of the latest version (of each platform)")
    def regenerate_latest_delta(self, request: HttpRequest, queryset: QuerySet[Game]) -> None:
        versions = [
            v for g in queryset for p in game_platforms(game=g) if (v := latest_version(game=g, platform=p)) is not None
        ]
        _regenerate_deltas(self, request, versions)

    @admin.action(description="Grant access to users…")
    def grant_access(self, request: HttpRequest, queryset: QuerySet[Game]) -> HttpResponse | None:
        """Intermediate page: choose users, then grant them every selected game."""
        if "apply" in request.POST:
            form = GrantAccessForm(request.POST)
            if form.is_valid():
                users = list(form.cleaned_data["users"])
                total = 0
                for game in queryset:
                    total += len(catalog_services.grant_access(game=game, users=users, granted_by=request.user))
                names = ", ".join(u.get_username() for u in users)
                self.message_user(
                    request, f"{total} new grant(s): {names} may now see {queryset.count()} game(s).",
                    messages.SUCCESS,
                )
                return None
        else:
            form = GrantAccessForm()
        context = {
            **self.admin_site.each_context(request),
            "title": "Grant access",
            "games": queryset,
            "form": form,
            "opts": self.model._meta,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "action": "grant_access",
        }
        return TemplateResponse(request, "admin/catalog/game/grant_access.html", context)


def _latest_ready(game: Game, platform: str) -> Version | None:
    return game.versions.filter(platform=platform, status=Version.Status.READY).order_by("-seq").first()


def _rebuild_archives(model_admin: admin.ModelAdmin, request: HttpRequest, versions: list[Version]) -> None:
    for version in versions:
        if version.status != Version.Status.READY:
            model_admin.message_user(request, f"{version}: not ready, no archive to build.", messages.WARNING)
            continue
        archive, job = download_services.request_archive(version=version, user=request.user)
        if archive is not None:
            model_admin.message_user(
                request, f"{version}: the archive is already built and intact ({_size(archive.size)}).",
                messages.INFO,
            )
        else:
            model_admin.message_user(request, f"{version}: archive build queued (job {job.pk if job else '?'}).",
                                     messages.SUCCESS)
    if not versions:
        model_admin.message_user(request, "No ready version selected.", messages.WARNING)


def _regenerate_deltas(model_admin: admin.ModelAdmin, request: HttpRequest, versions: list[Version]) -> None:
    for version in versions:
        try:
            job = delta_services.regenerate_direct_delta(to_version=version, user=request.user)
        except delta_services.DeltaError as exc:
            model_admin.message_user(request, f"{version}: {exc}", messages.WARNING)
        else:
            model_admin.message_user(request, f"{version}: delta queued (job {job.pk}).", messages.SUCCESS)
    if not versions:
        model_admin.message_user(request, "No version selected.", messages.WARNING)


@admin.register(GameGrant)
class GameGrantAdmin(admin.ModelAdmin):
    list_display = ("game", "user", "granted_by", "created_at")
    list_filter = ("game",)
    search_fields = ("game__title", "user__username")
    readonly_fields = ("granted_by", "created_at")

    def save_model(self, request: HttpRequest, obj: GameGrant, form: Any, change: bool) -> None:
        if obj.granted_by_id is None:
            obj.granted_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(Version)
class VersionAdmin(VersionSizesMixin, admin.ModelAdmin):
    """Versions are created by pushes; here the admin edits release notes and runs actions."""

    list_display = ("__str__", "platform", "status", "published", "size", "delta", "archive_size", "created_at")
    # No filter by game: with hundreds of games it is a wall of links; search by title instead.
    list_filter = ("platform", "status", "published")
    list_per_page = 50
    search_fields = ("game__title", "game__slug", "name")
    ordering = ("-created_at",)
    fields = ("game", "name", "platform", "seq", "parent", "status", "published", "notes", "size", "delta", "archive_size",
              "file_count", "error", "pushed_by", "created_at", "ready_at", "published_at", "announced_at")
    readonly_fields = tuple(f for f in fields if f != "notes")
    actions = ["publish", "unpublish", "rebuild_archive", "regenerate_delta"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Version]:
        return _with_sizes(super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions come from `manage.py push` or the upload API

    @admin.action(description="Publish selected versions")
    def publish(self, request: HttpRequest, queryset: QuerySet[Version]) -> None:
        for version in queryset:
            build_services.publish_version(version=version, published=True)
        self.message_user(request, f"{queryset.count()} version(s) published.", messages.SUCCESS)

    @admin.action(description="Unpublish selected versions (friends stop seeing them)")
    def unpublish(self, request: HttpRequest, queryset: QuerySet[Version]) -> None:
        for version in queryset:
            build_services.publish_version(version=version, published=False)
        self.message_user(request, f"{queryset.count()} version(s) unpublished.", messages.SUCCESS)

    @admin.action(description="Rebuild full archives")
    def rebuild_archive(self, request: HttpRequest, queryset: QuerySet[Version]) -> None:
        _rebuild_archives(self, request, list(queryset))

    @admin.action(description="Regenerate direct deltas")
    def regenerate_delta(self, request: HttpRequest, queryset: QuerySet[Version]) -> None:
        _regenerate_deltas(self, request, list(queryset))


# builds.admin.JobAdmin (with its retry action) is left unregistered by builds for this module to wire.
admin.site.register(Job, JobAdmin)


# --- Dashboard ---------------------------------------------------------------------------------------


def _disk(label: str, root: Path) -> dict[str, Any]:
    try:
        usage = shutil.disk_usage(root)
    except OSError as exc:
        return {"label": label, "path": str(root), "error": str(exc)}
    return {
        "label": label,
        "path": str(root),
        "total": usage.total,
        "used": usage.used,
        "free": usage.free,
        # Like df: space reserved for root counts as neither used nor available.
        "percent": round(100 * usage.used / (usage.used + usage.free), 1) if usage.used + usage.free else 0,
    }


def _bucket() -> dict[str, Any] | None:
    """MIST_STORAGE=s3: the bucket's objects and bytes under Mist's prefix (None on the filesystem backend)."""
    if not objectstore.enabled():
        return None
    where = f"{settings.MIST_S3_ENDPOINT_URL or 'AWS'} / {settings.MIST_S3_BUCKET}/{objectstore.prefix()}"
    try:
        return {"where": where, **objectstore.usage(), "incomplete": len(objectstore.incomplete_uploads())}
    except Exception as exc:  # noqa: BLE001 - the dashboard shows a bucket that does not answer, it does not fail
        return {"where": where, "error": str(exc)[:300]}


def dashboard_context() -> dict[str, Any]:
    """Storage, cache, queue and failure numbers for the admin dashboard (a fixed number of queries)."""
    since = timezone.now() - timedelta(days=1)
    cache = CacheEntry.objects.aggregate(
        entries=Count("pk"),
        used=Coalesce(Sum("size"), 0),
        pinned_size=Coalesce(Sum("size", filter=Q(pinned=True)), 0),
    )
    failed_jobs = Job.objects.filter(status=Job.Status.FAILED).filter(
        Q(finished_at__gte=since) | Q(finished_at=None, created_at__gte=since)
    )
    failures = Failure.objects.filter(stopped__gte=since)
    return {
        "disks": [
            _disk("Storage (MIST_STORAGE_ROOT)", Path(settings.MIST_STORAGE_ROOT)),
            _disk("Cache (MIST_CACHE_ROOT)", Path(settings.MIST_CACHE_ROOT)),
        ],
        "cache": {**cache, "budget": settings.MIST_CACHE_BUDGET_BYTES},
        "bucket": _bucket(),
        "queue_length": OrmQ.objects.count(),
        "active_jobs": Job.objects.active().count(),
        "failed_jobs_count": failed_jobs.count(),
        "failed_jobs": list(failed_jobs.select_related("game", "version")[:10]),
        "task_failures_count": failures.count(),
        "task_failures": list(failures.values("id", "name", "func", "stopped", "result")[:10]),
        "last_pushes": list(
            Version.objects.select_related("game", "pushed_by").order_by("-created_at")[:10]
        ),
        "since": since,
        "playtime": [{**row, "label": format_duration(row["seconds"])} for row in totals_per_game()[:20]],
    }


def dashboard_view(request: HttpRequest) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": "Dashboard", **dashboard_context()}
    return TemplateResponse(request, "admin/dashboard.html", context)


# The dashboard lives at /admin/dashboard/ inside the admin site (its login, permissions and look).
# The default site is used as is (no custom AdminSite class in settings), so its URL list is
# extended here; autodiscovery imports this module before the URLconf first reads `admin.site.urls`.
_site_get_urls = admin.site.get_urls


def _get_urls_with_dashboard() -> list[URLPattern | URLResolver]:
    return [path("dashboard/", admin.site.admin_view(dashboard_view), name="dashboard"), *_site_get_urls()]


admin.site.get_urls = _get_urls_with_dashboard  # type: ignore[method-assign]
admin.site.site_header = "Mist administration"
admin.site.site_title = "Mist admin"
admin.site.index_title = "Store, builds and friends"
