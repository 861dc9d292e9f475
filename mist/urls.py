"""Top-level URL wiring: each app owns its URLs; this file only mounts them."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from mist import health

api_v1 = [
    path("auth/", include("accounts.api_urls")),
    path("", include("builds.api_urls")),
    path("", include("deltas.api_urls")),
    path("", include("downloads.api_urls")),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("dl/", include("downloads.urls")),
    path("accounts/", include("accounts.urls")),
    path("", include("mist.store.urls")),
]
