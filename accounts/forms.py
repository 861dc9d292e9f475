"""Browser forms: the login form goes through the same throttled login service as the API."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm

from accounts import services
from accounts.addresses import client_address


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's login form, but counted, throttled, logged and audited by accounts.services."""

    retry_after: int | None = None
    channel = "form"

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is not None and password:
            try:
                self.user_cache = services.login_with_password(
                    request=self.request, username=username, password=password,
                    address=client_address(self.request) if self.request is not None else "", channel=self.channel,
                )
            except services.LoginThrottled as exc:
                self.retry_after = exc.retry_after
                minutes = max(1, round(exc.retry_after / 60))
                raise forms.ValidationError(
                    "Too many failed sign-in attempts. Try again in %(minutes)d minute(s).",
                    code="throttled", params={"minutes": minutes},
                ) from exc
            except services.InvalidCredentials as exc:
                raise self.get_invalid_login_error() from exc
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class ThrottledAdminAuthenticationForm(ThrottledAuthenticationForm, AdminAuthenticationForm):
    """The admin site's login form (staff only), through the same throttle."""

    channel = "admin"


class DeviceRenameForm(forms.Form):
    name = forms.CharField(max_length=100, label="Device name")
