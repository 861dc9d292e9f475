"""What every subcommand gets: parsed arguments, the output, a lazily built core context."""

from __future__ import annotations

import argparse
from functools import cached_property

from mist_patcher.cli.output import Output
from mist_patcher.core.context import PatcherContext, open_context
from mist_patcher.core.control import Control
from mist_patcher.core.errors import ConfigError
from mist_patcher.core.recovery import recover_all
from mist_patcher.core.units import parse_rate


class App:
    """One CLI run."""

    def __init__(self, args: argparse.Namespace, output: Output) -> None:
        self.args = args
        self.output = output
        self.control = Control()

    @cached_property
    def ctx(self) -> PatcherContext:
        rate = None
        if getattr(self.args, "limit_rate", None) is not None:
            try:
                rate = parse_rate(self.args.limit_rate)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return open_context(server=self.args.server, limit_rate=rate)

    def recover(self) -> None:
        """Finish or roll back whatever a killed patcher left half done (run before every command)."""
        for outcome in recover_all(self.ctx):
            if outcome.outcome in ("rolled_back", "rolled_forward", "cleaned", "failed"):
                self.output.note(f"recovery: {outcome.slug}: {outcome.outcome}: {outcome.detail}")

    def target_slugs(self, game: str | None) -> list[str]:
        """The named game, or every installed game."""
        if game:
            return [game]
        return [record.slug for record in self.ctx.state.all()]
