"""Admin: accounts are created here (no public signup); devices are revoked here; the audit log is
read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from accounts import services
from accounts.forms import ThrottledAdminAuthenticationForm
from accounts.models import AuditEntry, Device, LoginFailure, User

# The admin's login page is a login form like any other: same throttle, log and audit, and a 429
# with Retry-After when throttled. (The default site is used; see mist/admin.py.)
admin.site.login_form = ThrottledAdminAuthenticationForm
_site_login = admin.site.login


def _throttled_admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    response = _site_login(request, extra_context)
    form = (getattr(response, "context_data", None) or {}).get("form")
    retry_after = getattr(form, "retry_after", None)
    if retry_after is not None:
        response.status_code = 429
        response["Retry-After"] = str(retry_after)
    return response


admin.site.login = _throttled_admin_login  # type: ignore[method-assign]


class DeviceInline(admin.TabularInline):
    model = Device
    extra = 0
    can_delete = False
    fields = ("name", "created_at", "last_seen_at", "last_seen_address", "revoked_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # devices are created by pairing only


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    inlines = [DeviceInline]
    list_display = ("username", "email", "is_staff", "is_active", "last_login")


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "created_at", "last_seen_at", "last_seen_address", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "user__username")
    fields = ("name", "user", "created_at", "last_seen_at", "last_seen_address", "revoked_at")
    readonly_fields = ("user", "created_at", "last_seen_at", "last_seen_address", "revoked_at")
    actions = ["revoke_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Device, form: Any, change: bool) -> None:
        if "name" in form.changed_data:
            services.rename_device(device=Device.objects.get(pk=obj.pk), name=obj.name, actor=request.user)

    @admin.action(description="Unpair (revoke) selected devices")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        count = 0
        for device in queryset.filter(revoked_at__isnull=True).select_related("user"):
            services.revoke_device(device=device, actor=request.user)
            count += 1
        self.message_user(request, f"{count} device(s) unpaired; their tokens are refused from now on.",
                          messages.SUCCESS)


@admin.register(LoginFailure)
class LoginFailureAdmin(admin.ModelAdmin):
    """Recent failed logins; deleting a username's rows unlocks it before the window ends."""

    list_display = ("at", "kind", "username", "address")
    list_filter = ("kind",)
    search_fields = ("username", "address")
    readonly_fields = ("at", "kind", "username", "address")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the log is append-only (`manage.py audit_verify` checks its hash chain)."""

    list_display = ("id", "at", "action", "actor_username", "target_repr", "short_hash")
    list_filter = ("action",)
    search_fields = ("actor_username", "target_repr", "target_id")
    date_hierarchy = "at"
    fields = ("at", "action", "actor_id", "actor_username", "target_type", "target_id", "target_repr",
              "data", "prev_hash", "hash")
    readonly_fields = fields

    @admin.display(description="hash")
    def short_hash(self, obj: AuditEntry) -> str:
        return obj.hash[:12]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
