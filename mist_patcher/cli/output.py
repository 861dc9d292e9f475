"""How the CLI talks: a progress bar on a terminal, plain lines otherwise, JSON for scripts.

Results go to stdout (one JSON object with ``--json``); progress and notes go to stderr
(JSON lines with ``--json``), so ``mist-patcher --json list | jq`` sees only the result.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import Any, TextIO

from mist_patcher.core.progress import PHASE_LABELS, ProgressEvent
from mist_patcher.core.units import format_bytes, format_duration, format_rate


def render_bar(event: ProgressEvent, width: int) -> str:
    """One terminal line: label, bar, percent, bytes, speed, ETA (fits ``width`` columns)."""
    label = PHASE_LABELS.get(event.phase, event.phase.title())
    if event.phase in ("server", "restore"):
        amounts = f"{int(event.fraction * 100)}%"
    else:
        amounts = f"{format_bytes(event.done)} / {format_bytes(event.total)}"
    tail = f" {event.fraction * 100:5.1f}%  {amounts}"
    if event.phase not in ("server", "restore"):
        tail += f"  {format_rate(event.speed)}  ETA {format_duration(event.eta)}"
    head = f"{label:<11} "
    bar_width = max(10, min(40, width - len(head) - len(tail) - 4))
    filled = int(bar_width * event.fraction)
    bar = "[" + "#" * filled + "-" * (bar_width - filled) + "]"
    line = head + bar + tail
    return line[: max(20, width - 1)]


def render_plain(event: ProgressEvent) -> str:
    """One log line for pipes and files."""
    label = PHASE_LABELS.get(event.phase, event.phase.title()).lower()
    what = f" {event.message}" if event.message else ""
    if event.phase in ("server", "restore"):
        return f"{label}{what}: {int(event.fraction * 100)}%"
    return (
        f"{label}{what}: {event.fraction * 100:.0f}% ({format_bytes(event.done)} of {format_bytes(event.total)}), "
        f"{format_rate(event.speed)}, ETA {format_duration(event.eta)}"
    )


class Output:
    """Renders progress, notes and results for one CLI run."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        interactive: bool | None = None,
        quiet: bool = False,
        plain_interval: float = 2.0,
    ) -> None:
        self.json_mode = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.interactive = self.stderr.isatty() if interactive is None else interactive
        self.quiet = quiet
        self.plain_interval = plain_interval
        self._bar_open = False
        self._last_phase: tuple[str, str] | None = None
        self._last_plain = 0.0

    # Progress -------------------------------------------------------------------------------

    def progress(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        if self.json_mode:
            self._line(self.stderr, json.dumps(event.to_dict(), sort_keys=True))
            return
        if self.interactive:
            width = shutil.get_terminal_size((100, 20)).columns
            key = (event.phase, event.message)
            if self._bar_open and key != self._last_phase:
                self.stderr.write("\n")
            self._last_phase = key
            self.stderr.write("\r" + render_bar(event, width).ljust(width - 1))
            self.stderr.flush()
            self._bar_open = True
            return
        now = time.monotonic()
        key = (event.phase, event.message)
        finished = event.total > 0 and event.done >= event.total
        if key != self._last_phase or finished or now - self._last_plain >= self.plain_interval:
            self._line(self.stderr, render_plain(event))
            self._last_plain = now
            self._last_phase = key if not finished else None

    def _end_bar(self) -> None:
        if self._bar_open:
            self.stderr.write("\n")
            self.stderr.flush()
            self._bar_open = False

    # Messages -------------------------------------------------------------------------------

    def note(self, message: str) -> None:
        """A side remark (recovery done, route fallback): stderr."""
        if self.quiet and not self.json_mode:
            return
        self._end_bar()
        if self.json_mode:
            self._line(self.stderr, json.dumps({"event": "note", "message": message}))
        else:
            self._line(self.stderr, message)

    def error(self, message: str, *, code: int = 1, kind: str = "error") -> None:
        self._end_bar()
        if self.json_mode:
            self._line(self.stdout, json.dumps({"ok": False, "error": message, "kind": kind, "exit_code": code}))
        else:
            self._line(self.stderr, f"mist-patcher: error: {message}")

    def result(self, data: dict[str, Any], human: str | None) -> None:
        """The command's outcome: the JSON object, or the human text."""
        self._end_bar()
        if self.json_mode:
            self._line(self.stdout, json.dumps({"ok": True, **data}, sort_keys=True, default=str))
        elif human:
            self._line(self.stdout, human)

    @staticmethod
    def _line(stream: TextIO, text: str) -> None:
        stream.write(text + "\n")
        stream.flush()
