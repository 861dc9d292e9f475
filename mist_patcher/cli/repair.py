"""``mist-patcher repair [game]``: fix damaged files block by block (only what is wrong travels)."""

from __future__ import annotations

import argparse

from mist_patcher.cli.app import App
from mist_patcher.core.repair import RepairResult, repair_game
from mist_patcher.core.units import format_bytes

NAME = "repair"
HELP = "verify, then repair modified or missing files (block-level where it pays)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("game", nargs="?", help="the game's slug (default: every installed game)")
    parser.add_argument("--dry-run", action="store_true", help="only report what would be repaired")
    parser.set_defaults(handler=run)


def describe(r: RepairResult) -> str:
    if r.before.healthy:
        return f"{r.slug} {r.version}: nothing to repair ({r.before.checked} files intact)."
    if r.dry_run:
        return f"{r.slug} {r.version}: would repair {len(r.before.damaged) + len(r.before.wrong_mode)} file(s)."
    parts = [f"{r.slug} {r.version}: repaired {len(r.repaired) + len(r.modes_fixed)} file(s), "
             f"{format_bytes(r.downloaded)} downloaded, {format_bytes(r.uploaded)} of signatures uploaded."]
    parts += [f"  block-level: {p}" for p in sorted(r.block_level)]
    parts += [f"  whole file:  {p}" for p in sorted(r.whole)]
    parts += [f"  mode fixed:  {p}" for p in sorted(r.modes_fixed)]
    return "\n".join(parts)


def run(app: App) -> int:
    results = [
        repair_game(app.ctx, slug=slug, dry_run=app.args.dry_run, progress=app.output.progress,
                    control=app.control, note=app.output.note)
        for slug in app.target_slugs(app.args.game)
    ]
    data = results[0].to_dict() if app.args.game else {"repairs": [r.to_dict() for r in results]}
    app.output.result(data, "\n".join(describe(r) for r in results) or "No games installed.")
    return 0
