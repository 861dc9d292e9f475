"""``mist-patcher status``: installed games, their versions and folders, and who is logged in."""

from __future__ import annotations

import argparse

from mist_patcher.cli.app import App
from mist_patcher.cli.list_games import STATE_LABELS
from mist_patcher.cli.tables import table
from mist_patcher.core.errors import PatcherError
from mist_patcher.core.library import load_library, local_library

NAME = "status"
HELP = "show installed games, available updates and the login"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("--offline", action="store_true", help="do not ask the server about updates")
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    ctx = app.ctx
    tokens = ctx.api.tokens
    server_note = ""
    entries = None
    if not app.args.offline and tokens is not None:
        try:
            entries = [e for e in load_library(ctx) if e.installed_version is not None]
        except PatcherError as exc:
            server_note = f"(server not asked: {exc})"
    if entries is None:
        entries = local_library(ctx)
    data = {
        "server": ctx.server,
        "home": str(ctx.home),
        "logged_in": tokens is not None,
        "username": tokens.username if tokens else None,
        "credentials": ctx.credentials.description,
        "limit_rate": ctx.limiter.rate,
        "installs": [e.to_dict() for e in entries],
    }
    who = f"logged in as {tokens.username or 'a paired device'}" if tokens else "not logged in"
    lines = [f"Server {ctx.server} ({who}); state in {ctx.home}"]
    if server_note:
        lines.append(server_note)
    if entries:
        rows = [[e.slug, e.installed_version or "-", e.latest_version or "?", STATE_LABELS[e.state] or "-",
                 e.install_path or ""] for e in entries]
        lines.append(table(["GAME", "INSTALLED", "LATEST", "STATE", "FOLDER"], rows))
    else:
        lines.append("No games installed.")
    app.output.result(data, "\n".join(lines))
    return 0
