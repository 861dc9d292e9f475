"""Pause, resume and cancel for long operations, checked at every chunk they process."""

from __future__ import annotations

import threading

from mist_patcher.core.errors import Cancelled


class Control:
    """Shared between the thread doing the work and the one driving it (CLI signal, GUI button)."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._running = threading.Event()
        self._running.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()  # wake a paused worker so it can see the cancel

    def pause(self) -> None:
        if not self._cancel.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def checkpoint(self) -> None:
        """Raise Cancelled if cancelled; block here while paused."""
        while True:
            if self._cancel.is_set():
                raise Cancelled("cancelled")
            if self._running.wait(0.2):
                if self._cancel.is_set():
                    raise Cancelled("cancelled")
                return

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up (and raise Cancelled) as soon as the operation is cancelled."""
        if self._cancel.wait(seconds):
            raise Cancelled("cancelled")


NEVER_CANCELLED = Control()
