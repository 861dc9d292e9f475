"""``mist-patcher gui [mist://install/<slug>]``: the desktop app."""

from __future__ import annotations

import argparse

from mist_patcher.cli.app import App

NAME = "gui"
HELP = "open the desktop app (optionally handling a mist:// link from the store)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("url", nargs="?", help="a mist://install/<slug> link")
    parser.set_defaults(handler=run, skip_recovery=True)


def run(app: App) -> int:
    # Qt is imported here only, so the CLI works where PySide6 is not installed.
    from mist_patcher.ui.app import run_gui

    return run_gui(server=app.args.server, url=app.args.url, limit_rate=app.args.limit_rate)
