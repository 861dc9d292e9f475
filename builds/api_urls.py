from django.urls import path

from builds import api

urlpatterns = [
    path("games", api.GameListView.as_view(), name="api-games"),
    path("games/<slug:slug>", api.GameDetailView.as_view(), name="api-game"),
    path("games/<slug:slug>/versions/<str:version>/manifest", api.ManifestView.as_view(), name="api-manifest"),
    path("games/<slug:slug>/versions/<str:version>/launch", api.LaunchOptionsView.as_view(), name="api-launch"),
    path("builds/uploads/plan", api.PushPlanView.as_view(), name="api-push-plan"),
    path("builds/uploads/signatures", api.PushSignaturesView.as_view(), name="api-push-signatures"),
    path("admin/games", api.AdminGameCreateView.as_view(), name="api-admin-games"),
    path("admin/games/<slug:slug>/resync", api.AdminResyncView.as_view(), name="api-admin-resync"),
    path("builds/uploads", api.UploadListView.as_view(), name="api-uploads"),
    path("builds/uploads/<uuid:upload_id>", api.UploadDetailView.as_view(), name="api-upload"),
    path("builds/uploads/<uuid:upload_id>/finalize", api.UploadFinalizeView.as_view(), name="api-upload-finalize"),
]
