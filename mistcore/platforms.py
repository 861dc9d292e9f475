"""The platforms a build can be made for, shared by the server and the patcher (no Django here).

A version of a game holds at most one build per platform. The names are part of the API contract
(``?platform=linux``), of the storage layout (``games/<slug>/<platform>/``) and of the patcher's
install records, so they never change; new platforms may be appended.
"""

from __future__ import annotations

import sys

from mistcore.errors import MistCoreError

WINDOWS = "windows"
LINUX = "linux"
MACOS = "macos"

PLATFORMS: tuple[str, ...] = (WINDOWS, LINUX, MACOS)

LABELS: dict[str, str] = {WINDOWS: "Windows", LINUX: "Linux", MACOS: "macOS"}


class PlatformError(MistCoreError):
    """A platform name that is not one of PLATFORMS."""


def validate_platform(name: str) -> str:
    """Return ``name`` if it is a known platform; PlatformError (with the known names) otherwise."""
    if name not in PLATFORMS:
        raise PlatformError(f"platform {name!r}: must be one of {', '.join(PLATFORMS)}")
    return name


def current_platform(system: str | None = None) -> str:
    """The platform of the machine this runs on (``sys.platform`` unless given)."""
    system = sys.platform if system is None else system
    if system.startswith(("win", "cygwin", "msys")):
        return WINDOWS
    if system == "darwin":
        return MACOS
    return LINUX
