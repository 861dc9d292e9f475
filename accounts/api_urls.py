"""Mounted at /api/v1/auth/ by mist/urls.py."""

from django.urls import path

from accounts import api

urlpatterns = [
    path("token", api.TokenView.as_view(), name="api-token"),
    path("token/refresh", api.TokenRefreshView.as_view(), name="api-token-refresh"),
    path("logout", api.LogoutView.as_view(), name="api-logout"),
    path("devices/redeem", api.DeviceRedeemView.as_view(), name="api-device-redeem"),
]
