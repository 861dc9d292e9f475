"""The web store: server-rendered pages for friends."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from catalog.models import Game


@login_required
def library(request: HttpRequest) -> HttpResponse:
    games = Game.objects.visible_to(request.user)
    return render(request, "store/library.html", {"games": games})
