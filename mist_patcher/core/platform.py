"""Which platform's builds this patcher installs by default.

This machine's OS (mistcore.platforms.current_platform), unless MIST_PATCHER_PLATFORM names
another (e.g. ``windows`` on a Linux box that runs every game under Proton); ``install --platform``
overrides both for one game, and updates keep the platform the game was installed with.
"""

from __future__ import annotations

import os

from mist_patcher.core.errors import ConfigError
from mistcore.platforms import PlatformError, current_platform, validate_platform

ENV = "MIST_PATCHER_PLATFORM"


def default_platform() -> str:
    """MIST_PATCHER_PLATFORM if set, else this machine's platform; ConfigError for an unknown name."""
    chosen = os.environ.get(ENV, "").strip()
    if not chosen:
        return current_platform()
    try:
        return validate_platform(chosen)
    except PlatformError as exc:
        raise ConfigError(f"{ENV}: {exc}") from None
