"""Top-level URL wiring: each app owns its URLs; this file only mounts them."""

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

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
    # Signed-in users only (a stranger is sent to the login page); the split view serves its init script as a
    # same-origin file, so the page runs under the Content-Security-Policy without inline script.
    path("api/docs/", login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")), name="api-docs"),
    path("dl/", include("downloads.urls")),
    path("accounts/", include("accounts.urls")),
    path("", include("mist.store.urls")),
]


def _not_found(request, exception=None):  # type: ignore[no-untyped-def]
    """API and download clients get JSON 404s; browsers get the HTML page."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith(("/api/", "/dl/")):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


handler404 = _not_found
