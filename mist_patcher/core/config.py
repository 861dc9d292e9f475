"""Where the patcher keeps its state, and its settings (server URL, install folder, bandwidth limit).

Everything lives under one folder, ``MIST_PATCHER_HOME`` or the OS's user data folder, so
several patchers (and tests) can run side by side::

    <home>/settings.json          server_url, install_root, limit_rate
    <home>/credentials.json       tokens (0600), when the OS keychain is not used
    <home>/installs/<slug>.json   one record per installed game (version, folder, manifest)
    <home>/downloads/             partial and finished downloads (resumable)
    <home>/rollback/<slug>/       files replaced by the last update (rollback), size-capped
    <home>/images/                cached header images
    <home>/locks/<slug>.lock      one patcher at a time per game
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from mist_patcher.core.errors import ConfigError
from mist_patcher.core.units import parse_rate
from mistcore.fsutil import atomic_write

APP_NAME = "mist-patcher"
HOME_ENV = "MIST_PATCHER_HOME"
SERVER_ENV = "MIST_SERVER"
DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_ROLLBACK_CAP = 2 * 1024**3


def home_is_explicit() -> bool:
    """True when MIST_PATCHER_HOME is set (tests, side-by-side installs): never touch the keychain then."""
    return bool(os.environ.get(HOME_ENV))


def patcher_home() -> Path:
    """The folder holding all of this patcher's state (created on first use)."""
    explicit = os.environ.get(HOME_ENV)
    home = Path(explicit).expanduser() if explicit else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    home.mkdir(parents=True, exist_ok=True)
    return home


def normalize_server_url(url: str) -> str:
    """``host:8000/`` style input -> ``http://host:8000``; ConfigError when it cannot be a server URL."""
    url = url.strip()
    if not url:
        raise ConfigError("the server URL is empty")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{url!r} is not a server URL (expected http(s)://host[:port])")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


@dataclass
class Settings:
    """User settings, kept in ``<home>/settings.json``."""

    server_url: str = ""
    install_root: str = ""
    limit_rate: int = 0  # bytes per second, 0 = unlimited
    rollback_cap: int = DEFAULT_ROLLBACK_CAP
    verify_threads: int = 0  # 0 = automatic
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, home: Path) -> Settings:
        path = home / "settings.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable settings ({exc}); fix or delete the file") from None
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        settings = cls(**values)
        settings.limit_rate = parse_rate(settings.limit_rate)
        return settings

    def save(self, home: Path) -> None:
        with atomic_write(home / "settings.json", "w") as f:
            json.dump(asdict(self), f, indent=2, sort_keys=True)

    def effective_install_root(self, home: Path) -> Path:
        """Where new games go when no ``--dir`` is given."""
        if self.install_root:
            return Path(self.install_root).expanduser()
        return home / "games"


def resolve_server(cli_value: str | None, settings: Settings) -> str:
    """The server URL by precedence: ``--server``, ``MIST_SERVER``, settings, then the local default."""
    for candidate in (cli_value, os.environ.get(SERVER_ENV), settings.server_url):
        if candidate:
            return normalize_server_url(candidate)
    return DEFAULT_SERVER
