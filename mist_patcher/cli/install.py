"""``mist-patcher install <game>``: download the full archive, extract it safely, verify every file."""

from __future__ import annotations

import argparse
from pathlib import Path

from mist_patcher.cli.app import App
from mist_patcher.cli.plans import describe_install_plan
from mist_patcher.core.install import InstallResult, install_game
from mist_patcher.core.units import format_bytes, format_duration
from mistcore.platforms import PLATFORMS

NAME = "install"
HELP = "install a game (latest version unless --version)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("game", help="the game's slug (see `mist-patcher list`)")
    parser.add_argument("--version", dest="game_version", metavar="V", help="install this version")
    parser.add_argument("--dir", type=Path, metavar="D", help="install folder (default: <install root>/<game>)")
    parser.add_argument(
        "--platform", choices=PLATFORMS, default=None,
        help="whose build to install (default: this machine's, or MIST_PATCHER_PLATFORM); e.g. windows to run "
        "it under Proton or Wine",
    )
    parser.add_argument("--dry-run", action="store_true", help="only show what it would download and need")
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    args = app.args

    def on_plan(plan: InstallResult) -> None:
        if not app.output.json_mode:
            app.output.note(describe_install_plan(plan))

    result = install_game(
        app.ctx, slug=args.game, version=args.game_version, dest=args.dir, dry_run=args.dry_run,
        progress=app.output.progress, control=app.control, on_plan=on_plan, platform=args.platform,
    )
    if result.dry_run:
        human = "Dry run: nothing was downloaded or written."
    else:
        human = (f"Installed {result.slug} {result.version} in {result.path} "
                 f"({result.platform} build, {format_bytes(result.downloaded)} downloaded in {format_duration(result.seconds)}).")
    app.output.result(result.to_dict(), human)
    return 0
