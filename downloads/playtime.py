"""Playtime: sessions reported by the patcher, and the totals the store and the dashboard show."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Sum
from django.utils import timezone
from django.utils.timesince import timesince

from builds.access import visible_game
from catalog.models import Game
from downloads.models import PlaySession

# A session longer than this is a clock or a client bug, not a game night.
MAX_SESSION = timedelta(days=7)
_CLOCK_SKEW = timedelta(minutes=10)


class SessionRejected(ValueError):
    """A session report that cannot be right (ends before it starts, in the future, absurdly long)."""


class SessionConflict(ValueError):
    """The session id is already someone else's, or the same id came with different times."""


@dataclass(frozen=True)
class Recorded:
    session: PlaySession
    created: bool


def record_session(
    *, user: Any, session_id: uuid.UUID, game_slug: str, started_at: datetime, ended_at: datetime,
    version: str = "", platform: str = "", option: str = "", exit_code: int | None = None,
    now: datetime | None = None,
) -> Recorded:
    """Store one play session; the same report again is a no-op (counted once). Http404 for a game the user
    may not see, SessionRejected for impossible times, SessionConflict for a reused id."""
    now = now or timezone.now()
    game = visible_game(user, game_slug)
    if ended_at < started_at:
        raise SessionRejected("ended_at is before started_at")
    if ended_at > now + _CLOCK_SKEW:
        raise SessionRejected("ended_at is in the future (is the computer's clock right?)")
    if ended_at - started_at > MAX_SESSION:
        raise SessionRejected(f"a session cannot last more than {MAX_SESSION.days} days")
    seconds = int((ended_at - started_at).total_seconds())
    existing = PlaySession.objects.filter(pk=session_id).first()
    if existing is None:
        try:
            with transaction.atomic():
                session = PlaySession.objects.create(
                    id=session_id, user=user, game=game, version_name=version[:64], platform=platform[:16],
                    option=option[:64], started_at=started_at, ended_at=ended_at, seconds=seconds,
                    exit_code=exit_code,
                )
            return Recorded(session=session, created=True)
        except IntegrityError:  # the same report, twice at once
            existing = PlaySession.objects.get(pk=session_id)
    if existing.user_id != user.pk or existing.game_id != game.pk:
        raise SessionConflict("this session id belongs to another session")
    if (existing.started_at, existing.seconds) != (started_at, seconds):
        raise SessionConflict("this session was already reported with other times")
    return Recorded(session=existing, created=False)


@dataclass(frozen=True)
class Playtime:
    seconds: int
    sessions: int
    last_played: datetime | None

    @property
    def label(self) -> str:
        return format_duration(self.seconds)

    @property
    def last_played_label(self) -> str:
        """'just now', '3 hours ago'."""
        if self.last_played is None:
            return "never"
        if timezone.now() - self.last_played < timedelta(minutes=1):
            return "just now"
        return f"{timesince(self.last_played).split(',')[0]} ago"

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "sessions": self.sessions,
                "last_played": self.last_played.isoformat() if self.last_played else None}


def playtime_by_game(*, user: Any, games: list[Game] | None = None) -> dict[int, Playtime]:
    """The user's playtime per game id (one query)."""
    qs = PlaySession.objects.filter(user=user)
    if games is not None:
        qs = qs.filter(game__in=games)
    rows = qs.values("game").annotate(total=Sum("seconds"), n=Count("id"), last=Max("ended_at"))
    return {row["game"]: Playtime(seconds=row["total"] or 0, sessions=row["n"], last_played=row["last"])
            for row in rows}


def totals_per_game() -> list[dict[str, Any]]:
    """Every game's playtime across friends, most played first (the admin dashboard)."""
    rows = (PlaySession.objects.values("game__title", "game__slug")
            .annotate(total=Sum("seconds"), n=Count("id"), players=Count("user", distinct=True), last=Max("ended_at"))
            .order_by("-total"))
    return [{"title": r["game__title"], "slug": r["game__slug"], "seconds": r["total"] or 0, "sessions": r["n"],
             "players": r["players"], "last_played": r["last"]} for r in rows]


def format_duration(seconds: int) -> str:
    """'3 h 25 min', '12 min', 'under a minute'."""
    if seconds < 60:
        return "under a minute"
    hours, minutes = divmod(seconds // 60, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min"
