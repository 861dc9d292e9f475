"""Downloads API under /api/v1/ (no app_name: /dl/ owns the "downloads" namespace)."""

from django.urls import path

from downloads import api

urlpatterns = [
    path("games/<slug:slug>/versions/<str:version>/archive", api.ArchiveView.as_view(), name="api-archive"),
    path("playtime/sessions", api.PlaySessionsView.as_view(), name="api-playtime"),
    path("jobs/<str:job_id>", api.JobView.as_view(), name="api-job"),
]
