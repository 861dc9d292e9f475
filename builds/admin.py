from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from builds.jobs import retry_job
from builds.models import CacheEntry, Job, UploadSession


class JobAdmin(admin.ModelAdmin):
    """Registered in place of mist.admin's read-only one at integration (adds the retry action)."""

    list_display = ["kind", "key", "game", "version", "status", "attempts", "progress", "created_at", "finished_at"]
    list_filter = ["status", "kind"]
    search_fields = ["key", "error"]
    readonly_fields = [f.name for f in Job._meta.fields]
    actions = ["retry"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Retry the selected jobs")
    def retry(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            retry_job(job)
        self.message_user(request, f"{queryset.count()} job(s) queued again", messages.SUCCESS)


@admin.register(CacheEntry)
class CacheEntryAdmin(admin.ModelAdmin):
    list_display = ["key", "relpath", "size", "pinned", "last_used_at"]
    readonly_fields = [f.name for f in CacheEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Entries are made by the cache itself; an empty one (relpath "") would evict the whole cache root.
        return False


@admin.register(UploadSession)
class UploadSessionAdmin(admin.ModelAdmin):
    list_display = ["id", "game", "version_name", "received", "total_size", "status", "created_by", "updated_at"]
    readonly_fields = [f.name for f in UploadSession._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads are opened through the upload API
