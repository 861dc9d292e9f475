"""Exceptions of the patcher's core; the CLI and the GUI turn them into one clear message."""

from __future__ import annotations

from mist_patcher.core.units import format_bytes


class PatcherError(Exception):
    """Base class of every error the patcher raises on purpose (its message is shown to the user)."""

    exit_code = 1


class ConfigError(PatcherError):
    """A setting or argument that cannot work (bad server URL, bad rate, unknown game)."""

    exit_code = 2


class NotLoggedIn(PatcherError):
    """No credentials, or the refresh token was refused: the user must log in again."""

    exit_code = 4


class ApiError(PatcherError):
    """The server answered with an error status; ``detail`` is its message."""

    def __init__(self, status: int, detail: str, *, url: str = "") -> None:
        self.status = status
        self.detail = detail
        self.url = url
        super().__init__(f"server said {status}: {detail}" if status else detail)


class ServerUnreachable(PatcherError):
    """The server could not be reached at all (connection refused, DNS, timeout)."""


class DownloadError(PatcherError):
    """A download failed or its bytes do not match the expected size or SHA-256."""


class DiskFullError(PatcherError):
    """Not enough free space for the work; nothing was changed."""

    def __init__(self, *, need: int, have: int, where: str = "") -> None:
        self.need = need
        self.have = have
        self.where = where
        place = f" on {where}" if where else ""
        super().__init__(f"not enough disk space{place}: need {format_bytes(need)}, have {format_bytes(have)}")


class Cancelled(PatcherError):
    """The user cancelled the operation; partial downloads are kept for a later resume."""

    exit_code = 130


class NotInstalled(PatcherError):
    """The game is not installed by this patcher (see ``mist-patcher status``)."""


class InstallBusy(PatcherError):
    """Another patcher process is working on the same game right now."""


class IntegrityFailure(PatcherError):
    """After all repair attempts, files still do not match the manifest."""
