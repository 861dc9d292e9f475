"""``mist-patcher list``: the games the server offers you, with their install state here."""

from __future__ import annotations

import argparse

from mist_patcher.cli.app import App
from mist_patcher.cli.tables import table
from mist_patcher.core.library import LibraryEntry, load_library
from mist_patcher.core.units import format_bytes

NAME = "list"
HELP = "list the games on the server and what is installed"

STATE_LABELS = {
    "not_installed": "",
    "installed": "installed",
    "update_available": "UPDATE AVAILABLE",
    "incomplete": "incomplete install",
    "removed_from_server": "gone from server",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.set_defaults(handler=run)


def describe(entries: list[LibraryEntry]) -> str:
    if not entries:
        return "No games."
    rows = [
        [e.slug, e.title, e.latest_version or "-",
         format_bytes(e.latest_size) if e.latest_size else "-", ",".join(e.platforms) or "-",
         e.installed_version or "-", STATE_LABELS[e.state]]
        for e in entries
    ]
    return table(["GAME", "TITLE", "LATEST", "SIZE", "PLATFORMS", "INSTALLED", "STATE"], rows)


def run(app: App) -> int:
    entries = load_library(app.ctx)
    app.output.result({"games": [e.to_dict() for e in entries]}, describe(entries))
    return 0
