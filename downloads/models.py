"""Downloads: full-version archives and the record of every download served."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from builds.models import Version


class FullArchive(models.Model):
    """A `.tar.zst` of one whole version, under MIST_CACHE_ROOT (see builds.CacheEntry)."""

    version = models.OneToOneField(Version, on_delete=models.CASCADE, related_name="archive")
    relpath = models.CharField(max_length=500, help_text="Relative to MIST_CACHE_ROOT")
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"archive of {self.version}"


class DownloadRecord(models.Model):
    """One response that served bytes of an artifact: who, what, how much, whether it finished."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=16)
    artifact = models.CharField(max_length=500, help_text="What was served, e.g. archive:game/1.0")
    game_slug = models.CharField(max_length=64, blank=True)
    platform = models.CharField(max_length=16, blank=True, help_text="The platform of the build served")
    size = models.BigIntegerField(default=0, help_text="Size of the whole artifact")
    range_start = models.BigIntegerField(default=0)
    bytes_requested = models.BigIntegerField(default=0)
    bytes_served = models.BigIntegerField(default=0)
    completed = models.BooleanField(default=False)
    via_accel = models.BooleanField(default=False)
    client = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.user} {self.artifact}"


class PlaySession(models.Model):
    """One time a friend played a game, as their patcher reported it (idempotent by the patcher's id)."""

    id = models.UUIDField(primary_key=True, help_text="Chosen by the patcher: a report sent twice counts once")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="play_sessions")
    game = models.ForeignKey("catalog.Game", on_delete=models.CASCADE, related_name="play_sessions")
    version_name = models.CharField(max_length=64, blank=True)
    platform = models.CharField(max_length=16, blank=True)
    option = models.CharField(max_length=64, blank=True, help_text="The launch option used")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField()
    seconds = models.PositiveIntegerField()
    exit_code = models.IntegerField(null=True, blank=True, help_text="Empty when the patcher was killed during play")
    reported_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["user", "game"], name="playsession_user_game")]

    def __str__(self) -> str:
        return f"{self.user_id} played {self.game_id} for {self.seconds}s"
