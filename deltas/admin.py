from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from deltas.models import DirectDelta
from deltas.services import regenerate_direct_delta


@admin.register(DirectDelta)
class DirectDeltaAdmin(admin.ModelAdmin):
    list_display = ["__str__", "status", "download_size", "bundle_size", "op_counts", "ready_at"]
    list_filter = ["status"]
    readonly_fields = [f.name for f in DirectDelta._meta.fields]
    actions = ["regenerate"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Regenerate the selected deltas")
    def regenerate(self, request: HttpRequest, queryset: QuerySet[DirectDelta]) -> None:
        for delta in queryset.select_related("to_version"):
            regenerate_direct_delta(to_version=delta.to_version, user=request.user)
        self.message_user(request, f"{queryset.count()} delta job(s) queued", messages.SUCCESS)
