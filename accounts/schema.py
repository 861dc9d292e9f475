"""OpenAPI: describe MistJWTAuthentication as the Bearer JWT scheme it is (drf-spectacular)."""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class MistJWTScheme(SimpleJWTScheme):
    target_class = "accounts.authentication.MistJWTAuthentication"
    name = "jwtAuth"
