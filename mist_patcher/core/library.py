"""The library: what the server offers, merged with what is installed here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mist_patcher.core.context import PatcherContext
from mist_patcher.core.platform import default_platform
from mist_patcher.core.state import InstallRecord


@dataclass
class LibraryEntry:
    """One game as the user sees it: server facts plus local install state."""

    slug: str
    title: str
    description: str = ""
    header_image_url: str = ""
    latest_version: str | None = None
    latest_size: int | None = None
    installed_version: str | None = None
    install_path: str | None = None
    complete: bool = True
    on_server: bool = True
    platforms: list[str] = field(default_factory=list)  # builds the server has (empty: old server, or offline)
    installed_platform: str = ""

    @property
    def state(self) -> str:
        """not_installed, incomplete, update_available, installed or removed_from_server."""
        if self.installed_version is None:
            return "not_installed"
        if not self.complete:
            return "incomplete"
        if not self.on_server:
            return "removed_from_server"
        if self.latest_version and self.latest_version != self.installed_version:
            return "update_available"
        return "installed"

    @property
    def update_available(self) -> bool:
        return self.state == "update_available"

    def to_dict(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "title": self.title,
            "state": self.state,
            "latest_version": self.latest_version,
            "latest_size": self.latest_size,
            "installed_version": self.installed_version,
            "install_path": self.install_path,
            "update_available": self.update_available,
            "header_image_url": self.header_image_url,
            "platforms": self.platforms,
            "installed_platform": self.installed_platform,
        }


def merge_library(games: list[dict[str, Any]] | None, installs: list[InstallRecord]) -> list[LibraryEntry]:
    """Join the server's game list (None: unknown, offline) with local install records."""
    server_known = games is not None
    games = games or []
    by_slug = {r.slug: r for r in installs}
    entries = []
    for game in games:
        record = by_slug.pop(game["slug"], None)
        entries.append(
            LibraryEntry(
                slug=game["slug"],
                title=game.get("title") or game["slug"],
                description=game.get("description") or "",
                header_image_url=game.get("header_image_url") or "",
                latest_version=game.get("latest_version"),
                latest_size=game.get("latest_size"),
                installed_version=record.version if record else None,
                install_path=record.path if record else None,
                complete=record.complete if record else True,
                platforms=list(game.get("platforms") or []),
                installed_platform=record.platform if record else "",
            )
        )
    for record in by_slug.values():
        entries.append(
            LibraryEntry(slug=record.slug, title=record.title or record.slug, installed_version=record.version,
                         install_path=record.path, complete=record.complete, on_server=not server_known,
                         installed_platform=record.platform)
        )
    return sorted(entries, key=lambda e: e.title.lower())


def load_library(ctx: PatcherContext) -> list[LibraryEntry]:
    """Ask the server for the visible games and merge the local installs in."""
    return merge_library(ctx.api.games(platform=default_platform()), ctx.state.all())


def local_library(ctx: PatcherContext) -> list[LibraryEntry]:
    """Installed games only, without asking the server (offline status)."""
    return merge_library(None, ctx.state.all())
