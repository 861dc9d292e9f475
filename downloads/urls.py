"""/dl/: one view for every downloadable artifact (see downloads.views.download).

Artifacts of a version name its platform (`/dl/archive/<slug>/<platform>/<version>`). The routes
without a platform segment are the ones from before platforms: they mean MIST_DEFAULT_PLATFORM,
so links handed out earlier keep working.
"""

from django.urls import path, register_converter

from downloads import views
from mistcore.platforms import PLATFORMS


class PlatformConverter:
    regex = "|".join(PLATFORMS)

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(PlatformConverter, "platform")

app_name = "downloads"

urlpatterns = [
    path("archive/<slug:slug>/<platform:platform>/<str:version>", views.download, {"kind": "archive"}, name="archive"),
    path("direct/<slug:slug>/<platform:platform>/<str:pair>", views.download, {"kind": "direct"}, name="direct"),
    path("indirect/<uuid:job_id>", views.download, {"kind": "indirect"}, name="indirect"),
    path(
        "file/<slug:slug>/<platform:platform>/<str:version>/<path:path>", views.download, {"kind": "file"}, name="file"
    ),
    # Before platforms (the default platform):
    path("archive/<slug:slug>/<str:version>", views.download, {"kind": "archive"}, name="archive-default"),
    path("direct/<slug:slug>/<str:pair>", views.download, {"kind": "direct"}, name="direct-default"),
    path("file/<slug:slug>/<str:version>/<path:path>", views.download, {"kind": "file"}, name="file-default"),
]
