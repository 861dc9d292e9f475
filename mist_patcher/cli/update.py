"""``mist-patcher update [game]``: move installs to the latest (or any, with --version) version."""

from __future__ import annotations

import argparse

from mist_patcher.cli.app import App
from mist_patcher.cli.plans import describe_update_plan
from mist_patcher.core.errors import ConfigError
from mist_patcher.core.units import format_bytes, format_duration
from mist_patcher.core.update import ROUTES, UpdateResult, update_game

NAME = "update"
HELP = "update one game (or every installed game) to the latest or a chosen version"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("game", nargs="?", help="the game's slug (default: every installed game)")
    parser.add_argument("--version", dest="game_version", metavar="V",
                        help="go to this version (older ones too)")
    parser.add_argument("--dry-run", action="store_true", help="only show the plan and its cost")
    parser.add_argument("--route", choices=ROUTES, help="override the server's choice of route")
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    args = app.args
    slugs = app.target_slugs(args.game)
    if args.game_version and len(slugs) != 1:
        raise ConfigError("--version needs a game")
    results = []
    for slug in slugs:
        def on_plan(plan: UpdateResult) -> None:
            if not app.output.json_mode and not plan.up_to_date:
                app.output.note(describe_update_plan(plan))

        result = update_game(
            app.ctx, slug=slug, version=args.game_version, dry_run=args.dry_run, force_route=args.route,
            progress=app.output.progress, control=app.control, on_plan=on_plan, note=app.output.note,
        )
        results.append(result)
    lines = []
    for r in results:
        if r.up_to_date:
            lines.append(f"{r.slug} is up to date ({r.from_version}).")
        elif r.dry_run:
            lines.append(f"Dry run: {r.slug} would go {r.from_version} -> {r.to_version} by {r.route}.")
        else:
            lines.append(f"Updated {r.slug} {r.from_version} -> {r.to_version} by {r.route} "
                         f"({format_bytes(r.downloaded)} downloaded in {format_duration(r.seconds)}).")
    if not results:
        lines.append("No games installed.")
    data = results[0].to_dict() if args.game else {"updates": [r.to_dict() for r in results]}
    app.output.result(data, "\n".join(lines))
    return 0
