"""Entry point of ``mist-patcher`` (also ``python -m mist_patcher.cli.main``).

Exit codes: 0 success, 1 error, 2 bad usage or settings, 3 verify found damaged files,
4 not logged in, 130 cancelled (Ctrl-C; partial downloads are kept and resume next time).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from types import FrameType, ModuleType

from mist_patcher import __version__
from mist_patcher.cli import (
    admin,
    adopt,
    config,
    gui,
    install,
    list_games,
    login,
    logout,
    play,
    playtime,
    register_url_handler,
    repair,
    rollback,
    status,
    uninstall,
    update,
    verify,
)
from mist_patcher.cli.app import App
from mist_patcher.cli.output import Output
from mist_patcher.core.errors import Cancelled, PatcherError
from mistcore.errors import MistCoreError

COMMANDS: list[ModuleType] = [
    login, logout, list_games, install, adopt, update, play, playtime, verify, repair, rollback, uninstall, status, config,
    gui,
    register_url_handler, admin,
]
# Commands that only touch credentials or settings: no need to look at installs first.
NO_RECOVERY = {"login", "logout", "config", "gui", "register-url-handler", "admin"}


def _global_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, default: object = None) -> None:
    parser.add_argument("--server", metavar="URL", default=default,
                        help="server URL (default: MIST_SERVER, then the settings)")
    parser.add_argument("--json", action="store_true", default=default if default is not None else False,
                        help="machine-readable output: one JSON object on stdout")
    parser.add_argument("--limit-rate", metavar="RATE", default=default,
                        help="bandwidth limit for downloads, e.g. 5M (0 = none)")
    parser.add_argument("--quiet", "-q", action="store_true", default=default if default is not None else False,
                        help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mist-patcher",
        description="Install and update games from a Mist server.",
        epilog="State lives in MIST_PATCHER_HOME (default: your user data folder).",
    )
    parser.add_argument("-V", "--print-version", action="version", version=f"mist-patcher {__version__}")
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    # The global options work after the subcommand too (`install foo --server URL`); SUPPRESS keeps
    # a subcommand from resetting a value given before it.
    for subparser in sub.choices.values():
        _global_options(subparser.add_argument_group("global options"), default=argparse.SUPPRESS)
    return parser


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same clean path as Ctrl-C: the stage is discarded, partials are kept.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    output = Output(json_mode=args.json, quiet=args.quiet)
    app = App(args, output)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        if args.command not in NO_RECOVERY:
            app.recover()
        return int(args.handler(app))
    except KeyboardInterrupt:
        output.error("cancelled; partial downloads are kept and resume next time", code=130, kind="cancelled")
        return 130
    except Cancelled as exc:
        output.error(str(exc) or "cancelled", code=exc.exit_code, kind="cancelled")
        return exc.exit_code
    except PatcherError as exc:
        output.error(str(exc), code=exc.exit_code, kind=type(exc).__name__)
        return exc.exit_code
    except MistCoreError as exc:
        output.error(str(exc), code=1, kind=type(exc).__name__)
        return 1
    except OSError as exc:
        output.error(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), code=1, kind="OSError")
        return 1


if __name__ == "__main__":
    sys.exit(main())
