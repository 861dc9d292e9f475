"""``mist-patcher logout``: revoke the refresh token on the server and forget the tokens here."""

from __future__ import annotations

import argparse

from mist_patcher.cli.app import App

NAME = "logout"
HELP = "sign out and forget the stored tokens"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help=HELP, description=HELP)
    parser.set_defaults(handler=run)


def run(app: App) -> int:
    was_logged_in = app.ctx.api.logged_in
    revoked = app.ctx.api.logout()
    if not was_logged_in:
        human = "Not logged in."
    elif revoked:
        human = f"Logged out of {app.ctx.server}."
    else:
        human = f"Forgot the tokens for {app.ctx.server} (the server could not be told)."
    app.output.result({"server": app.ctx.server, "was_logged_in": was_logged_in, "revoked": revoked}, human)
    return 0
