"""Browser pages for friends: sign in/out, password change, and the account page with devices."""

from __future__ import annotations

import uuid
from typing import cast

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordChangeForm
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_GET, require_POST

from accounts import services
from accounts.forms import DeviceRenameForm, ThrottledAuthenticationForm
from accounts.models import Device, User


class LoginView(auth_views.LoginView):
    form_class = ThrottledAuthenticationForm
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def form_invalid(self, form: ThrottledAuthenticationForm) -> HttpResponse:  # type: ignore[override]
        response = super().form_invalid(form)
        if form.retry_after is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.retry_after)
        return response


class PasswordChangeView(auth_views.PasswordChangeView):
    form_class = PasswordChangeForm
    template_name = "registration/password_change_form.html"
    success_url = reverse_lazy("account")

    def form_valid(self, form: PasswordChangeForm) -> HttpResponse:
        response = super().form_valid(form)
        messages.success(self.request, "Your password was changed. Patchers signed in with it must sign in again.")
        return response


def _devices_of(request: HttpRequest) -> QuerySet[Device]:
    """The signed-in user's live devices (every view here is login_required)."""
    return Device.objects.active().filter(user=cast(User, request.user))


def _render_account(request: HttpRequest, *, pairing: services.IssuedPairingCode | None = None,
                    status: int = 200) -> HttpResponse:
    devices = _devices_of(request).order_by("-created_at")
    return render(request, "accounts/account.html", {"devices": devices, "pairing": pairing}, status=status)


@login_required
@require_GET
def account(request: HttpRequest) -> HttpResponse:
    return _render_account(request)


@login_required
@require_POST
def pair_device(request: HttpRequest) -> HttpResponse:
    """Show a fresh pairing code (once: only its hash is stored)."""
    return _render_account(request, pairing=services.create_pairing_code(user=request.user))


def _own_device(request: HttpRequest, device_id: uuid.UUID) -> Device:
    # Someone else's device, or a revoked one, answers 404 like a device that does not exist.
    return get_object_or_404(_devices_of(request), pk=device_id)


@login_required
@require_POST
def rename_device(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    device = _own_device(request, device_id)
    form = DeviceRenameForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A device name is 1 to 100 characters.")
        return _render_account(request, status=400)
    services.rename_device(device=device, name=form.cleaned_data["name"], actor=request.user)
    messages.success(request, f"Renamed to “{device.name}”.")
    return redirect("account")


@login_required
@require_POST
def revoke_device(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    device = _own_device(request, device_id)
    services.revoke_device(device=device, actor=request.user)
    messages.success(request, f"“{device.name}” was unpaired; it must be paired again to download.")
    return redirect("account")
