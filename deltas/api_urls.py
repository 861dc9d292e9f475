from django.urls import path

from deltas import api

urlpatterns = [
    path("games/<slug:slug>/updates", api.UpdatePlanView.as_view(), name="api-update-plan"),
    path("admin/games/<slug:slug>/versions/<str:version>", api.AdminVersionView.as_view(), name="api-admin-version"),
    path("admin/games/<slug:slug>/versions/<str:version>/delta-report", api.AdminDeltaReportView.as_view(),
         name="api-admin-delta-report"),
    path("games/<slug:slug>/indirect", api.IndirectRequestView.as_view(), name="api-indirect"),
]
