from django.urls import path

from deltas import api

urlpatterns = [
    path("games/<slug:slug>/updates", api.UpdatePlanView.as_view(), name="api-update-plan"),
    path("games/<slug:slug>/indirect", api.IndirectRequestView.as_view(), name="api-indirect"),
]
