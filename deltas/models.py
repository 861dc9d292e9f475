"""Deltas: the direct (consecutive-version) patch sets made by the worker after each push."""

from __future__ import annotations

from django.db import models

from builds.models import Version


class DirectDelta(models.Model):
    """The patch set `deltas/<from>__<to>/` and its downloadable `.tar.zst` bundle."""

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"

    from_version = models.ForeignKey(Version, on_delete=models.CASCADE, related_name="deltas_out")
    to_version = models.ForeignKey(Version, on_delete=models.CASCADE, related_name="deltas_in")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    download_size = models.BigIntegerField(default=0, help_text="Sum of patch and new-file blobs")
    bundle_size = models.BigIntegerField(default=0)
    bundle_sha256 = models.CharField(max_length=64, blank=True)
    manifest_sha256 = models.CharField(max_length=64, blank=True)
    op_counts = models.JSONField(default=dict, blank=True)
    report = models.JSONField(default=list, blank=True, help_text="Per-file patch efficiency")
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["from_version", "to_version"], name="unique_direct_delta")
        ]

    def __str__(self) -> str:
        return f"{self.from_version} -> {self.to_version.name}"

    @property
    def dirname(self) -> str:
        return f"{self.from_version.name}__{self.to_version.name}"


class JumpDelta(models.Model):
    """A direct delta between two versions that are not parent and child (a jump of several versions, or
    backwards), made by the worker on the first request with the push-time engines and cached under
    MIST_CACHE_BUDGET_BYTES (`jumps/<slug>/<platform>/<from>__<to>.tar.zst`); every friend making the same
    jump then downloads it without any work."""

    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"

    from_version = models.ForeignKey(Version, on_delete=models.CASCADE, related_name="+")
    to_version = models.ForeignKey(Version, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    bundle_size = models.BigIntegerField(default=0)
    bundle_sha256 = models.CharField(max_length=64, blank=True)
    seconds = models.FloatField(default=0.0, help_text="Time the worker took to make it")
    created_at = models.DateTimeField(auto_now_add=True)
    ready_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["from_version", "to_version"], name="unique_jump_delta")]

    def __str__(self) -> str:
        return f"jump {self.from_version} -> {self.to_version.name}"

    @property
    def cache_key(self) -> str:
        return f"jump:{self.from_version_id}:{self.to_version_id}"
