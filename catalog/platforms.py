"""Platforms on the server side: the model choices and the default for requests that name none.

The names themselves live in mistcore.platforms (shared with the patcher). Every model that
stores a platform uses ``Platform.choices`` and a plain ``CharField(max_length=16)``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from mistcore.platforms import LABELS, LINUX, MACOS, PLATFORMS, WINDOWS, PlatformError, validate_platform

__all__ = ["PLATFORMS", "Platform", "PlatformError", "default_platform", "platform_or_default"]


class Platform(models.TextChoices):
    WINDOWS = WINDOWS, LABELS[WINDOWS]
    LINUX = LINUX, LABELS[LINUX]
    MACOS = MACOS, LABELS[MACOS]


def default_platform() -> str:
    """MIST_DEFAULT_PLATFORM: what a push or a request that names no platform means."""
    return str(settings.MIST_DEFAULT_PLATFORM)


def platform_or_default(value: str | None) -> str:
    """A requested platform (validated; PlatformError names the known ones), or the default when empty."""
    if not value:
        return default_platform()
    return validate_platform(value)
