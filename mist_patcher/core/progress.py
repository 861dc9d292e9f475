"""Progress events from core operations, with speed and ETA, for the CLI and the GUI alike."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

PHASE_LABELS = {
    "download": "Downloading",
    "extract": "Extracting",
    "verify": "Verifying",
    "patch": "Patching",
    "signatures": "Signatures",
    "server": "Server",
    "restore": "Restoring",
}


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: ``phase`` (download, extract, verify, ...), bytes done of ``total``."""

    phase: str
    done: int
    total: int
    speed: float = 0.0  # bytes per second over the last few seconds
    eta: float | None = None  # seconds, None when unknown
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["event"] = "progress"
        data["speed"] = round(self.speed, 1)
        data["eta"] = None if self.eta is None else round(self.eta, 1)
        return data


ProgressCallback = Callable[[ProgressEvent], None]


def ignore_progress(event: ProgressEvent) -> None:
    """A progress callback that drops everything."""


class ProgressMeter:
    """Counts bytes of one phase from any number of threads and reports speed and ETA.

    Reports are throttled to ``interval`` seconds (plus the final one) so a fast loop does not
    flood a terminal or the Qt event queue.
    """

    def __init__(
        self,
        callback: ProgressCallback,
        *,
        phase: str,
        total: int,
        done: int = 0,
        message: str = "",
        interval: float = 0.1,
        window: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._callback = callback
        self._clock = clock
        self._lock = threading.Lock()
        self.phase = phase
        self.total = total
        self.done = done
        self.message = message
        self._interval = interval
        self._window = window
        self._samples: deque[tuple[float, int]] = deque([(clock(), done)])
        self._last_report = 0.0

    def _speed(self, now: float) -> float:
        while len(self._samples) > 2 and now - self._samples[1][0] > self._window:
            self._samples.popleft()
        t0, d0 = self._samples[0]
        elapsed = now - t0
        return (self.done - d0) / elapsed if elapsed > 0 else 0.0

    def _event(self, now: float) -> ProgressEvent:
        speed = self._speed(now)
        left = max(0, self.total - self.done)
        eta = left / speed if speed > 0 else (0.0 if left == 0 else None)
        return ProgressEvent(self.phase, self.done, self.total, speed, eta, self.message)

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            now = self._clock()
            self._samples.append((now, self.done))
            if now - self._last_report < self._interval and self.done < self.total:
                return
            self._last_report = now
            event = self._event(now)
        self._callback(event)

    def report(self, message: str | None = None) -> None:
        """Send a report now (phase start, message change)."""
        with self._lock:
            if message is not None:
                self.message = message
            now = self._clock()
            self._last_report = now
            event = self._event(now)
        self._callback(event)

    def finish(self) -> None:
        with self._lock:
            self.done = max(self.done, self.total)
            event = self._event(self._clock())
        self._callback(event)
