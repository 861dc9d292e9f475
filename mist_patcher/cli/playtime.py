"""``mist-patcher playtime``: this machine's playtime per game; sends the sessions not reported yet."""

from __future__ import annotations

import argparse
from datetime import datetime

from mist_patcher.cli.app import App
from mist_patcher.core.play import local_playtime, sync_sessions
from mist_patcher.core.units import format_duration

NAME = "playtime"
HELP = "show the playtime recorded here and report unsent sessions to the server"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("--no-sync", action="store_true", help="do not contact the server")
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    sync = None if app.args.no_sync else sync_sessions(app.ctx)
    games = local_playtime(app.ctx)
    lines = [f"{slug}: {format_duration(row['seconds'])} in {row['sessions']} session(s), last "
             f"{datetime.fromtimestamp(row['last_played']):%Y-%m-%d %H:%M}"
             + (f" ({row['unsent']} not reported yet)" if row["unsent"] else "")
             for slug, row in sorted(games.items())] or ["No playtime recorded on this machine."]
    if sync is not None:
        lines.append(f"reported {sync.sent} session(s)" + (f"; not now: {sync.error}" if sync.error else ""))
        lines += [f"refused by the server: {r}" for r in sync.rejected]
    app.output.result({"games": games, "sync": sync.to_dict() if sync else None}, "\n".join(lines))
    return 0
