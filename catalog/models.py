"""Catalog: games, their Steam metadata with admin overrides, and private-game grants."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef, Q


class GameQuerySet(models.QuerySet["Game"]):
    def visible_to(self, user: Any) -> GameQuerySet:
        """Public games, plus private games granted to the user; admins see everything."""
        if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
            return self.none()
        if user.is_staff:
            return self.all()
        # EXISTS rather than a join + DISTINCT: keeps the query annotatable and paging cheap.
        granted = GameGrant.objects.filter(game=OuterRef("pk"), user=user)
        return self.filter(Q(is_private=False) | Q(Exists(granted)))

    def search(self, text: str) -> GameQuerySet:
        """Games whose title, Steam name or slug contains `text` (case-insensitive)."""
        text = text.strip()
        if not text:
            return self
        return self.filter(
            Q(title__icontains=text) | Q(steam_name__icontains=text) | Q(slug__icontains=text.replace(" ", "-"))
        )


class Game(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=200)
    app_id = models.PositiveIntegerField(null=True, blank=True, help_text="Steam app id, if any")
    is_private = models.BooleanField(default=False, help_text="Only admins and granted friends see it")

    # Fetched from Steam's appdetails (never edited by hand) ...
    steam_name = models.CharField(max_length=200, blank=True)
    steam_description = models.TextField(blank=True)
    steam_header_url = models.URLField(max_length=500, blank=True)
    steam_fetched_at = models.DateTimeField(null=True, blank=True)
    steam_error = models.CharField(max_length=500, blank=True)
    # ... and the admin's overrides, which win where set.
    description_override = models.TextField(blank=True)
    header_image_override = models.URLField(max_length=500, blank=True)
    # Local copy of the header image (relative to MEDIA_ROOT), so the store never depends on a CDN.
    header_image_cached = models.CharField(max_length=300, blank=True)
    # The source URL the cached copy was downloaded from: a changed source means a new download.
    header_image_cached_from = models.URLField(max_length=500, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = GameQuerySet.as_manager()

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    @property
    def description(self) -> str:
        return self.description_override or self.steam_description

    @property
    def header_image_source(self) -> str:
        return self.header_image_override or self.steam_header_url

    @property
    def header_image_cached_name(self) -> str:
        """File name of the local header copy (content-addressed, so its URL can be cached forever)."""
        return self.header_image_cached.rsplit("/", 1)[-1]


class GameGrant(models.Model):
    """An explicit grant of a private game to one friend."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="game_grants")
    game = models.ForeignKey(Game, on_delete=models.CASCADE, related_name="grants")
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "game"], name="unique_grant_per_user_game")]

    def __str__(self) -> str:
        return f"{self.user} -> {self.game}"
