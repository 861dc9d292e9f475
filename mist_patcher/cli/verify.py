"""``mist-patcher verify [game]``: hash every installed file against the manifest (exit 3 if damaged)."""

from __future__ import annotations

import argparse

from mist_patcher.cli.app import App
from mist_patcher.core.repair import verify_game
from mist_patcher.core.verify import VerifyReport

NAME = "verify"
HELP = "check every installed file against the manifest (changes nothing)"
EXIT_DAMAGED = 3


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("game", nargs="?", help="the game's slug (default: every installed game)")
    parser.set_defaults(handler=run)


def describe(slug: str, report: VerifyReport) -> str:
    if report.healthy:
        head = f"{slug} {report.version}: all {report.checked} files are intact."
    else:
        head = (f"{slug} {report.version}: {len(report.modified)} modified, {len(report.missing)} missing, "
                f"{len(report.wrong_mode)} with the wrong executable bit (run `mist-patcher repair {slug}`).")
    lines = [head]
    lines += [f"  modified: {p}" for p in report.modified]
    lines += [f"  missing:  {p}" for p in report.missing]
    lines += [f"  mode:     {p}" for p in report.wrong_mode]
    if report.extra:
        lines.append(f"  ({len(report.extra)} extra file(s) not part of the game, left alone)")
    return "\n".join(lines)


def run(app: App) -> int:
    slugs = app.target_slugs(app.args.game)
    reports = {slug: verify_game(app.ctx, slug=slug, progress=app.output.progress, control=app.control)
               for slug in slugs}
    if app.args.game:
        data = {"slug": app.args.game, **reports[app.args.game].to_dict()}
    else:
        data = {"games": {slug: r.to_dict() for slug, r in reports.items()}}
    human = "\n".join(describe(slug, r) for slug, r in reports.items()) or "No games installed."
    app.output.result(data, human)
    return 0 if all(r.healthy for r in reports.values()) else EXIT_DAMAGED
