"""Brute-force protection: failed logins and pairing-code guesses counted in the database.

The rule (so that a stranger can slow down guessing but never lock the owner out):

- a (username, address) pair is locked after MIST_LOGIN_FAILURES_PER_USERNAME_ADDRESS (5) password
  failures within MIST_LOGIN_FAILURE_WINDOW_SECONDS (15 min);
- a client address after MIST_LOGIN_FAILURES_PER_ADDRESS (20) failures in that window, password and
  pairing-code failures together, whatever the usernames;
- a username after MIST_LOGIN_FAILURES_PER_USERNAME (50) failures from all addresses within
  MIST_LOGIN_USERNAME_WINDOW_SECONDS (1 h), the slow global limit against many addresses; it holds only
  for addresses that failed in that hour, so the owner signing in from an address that never failed
  still gets in.

A success clears that (username, address) pair's failures, never the global count. The rows live in
PostgreSQL, so every gunicorn worker shares the count. Two requests racing past the
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
    per_username_address: int
    per_address: int
    window: timedelta
    per_username: int
    username_window: timedelta


class LoginThrottled(Exception):
    """Too many recent failures for this username or address; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed attempts; try again in {retry_after} seconds.")
        self.retry_after = retry_after


def login_limits() -> LoginLimits:
    return LoginLimits(
        per_username_address=int(getattr(settings, "MIST_LOGIN_FAILURES_PER_USERNAME_ADDRESS", 5)),
        per_address=int(getattr(settings, "MIST_LOGIN_FAILURES_PER_ADDRESS", 20)),
        window=timedelta(seconds=int(getattr(settings, "MIST_LOGIN_FAILURE_WINDOW_SECONDS", 15 * 60))),
        per_username=int(getattr(settings, "MIST_LOGIN_FAILURES_PER_USERNAME", 50)),
        username_window=timedelta(seconds=int(getattr(settings, "MIST_LOGIN_USERNAME_WINDOW_SECONDS", 3600))),
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
    """Raise LoginThrottled if this address, this (username, address) pair, or (for an address that has
    failed recently) this username has failed too often."""
    now = now or timezone.now()
    limits = login_limits()
    waits = [
        _retry_after(LoginFailure.objects.filter(address=address), limit=limits.per_address,
                     window=limits.window, now=now),
    ]
    name = normalise_username(username)
    if name:
        passwords = LoginFailure.objects.filter(username=name, kind=LoginFailure.Kind.PASSWORD)
        waits.append(_retry_after(passwords.filter(address=address), limit=limits.per_username_address,
                                  window=limits.window, now=now))
        if LoginFailure.objects.filter(address=address, at__gt=now - limits.username_window).exists():
            waits.append(_retry_after(passwords, limit=limits.per_username, window=limits.username_window, now=now))
    blocking = [w for w in waits if w is not None]
    if blocking:
        raise LoginThrottled(max(blocking))


def record_failure(*, kind: str, username: str, address: str, now: datetime | None = None) -> None:
    """Count one failed attempt, and prune failures too old to matter."""
    now = now or timezone.now()
    LoginFailure.objects.create(kind=kind, username=normalise_username(username), address=address, at=now)
    limits = login_limits()
    LoginFailure.objects.filter(at__lt=now - max(limits.window, limits.username_window, _KEEP_AT_LEAST)).delete()


def clear_failures(*, username: str, address: str) -> None:
    """Forget this (username, address) pair's password failures after a sign-in from there. The address's
    own count and the username's failures from other addresses stay: the owner signing in must not reset
    the count of someone guessing from elsewhere."""
    LoginFailure.objects.filter(username=normalise_username(username), address=address,
                                kind=LoginFailure.Kind.PASSWORD).delete()
