"""``mist-patcher adopt <game> <folder>``: make a copy of the game already on this machine an install."""

from __future__ import annotations

import argparse
from pathlib import Path

from mist_patcher.cli.app import App
from mist_patcher.core.adopt import adopt_game
from mist_patcher.core.units import format_bytes, format_duration
from mistcore.platforms import PLATFORMS

NAME = "adopt"
HELP = "use a copy of a game already on this machine (matched against every version, repaired to the closest)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("game", help="the game's slug (see `mist-patcher list`)")
    parser.add_argument("folder", type=Path, help="the folder holding the copy (it becomes the install folder)")
    parser.add_argument("--platform", choices=PLATFORMS, default=None,
                        help="whose build the copy is (default: this machine's, or MIST_PATCHER_PLATFORM)")
    parser.add_argument("--dry-run", action="store_true", help="only say which version it is and what it lacks")
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    a = app.args
    result = adopt_game(app.ctx, slug=a.game, folder=a.folder, platform=a.platform, dry_run=a.dry_run,
                        progress=app.output.progress, control=app.control, note=app.output.note)
    share = result.matched_bytes / result.total_bytes if result.total_bytes else 0.0
    human = (f"{result.path} is {result.slug} {result.version} ({result.platform}): {result.matched_files} of "
             f"{result.total_files} files match ({share:.0%} of its bytes)")
    if result.dry_run:
        human += f"; {len(result.repaired)} would be repaired. Dry run: nothing was written."
    else:
        human += (f"; {len(result.repaired)} repaired ({format_bytes(result.downloaded)} downloaded) in "
                  f"{format_duration(result.seconds)}. `mist-patcher update {result.slug}` takes it from here.")
    if result.extra:
        human += f" ({result.extra} extra file(s) not part of the game, left alone)"
    app.output.result(result.to_dict(), human)
    return 0
