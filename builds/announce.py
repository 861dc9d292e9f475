"""Release announcements to a Discord webhook (a worker task; a failing webhook never blocks a release)."""

from __future__ import annotations

import logging
import time
from typing import Any

import requests
from django.conf import settings

from builds.models import Version

logger = logging.getLogger("mist.announce")

USER_AGENT = "Mist/1.0 (+self-hosted game store)"


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def discord_message(*, version: Version, patch_size: int | None) -> dict[str, Any]:
    """The webhook payload: game, version, size, patch size, release notes."""
    game = version.game
    fields = [
        {"name": "Version", "value": version.name, "inline": True},
        {"name": "Size", "value": _human(version.total_size), "inline": True},
    ]
    if patch_size is not None and version.parent_id:
        fields.append({"name": "Update", "value": f"{_human(patch_size)} from {version.parent.name}", "inline": True})
    embed: dict[str, object] = {
        "title": f"{game.title} {version.name} is out",
        "description": (version.notes or "No release notes.")[:3500],
        "fields": fields,
    }
    if settings.MIST_PUBLIC_URL:
        embed["url"] = f"{settings.MIST_PUBLIC_URL.rstrip('/')}/games/{game.slug}/"
    return {"username": "Mist", "content": f"New version of **{game.title}**: {version.name}", "embeds": [embed]}


def send_announcement(*, version: Version, patch_size: int | None, attempts: int = 3) -> str:
    """POST the message, retrying on network errors, 429 and 5xx; returns what happened."""
    url = settings.DISCORD_WEBHOOK_URL
    if not url:
        return "skipped: DISCORD_WEBHOOK_URL is not set"
    payload = discord_message(version=version, patch_size=patch_size)
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            response = requests.post(url, json=payload, timeout=(3, 10), headers={"User-Agent": USER_AGENT})
        except requests.RequestException as exc:
            last = f"network error: {exc.__class__.__name__}"
        else:
            if response.status_code < 300:
                return f"sent (HTTP {response.status_code})"
            last = f"HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                break  # a 4xx other than 429 will not get better by retrying
        if attempt < attempts:
            time.sleep(min(2**attempt * 0.5, 5))
    logger.warning("discord announcement failed", extra={"version": str(version), "error": last})
    return f"failed after {attempt} attempt(s): {last}"
