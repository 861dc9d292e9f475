"""``mist-patcher admin ...``: the admin's commands from any machine (login, new-game, push, ls, rm, resync-steam,
delta-report). A subcommand of ``mist-patcher`` rather than a separate ``mist-admin``: one install, one keychain
entry, one ``--server``.

The same conventions as the rest of the CLI: ``--json``, progress on stderr, exit codes (1 refused, 4 not
logged in), tokens in the keychain. Every command needs an account with the admin role.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mist_patcher.cli import login as login_command
from mist_patcher.cli.app import App
from mist_patcher.core import admin
from mist_patcher.core.errors import PatcherError
from mist_patcher.core.units import format_bytes, format_duration
from mistcore.platforms import PLATFORMS

NAME = "admin"
HELP = "admin commands from any machine: login, new-game, push, ls, rm, resync-steam, delta-report"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    verbs = parser.add_subparsers(dest="admin_command", metavar="ADMIN_COMMAND", required=True)

    p = verbs.add_parser("login", help="sign in with the admin's account")
    p.add_argument("--username", "-u")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(handler=run_login, pairing_code=None, device_name="")

    p = verbs.add_parser("new-game", help="create a game (its Steam details are fetched with --app-id)")
    p.add_argument("slug")
    p.add_argument("--title", default="")
    p.add_argument("--app-id", type=int, default=None)
    p.add_argument("--private", action="store_true", help="only admins and granted friends see it")
    p.set_defaults(handler=run_new_game)

    p = verbs.add_parser("push", help="push a build folder as a new version, sending only new or changed files")
    p.add_argument("game")
    p.add_argument("push_version", metavar="VERSION")
    p.add_argument("path", type=Path)
    p.add_argument("--platform", choices=PLATFORMS, default=None, help="whose build (default: the server's MIST_DEFAULT_PLATFORM)")
    p.add_argument("--notes", default="", help="release notes")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait until the worker made the version ready (or failed)")
    p.set_defaults(handler=run_push)

    p = verbs.add_parser("ls", help="list games, or a game's versions with their status")
    p.add_argument("game", nargs="?")
    p.add_argument("--platform", choices=PLATFORMS, default=None)
    p.set_defaults(handler=run_ls)

    p = verbs.add_parser("rm", help="remove a version (its neighbours are re-linked)")
    p.add_argument("game")
    p.add_argument("rm_version", metavar="VERSION")
    p.add_argument("--platform", choices=PLATFORMS, default=None)
    p.add_argument("--force", action="store_true", help="allow removing the base or the only version")
    p.set_defaults(handler=run_rm)

    p = verbs.add_parser("resync-steam", help="fetch Steam details again (one game, or every game with an app id)")
    p.add_argument("game", nargs="?")
    p.set_defaults(handler=run_resync)

    p = verbs.add_parser("delta-report", help="how well each file of a version's direct update diffed")
    p.add_argument("game")
    p.add_argument("report_version", metavar="VERSION")
    p.add_argument("--platform", choices=PLATFORMS, default=None)
    p.set_defaults(handler=run_delta_report)


def run_login(app: App) -> int:
    code = login_command.run(app)
    tokens = app.ctx.api.tokens
    if tokens is not None and tokens.scope != "admin":
        app.ctx.api.logout()
        raise PatcherError(f"{tokens.username or 'this account'} is not an admin on {app.ctx.server}: signed out again")
    return code


def run_new_game(app: App) -> int:
    a = app.args
    game = admin.new_game(app.ctx, slug=a.slug, title=a.title, app_id=a.app_id, private=a.private)
    human = f"created {game['slug']} ({game['title']}){' [private]' if game['is_private'] else ''}"
    if game.get("steam_error"):
        human += f"\nSteam metadata not fetched: {game['steam_error']}"
    app.output.result(game, human)
    return 0


def run_push(app: App) -> int:
    a = app.args
    result = admin.push_build(app.ctx, game=a.game, version=a.push_version, path=a.path, platform=a.platform,
                              notes=a.notes, wait=a.wait, progress=app.output.progress, note=app.output.note)
    human = (f"pushed {result.game} {result.version} ({result.platform}): {result.needed_files} of {result.files} "
             f"files new or changed, {format_bytes(result.sent_bytes)} sent for {format_bytes(result.needed_bytes)} "
             f"of changes ({format_bytes(result.total_bytes)} build) in {format_duration(result.seconds)}; "
             f"status {result.status}")
    if result.block_files:
        human += f"; {result.block_files} large files sent as deltas against the server's copies"
    if result.resumed_from:
        human += f" (resumed at byte {result.resumed_from})"
    app.output.result(result.to_dict(), human)
    return 0 if result.status != "failed" else 1


def run_ls(app: App) -> int:
    a = app.args
    data = admin.list_versions(app.ctx, slug=a.game, platform=a.platform)
    if a.game is None:
        lines = [f"{g['slug']:24} {g['title']:32} latest {g.get('latest_version') or '-'} "
                 f"[{', '.join(g.get('platforms') or [])}]" for g in data] or ["No games."]
        app.output.result({"games": data}, "\n".join(lines))
        return 0
    lines = [f"{v['name']:12} {v['platform']:8} {v['status']:9} {format_bytes(v['total_size']):>10}"
             f"{'' if v['published'] else '  (unpublished)'}" for v in data.get("versions", [])]
    app.output.result(data, "\n".join(lines) or f"{a.game} has no {data.get('platform')} version.")
    return 0


def run_rm(app: App) -> int:
    a = app.args
    result = admin.remove_version(app.ctx, slug=a.game, version=a.rm_version, platform=a.platform, force=a.force)
    app.output.result(result, "\n".join([f"removed {a.game} {result['removed']}", *result["messages"],
                                         *[f"queued {q}" for q in result["queued"]]]))
    return 0


def run_resync(app: App) -> int:
    if app.args.game:
        slugs = [app.args.game]
    else:
        slugs = [g["slug"] for g in admin.list_versions(app.ctx, slug=None)]
    results = [admin.resync_steam(app.ctx, slug=slug) for slug in slugs]
    app.output.result({"games": results}, "\n".join(f"{r['slug']}: {r['message']}" for r in results) or "No games.")
    return 0 if all(r["ok"] for r in results) else 1


def run_delta_report(app: App) -> int:
    a = app.args
    report = admin.delta_report(app.ctx, slug=a.game, version=a.report_version, platform=a.platform)
    if report["from_version"] is None:
        human = f"{a.game} {report['version']} is the base version ({report['status']}): no update to report"
    else:
        share = 100 * report["bundle_size"] / max(report["total_size"], 1)
        lines = [f"update {report['from_version']} -> {report['version']}: {format_bytes(report['bundle_size'])} "
                 f"to download for a {format_bytes(report['total_size'])} game ({share:.1f}%)",
                 f"{'patch':>10} {'file':>10} {'ratio':>6}  engine        path"]
        for row in report["files"][:40]:
            lines.append(f"{format_bytes(row['patch_size']):>10} {format_bytes(row['size']):>10} {row['ratio']:>6.2f}  "
                         f"{row['engine'] or '-':13} {row['path']}")
            if row.get("hint"):
                lines.append(f"    ! {row['hint']}")
        human = "\n".join(lines)
    app.output.result(report, human)
    return 0
