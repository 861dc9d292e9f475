"""``mist-patcher config``: show or change the settings (server URL, install folder, bandwidth limit)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from mist_patcher.cli.app import App
from mist_patcher.core.config import normalize_server_url
from mist_patcher.core.errors import ConfigError
from mist_patcher.core.units import format_rate, parse_rate

NAME = "config"
HELP = "show or change settings (server URL, install folder, bandwidth limit)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("--set-server", metavar="URL", help="default server URL")
    parser.add_argument("--set-install-root", metavar="DIR", help="folder new games are installed under")
    parser.add_argument("--set-limit-rate", metavar="RATE", help="bandwidth limit, e.g. 5M (0 = none)")
    parser.add_argument("--set-runner", metavar="COMMAND",
                        help="how `play` runs Windows builds off Windows, e.g. umu-run or 'wine' (empty = find one)")
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    args = app.args
    settings = app.ctx.settings
    changed = False
    if args.set_server is not None:
        settings.server_url = normalize_server_url(args.set_server) if args.set_server else ""
        changed = True
    if args.set_install_root is not None:
        settings.install_root = str(Path(args.set_install_root).expanduser().absolute()) if args.set_install_root else ""
        changed = True
    if args.set_limit_rate is not None:
        try:
            settings.limit_rate = parse_rate(args.set_limit_rate)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        changed = True
    if args.set_runner is not None:
        if args.set_runner.strip():
            settings.extra["runner"] = args.set_runner.strip()
        else:
            settings.extra.pop("runner", None)
        changed = True
    if changed:
        settings.save(app.ctx.home)
    data = asdict(settings)
    data["install_root_effective"] = str(settings.effective_install_root(app.ctx.home))
    human = "\n".join([
        f"server:       {settings.server_url or '(default; --server or MIST_SERVER override it)'}",
        f"install root: {data['install_root_effective']}",
        f"limit rate:   {format_rate(settings.limit_rate) if settings.limit_rate else 'none'}",
        f"runner:       {settings.extra.get('runner') or '(umu-run or wine on PATH, for Windows builds)'}",
        f"state folder: {app.ctx.home}",
    ])
    app.output.result(data, human)
    return 0
