"""``mist-patcher play GAME [--option NAME]``: start an installed game; its playtime is recorded and reported."""

from __future__ import annotations

import argparse
import sys

from mist_patcher.cli.app import App
from mist_patcher.core.play import PlayResult, launch_options, pending_update, play_game
from mist_patcher.core.units import format_duration
from mist_patcher.core.update import update_game

NAME = "play"
HELP = "start an installed game (records the playtime and reports it to the server)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("game", help="the game's slug")
    parser.add_argument("--option", metavar="NAME", help='which launch option, e.g. "Dedicated server" (default: the first)')
    parser.add_argument("--list", action="store_true", help="only list the launch options")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--update", action="store_true", help="if an update is waiting, install it first, then play")
    when.add_argument("--now", action="store_true", help="play the installed version without asking about updates")
    parser.set_defaults(handler=run)


def _ask_update(app: App, slug: str, installed: str, latest: str) -> bool:
    """Offer the waiting update: True to update first. Without a terminal (or with --json) play now."""
    if app.output.json_mode or not sys.stdin.isatty():
        app.output.note(f"{slug} {latest} is available (installed: {installed}); playing {installed} now "
                        f"(`mist-patcher play {slug} --update` updates first)")
        return False
    answer = input(f"{slug} {latest} is available (installed: {installed}). [u]pdate and play, or [p]lay now? ")
    return answer.strip().lower().startswith("u")


def run(app: App) -> int:
    args = app.args
    record = app.ctx.state.require(args.game)
    if args.list:
        options = launch_options(app.ctx, record)
        data = {"slug": record.slug, "version": record.version, "options": [o.to_dict() for o in options]}
        human = "\n".join(f"{'*' if i == 0 else ' '} {o.name}: {o.executable} {' '.join(o.arguments)}".rstrip()
                          for i, o in enumerate(options)) or "No launch options."
        app.output.result(data, human)
        return 0
    if not args.now:
        latest = pending_update(app.ctx, record)
        if latest and (args.update or _ask_update(app, record.slug, record.version, latest)):
            update_game(app.ctx, slug=record.slug, progress=app.output.progress, control=app.control,
                        note=app.output.note)

    def started(result: PlayResult) -> None:
        app.output.note(f"started {result.slug} {result.version} ({result.option}); output goes to {result.log}")

    result = play_game(app.ctx, slug=args.game, option=args.option, on_started=started)
    human = (f"{result.slug} exited with code {result.exit_code} after {format_duration(result.seconds)}"
             f" (session {result.session_id[:8]}")
    if result.sync is not None and result.sync.pending:
        human += f"; {result.sync.pending} session(s) will be reported when the server is reachable"
    app.output.result(result.to_dict(), human + ").")
    return 0
