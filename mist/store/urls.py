from django.urls import path

from mist.store import views

app_name = "store"
urlpatterns = [
    path("", views.library, name="library"),
]
