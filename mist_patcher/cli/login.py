"""``mist-patcher login``: username and password (prompted or from stdin), or a pairing code."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys

from mist_patcher.cli.app import App
from mist_patcher.core.errors import ConfigError

NAME = "login"
HELP = "sign in (username and password, or a pairing code from the store's account page)"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("--username", "-u", help="account name (prompted when missing)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (for scripts)")
    parser.add_argument("--pairing-code", metavar="CODE", help="pair this device with a code instead of a password")
    parser.add_argument("--device-name", default=socket.gethostname(), help="name shown for a paired device")
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    args = app.args
    api = app.ctx.api
    if args.pairing_code:
        tokens = api.redeem_pairing_code(args.pairing_code, device_name=args.device_name)
        who = tokens.username or f"device {tokens.device_id}"
    else:
        username = args.username
        if not username:
            if not sys.stdin.isatty():
                raise ConfigError("no --username given and no terminal to ask on")
            username = input("Username: ").strip()
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif sys.stdin.isatty():
            password = getpass.getpass("Password: ")
        else:
            raise ConfigError("no terminal to ask the password on: use --password-stdin or --pairing-code")
        if not username or not password:
            raise ConfigError("username and password must not be empty")
        tokens = api.login(username, password)
        who = username
    app.output.result(
        {"server": app.ctx.server, "username": tokens.username, "scope": tokens.scope,
         "device_id": tokens.device_id, "credentials": app.ctx.credentials.description},
        f"Logged in to {app.ctx.server} as {who} (tokens kept in {app.ctx.credentials.description}).",
    )
    return 0
