"""Accounts: friends and admins (created by the admin only), paired devices, login failures, audit log."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A Mist account. Staff users are admins (token scope `admin`); everyone else is a friend."""

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"

    @property
    def scope(self) -> str:
        return "admin" if self.is_staff else "user"


class DeviceQuerySet(models.QuerySet["Device"]):
    def active(self) -> DeviceQuerySet:
        """Devices whose tokens are still honoured."""
        return self.filter(revoked_at__isnull=True)


class Device(models.Model):
    """A patcher paired to an account with a pairing code; its tokens carry a `device` claim."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices")
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_seen_address = models.CharField(max_length=64, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = DeviceQuerySet.as_manager()

    class Meta:
        ordering = ["user", "-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class PairingCode(models.Model):
    """A short-lived, single-use code a friend types into the patcher; only its keyed hash is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pairing_codes")
    code_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    device = models.OneToOneField(
        Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="pairing_code"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"pairing code of {self.user} (expires {self.expires_at:%Y-%m-%d %H:%M})"

    def is_expired(self, *, now: datetime) -> bool:
        return now >= self.expires_at


class LoginFailure(models.Model):
    """One failed login (or pairing-code guess), counted per username and per client address.

    Kept in the database so every gunicorn worker sees the same count.
    """

    class Kind(models.TextChoices):
        PASSWORD = "password"
        PAIRING = "pairing"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PASSWORD)
    username = models.CharField(max_length=150, blank=True, help_text="Lower-cased; empty for pairing codes")
    address = models.CharField(max_length=64)
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at"]
        indexes = [
            models.Index(fields=["username", "at"], name="loginfailure_username_at"),
            models.Index(fields=["address", "at"], name="loginfailure_address_at"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} failure for {self.username or '-'} from {self.address} at {self.at:%Y-%m-%d %H:%M:%S}"


class AuditEntry(models.Model):
    """One security-relevant action. Append-only; each row hashes the previous row's hash + its content.

    Actor and target are denormalised (ids and names, no foreign keys) so that deleting a user or a
    game never rewrites a row, which would break the chain.
    """

    class Action(models.TextChoices):
        LOGIN_SUCCEEDED = "login.succeeded"
        LOGIN_FAILED = "login.failed"
        TOKEN_ISSUED = "token.issued"
        TOKEN_REVOKED = "token.revoked"
        TOKEN_REUSED = "token.reused"
        PAIRING_CODE_ISSUED = "pairing.code_issued"
        DEVICE_PAIRED = "device.paired"
        DEVICE_RENAMED = "device.renamed"
        DEVICE_REVOKED = "device.revoked"
        GRANT_CREATED = "grant.created"
        GRANT_DELETED = "grant.deleted"
        USER_CREATED = "user.created"
        USER_CHANGED = "user.changed"
        USER_PASSWORD_CHANGED = "user.password_changed"
        USER_DELETED = "user.deleted"

    at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=32, choices=Action.choices, db_index=True)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_username = models.CharField(max_length=150, blank=True)
    target_type = models.CharField(max_length=64, blank=True, help_text="app_label.model of the target")
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    data = models.JSONField(default=dict, blank=True)
    # The unique constraint on prev_hash makes a fork impossible even if serialisation failed.
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "audit entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        who = self.actor_username or "-"
        return f"#{self.pk} {self.at:%Y-%m-%d %H:%M:%S} {self.action} by {who} on {self.target_repr or '-'}"
