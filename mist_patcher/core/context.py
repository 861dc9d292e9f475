"""Everything one patcher run needs, built once: home, settings, server, API client, state, downloader."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mist_patcher.core.api import ApiClient
from mist_patcher.core.config import Settings, patcher_home, resolve_server
from mist_patcher.core.credentials import CredentialStore, open_credential_store
from mist_patcher.core.download import Downloader
from mist_patcher.core.ratelimit import TokenBucket
from mist_patcher.core.state import StateStore


@dataclass
class PatcherContext:
    """The patcher's state folder, settings and server connection."""

    home: Path
    settings: Settings
    server: str
    credentials: CredentialStore
    api: ApiClient
    state: StateStore
    limiter: TokenBucket
    downloader: Downloader

    def set_limit_rate(self, rate: int) -> None:
        """Change the bandwidth limit of every download, including running ones."""
        self.limiter.set_rate(rate)


def open_context(
    *,
    server: str | None = None,
    limit_rate: int | None = None,
    home: Path | None = None,
    job_poll_interval: float = 0.5,
) -> PatcherContext:
    """Build the context from the environment, the settings file and explicit overrides."""
    home = home or patcher_home()
    settings = Settings.load(home)
    server_url = resolve_server(server, settings)
    credentials = open_credential_store(home)
    api = ApiClient(server_url, store=credentials, job_poll_interval=job_poll_interval)
    limiter = TokenBucket(settings.limit_rate if limit_rate is None else limit_rate)
    return PatcherContext(
        home=home,
        settings=settings,
        server=server_url,
        credentials=credentials,
        api=api,
        state=StateStore(home),
        limiter=limiter,
        downloader=Downloader(api, limiter=limiter),
    )
