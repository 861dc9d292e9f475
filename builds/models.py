"""Builds: versions of a game, their files, worker jobs, cache accounting and upload sessions."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from catalog.models import Game
from catalog.platforms import Platform, default_platform


class VersionQuerySet(models.QuerySet["Version"]):
    def visible(self) -> VersionQuerySet:
        """What friends may see: ready and published."""
        return self.filter(status=Version.Status.READY, published=True)


class Version(models.Model):
    """One pushed build of a game for one platform.

    A version name ("1.2") holds at most one build per platform, each its own row: the builds of
    one platform form a linear history (parent -> child) in `seq` order, with their own deltas
    and archives, so a friend on one platform never needs another platform's bytes.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"

    game = models.ForeignKey(Game, on_delete=models.CASCADE, related_name="versions")
    name = models.CharField(max_length=64)
    platform = models.CharField(max_length=16, choices=Platform.choices, default=default_platform)
    seq = models.PositiveIntegerField(help_text="Position in the history of the game's builds for this platform (1 = base)")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    published = models.BooleanField(default=True)
    error = models.TextField(blank=True)
    notes = models.TextField(blank=True, help_text="Release notes")
    file_count = models.PositiveIntegerField(default=0)
    total_size = models.BigIntegerField(default=0)
    update_size = models.BigIntegerField(
        null=True, blank=True, help_text="Bytes of the direct update from the parent (set when its delta is made)"
    )
    content_hash = models.CharField(max_length=64, help_text="sha256 of the sorted file list")
    manifest_sha256 = models.CharField(max_length=64, blank=True)
    pushed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    announced_at = models.DateTimeField(null=True, blank=True)

    objects = VersionQuerySet.as_manager()

    class Meta:
        ordering = ["game", "platform", "seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["game", "platform", "name"], name="unique_version_name_per_game_platform"
            ),
            models.UniqueConstraint(fields=["game", "platform", "seq"], name="unique_version_seq_per_game_platform"),
        ]

    def __str__(self) -> str:
        return f"{self.game.slug} {self.name} ({self.platform})"

    @property
    def is_base(self) -> bool:
        return self.parent_id is None

    @property
    def is_visible(self) -> bool:
        return self.status == self.Status.READY and self.published

    def mark_failed(self, error: str) -> None:
        self.status = self.Status.FAILED
        self.error = error[:5000]
        self.save(update_fields=["status", "error"])


class FileEntry(models.Model):
    version = models.ForeignKey(Version, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    executable = models.BooleanField(default=False)

    class Meta:
        ordering = ["version", "path"]
        constraints = [models.UniqueConstraint(fields=["version", "path"], name="unique_path_per_version")]

    def __str__(self) -> str:
        return self.path


class JobQuerySet(models.QuerySet["Job"]):
    def active(self) -> JobQuerySet:
        return self.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING])


class Job(models.Model):
    """A unit of worker work with its own state, so re-delivered django-q2 tasks do nothing twice.

    `key` makes a job unique per piece of work ("direct:<from>:<to>", "archive:<version>"): asking
    for the same work again returns the existing job. Tasks claim the row with
    select_for_update (never skip_locked: a skipped row stays queued with no task) and count attempts themselves (django-q2 retries killed tasks
    forever without counting them).
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    class Kind(models.TextChoices):
        PROCESS_VERSION = "process_version"
        DIRECT_DELTA = "direct_delta"
        ARCHIVE = "archive"
        RECONSTRUCT = "reconstruct"
        INDIRECT = "indirect"
        ANNOUNCE = "announce"
        JUMP_DELTA = "jump_delta"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    key = models.CharField(max_length=200, unique=True)
    task = models.CharField(max_length=200, help_text="Dotted path of the django-q2 task that runs it")
    game = models.ForeignKey(Game, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    version = models.ForeignKey(Version, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "kind"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    def is_stale(self, *, after: timedelta) -> bool:
        """A running job whose worker stopped sending heartbeats (killed, OOM)."""
        beat = self.heartbeat_at or self.started_at
        return self.status == self.Status.RUNNING and (beat is None or timezone.now() - beat > after)


class CacheEntry(models.Model):
    """Something under MIST_CACHE_ROOT (an archive, a reconstructed version), for the LRU budget."""

    key = models.CharField(max_length=200, unique=True)
    relpath = models.CharField(max_length=500, help_text="Relative to MIST_CACHE_ROOT")
    size = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    pinned = models.BooleanField(default=False, help_text="Never evicted (e.g. the latest archive)")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "cache entries"

    def __str__(self) -> str:
        return self.key


class UploadSession(models.Model):
    """A resumable chunked upload of a build archive by an admin (remote push)."""

    class Status(models.TextChoices):
        OPEN = "open"
        FINALIZING = "finalizing"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    game = models.ForeignKey(Game, on_delete=models.CASCADE, related_name="+")
    version_name = models.CharField(max_length=64)
    platform = models.CharField(max_length=16, choices=Platform.choices, default=default_platform)
    filename = models.CharField(max_length=255)
    total_size = models.BigIntegerField()
    received = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, blank=True, help_text="Expected sha256 of the whole upload")
    notes = models.TextField(blank=True)
    # A push at patch size: the whole build's manifest (mistcore format); the upload then holds only the files
    # the server lacks, and the rest is taken from `basis_version`'s tree at finalize.
    manifest = models.TextField(blank=True)
    basis_version = models.CharField(max_length=64, blank=True)
    # How a push at patch size packs its upload: "files" (a .tar.zst of the needed files, whole) or "rdiff"
    # (a mistcore indirect bundle: large changed files as librsync deltas against the basis's copy).
    layout = models.CharField(max_length=16, choices=[("files", "files"), ("rdiff", "rdiff")], default="files")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    error = models.TextField(blank=True)
    version = models.ForeignKey(Version, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"upload {self.id} {self.game_id}/{self.version_name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "game": self.game.slug,
            "version": self.version_name,
            "platform": self.platform,
            "total_size": self.total_size,
            "received": self.received,
            "status": self.status,
            "error": self.error,
            "partial": bool(self.manifest),
            "basis_version": self.basis_version,
            "layout": self.layout,
        }


class LaunchOption(models.Model):
    """How the patcher starts a game's build on one platform ("Play", "Dedicated server", "Settings").

    Set in the admin or by a `mist-launch.json` at a pushed build's root (mistcore.launch has the format
    and the rules). The first option by `position` is the default.
    """

    game = models.ForeignKey(Game, on_delete=models.CASCADE, related_name="launch_options")
    platform = models.CharField(max_length=16, choices=Platform.choices, default=default_platform)
    name = models.CharField(max_length=64, default="Play")
    executable = models.CharField(max_length=1024, help_text="Path of the program inside the build, e.g. bin/game.exe")
    arguments = models.JSONField(default=list, blank=True, help_text='A JSON list of strings, e.g. ["-windowed"]')
    working_dir = models.CharField(max_length=1024, blank=True,
                                   help_text="Folder inside the build to start in (empty: the executable's folder)")
    env = models.JSONField(default=dict, blank=True, help_text='Extra environment variables, e.g. {"DXVK_HUD": "1"}')
    position = models.PositiveSmallIntegerField(default=0, help_text="The lowest is the default option")

    class Meta:
        ordering = ["game", "platform", "position", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["game", "platform", "name"], name="launchoption_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.game_id} {self.platform}: {self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "executable": self.executable, "arguments": list(self.arguments or []),
                "working_dir": self.working_dir, "env": dict(self.env or {})}
