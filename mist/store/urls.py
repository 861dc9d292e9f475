from django.urls import path

from mist.store import views

app_name = "store"
urlpatterns = [
    path("", views.library, name="library"),
    path("games/<slug:slug>/", views.game_detail, name="game"),
    path("games/<slug:slug>/header/<str:name>", views.header_image, name="header_image"),
    path("games/<slug:slug>/versions/<str:version>/archive", views.request_archive, name="request_archive"),
]
