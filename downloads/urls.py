"""/dl/: one view for every downloadable artifact (see downloads.views.download)."""

from django.urls import path

from downloads import views

app_name = "downloads"

urlpatterns = [
    path("archive/<slug:slug>/<str:version>", views.download, {"kind": "archive"}, name="archive"),
    path("direct/<slug:slug>/<str:pair>", views.download, {"kind": "direct"}, name="direct"),
    path("indirect/<uuid:job_id>", views.download, {"kind": "indirect"}, name="indirect"),
    path("file/<slug:slug>/<str:version>/<path:path>", views.download, {"kind": "file"}, name="file"),
]
