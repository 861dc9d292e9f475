"""Garbage collection on the UI thread only.

Python's cyclic garbage collector runs in whichever thread happens to allocate; if it frees a Qt
object there (a widget or a job owned by Python), Qt deletes it in the wrong thread and the app
can crash. As qutebrowser does, automatic collection is switched off and the UI thread collects
on a timer instead.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer


class MainThreadGarbageCollector(QObject):
    """Disables automatic GC and runs ``gc.collect`` from a QTimer on the thread that created it."""

    def __init__(self, parent: QObject | None = None, *, interval_ms: int = 1000) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.check)
        self._threshold = gc.get_threshold()
        gc.disable()
        self._timer.start(interval_ms)

    def check(self) -> None:
        # Collect like the automatic collector would, by generation counts.
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = self._threshold
        if c0 > t0:
            generation = 2 if c2 > t2 else (1 if c1 > t1 else 0)
            gc.collect(generation)

    def stop(self) -> None:
        self._timer.stop()
        gc.collect()
        gc.enable()
