"""``mist-patcher uninstall <game>``: delete the game's folder and everything kept for it."""

from __future__ import annotations

import argparse
import sys

from mist_patcher.cli.app import App
from mist_patcher.core.errors import Cancelled
from mist_patcher.core.install import uninstall_game

NAME = "uninstall"
HELP = "remove an installed game"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("game", help="the game's slug")
    parser.add_argument("--keep-files", action="store_true", help="forget the install but leave its folder")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    args = app.args
    record = app.ctx.state.require(args.game)
    if not args.yes and not args.keep_files and sys.stdin.isatty() and not app.output.json_mode:
        answer = input(f"Delete {record.path} ({args.game} {record.version})? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise Cancelled("nothing was removed")
    r = uninstall_game(app.ctx, slug=args.game, keep_files=args.keep_files)
    human = f"Uninstalled {r.slug} {r.version}" + (f" and deleted {r.path}." if r.removed_files else " (files kept).")
    app.output.result(r.to_dict(), human)
    return 0
