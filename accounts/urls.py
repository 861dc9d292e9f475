"""Browser pages, mounted at /accounts/ by mist/urls.py."""

from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

urlpatterns = [
    path("", views.account, name="account"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", views.PasswordChangeView.as_view(), name="password_change"),
    path("devices/pair", views.pair_device, name="account-pair"),
    path("devices/<uuid:device_id>/rename", views.rename_device, name="account-device-rename"),
    path("devices/<uuid:device_id>/revoke", views.revoke_device, name="account-device-revoke"),
]
