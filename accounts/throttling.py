"""Brute-force protection: failed logins and pairing-code guesses counted in the database.

A username is locked after MIST_LOGIN_FAILURES_PER_USERNAME failures within the window, a client
address after MIST_LOGIN_FAILURES_PER_ADDRESS (password and pairing-code failures together). The
rows live in PostgreSQL, so every gunicorn worker shares the count. Two requests racing past the
check can each add one failure over the limit; that bounded overshoot is accepted rather than
serialising every login.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import LoginFailure

# Failure rows are kept this long at least (visible in the admin), then pruned.
_KEEP_AT_LEAST = timedelta(days=1)


@dataclass(frozen=True)
class LoginLimits:
    per_username: int
    per_address: int
    window: timedelta


class LoginThrottled(Exception):
    """Too many recent failures for this username or address; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed attempts; try again in {retry_after} seconds.")
        self.retry_after = retry_after


def login_limits() -> LoginLimits:
    return LoginLimits(
        per_username=int(getattr(settings, "MIST_LOGIN_FAILURES_PER_USERNAME", 5)),
        per_address=int(getattr(settings, "MIST_LOGIN_FAILURES_PER_ADDRESS", 20)),
        window=timedelta(seconds=int(getattr(settings, "MIST_LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60))),
    )


def normalise_username(username: str) -> str:
    return username.strip().lower()[:150]


def _retry_after(failures: QuerySet[LoginFailure], *, limit: int, window: timedelta, now: datetime) -> int | None:
    """Seconds until fewer than `limit` failures remain in the window, or None if under the limit."""
    recent = list(failures.filter(at__gt=now - window).order_by("-at").values_list("at", flat=True)[:limit])
    if len(recent) < limit:
        return None
    # The limit-th most recent failure leaving the window is what frees one attempt.
    return max(1, math.ceil((recent[limit - 1] + window - now).total_seconds()))


def check_allowed(*, username: str, address: str, now: datetime | None = None) -> None:
    """Raise LoginThrottled if this username or address has failed too often recently."""
    now = now or timezone.now()
    limits = login_limits()
    waits = [
        _retry_after(LoginFailure.objects.filter(address=address), limit=limits.per_address,
                     window=limits.window, now=now),
    ]
    name = normalise_username(username)
    if name:
        waits.append(_retry_after(
            LoginFailure.objects.filter(username=name, kind=LoginFailure.Kind.PASSWORD),
            limit=limits.per_username, window=limits.window, now=now,
        ))
    blocking = [w for w in waits if w is not None]
    if blocking:
        raise LoginThrottled(max(blocking))


def record_failure(*, kind: str, username: str, address: str, now: datetime | None = None) -> None:
    """Count one failed attempt, and prune failures too old to matter."""
    now = now or timezone.now()
    LoginFailure.objects.create(kind=kind, username=normalise_username(username), address=address, at=now)
    LoginFailure.objects.filter(at__lt=now - max(login_limits().window, _KEEP_AT_LEAST)).delete()


def clear_failures(*, username: str) -> None:
    """Forget a username's failures after it logged in (its address's count stays)."""
    LoginFailure.objects.filter(username=normalise_username(username), kind=LoginFailure.Kind.PASSWORD).delete()
