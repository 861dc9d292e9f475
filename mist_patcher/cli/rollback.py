"""``mist-patcher rollback <game>``: undo the last update without a full download."""

from __future__ import annotations

import argparse

from mist_patcher.cli.app import App
from mist_patcher.core.rollback import rollback_game
from mist_patcher.core.units import format_bytes

NAME = "rollback"
HELP = "go back to the version before the last update (kept reverse patch, else the cheapest route back: a jump delta)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("game", help="the game's slug")
    parser.add_argument("--dry-run", action="store_true", help="only say what it would do")
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    r = rollback_game(app.ctx, slug=app.args.game, dry_run=app.args.dry_run, progress=app.output.progress,
                      control=app.control, note=app.output.note)
    how = "from the kept reverse patch" if r.source == "kept" else f"by the server's {r.source} route"
    verb = "Would roll back" if r.dry_run else "Rolled back"
    human = f"{verb} {r.slug} {r.from_version} -> {r.to_version} {how} ({format_bytes(r.downloaded)} downloaded)."
    app.output.result(r.to_dict(), human)
    return 0
