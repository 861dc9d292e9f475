"""Admin: download records (read-only) and full archives (read-only, with a rebuild action)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from downloads import services
from downloads.models import DownloadRecord, FullArchive


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DownloadRecord)
class DownloadRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at", "user", "kind", "artifact", "range_start", "bytes_requested", "bytes_served",
        "size", "completed", "via_accel",
    )
    list_filter = ("kind", "completed", "via_accel", "game_slug")
    search_fields = ("artifact", "user__username", "client")
    date_hierarchy = "started_at"
    list_select_related = ("user",)


@admin.register(FullArchive)
class FullArchiveAdmin(ReadOnlyAdmin):
    list_display = ("version", "size", "sha256", "relpath", "created_at")
    search_fields = ("version__game__slug", "version__name", "sha256")
    list_select_related = ("version__game",)
    actions = ["rebuild"]

    @admin.action(description="Build the selected archives again")
    def rebuild(self, request: HttpRequest, queryset: QuerySet[FullArchive]) -> None:
        versions = [archive.version for archive in queryset.select_related("version__game")]
        queryset.delete()
        for version in versions:
            services.request_archive(version=version, user=request.user)
        self.message_user(request, f"Queued {len(versions)} archive build(s).", messages.SUCCESS)
