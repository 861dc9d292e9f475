"""A token bucket shared by every download, so the bandwidth limit holds across all of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from mist_patcher.core.control import Control


class TokenBucket:
    """Allows ``rate`` bytes per second on average, with bursts of at most ``burst`` bytes.

    ``rate`` 0 means unlimited. The rate can be changed while downloads run (settings).
    """

    def __init__(
        self,
        rate: int = 0,
        *,
        burst_seconds: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._burst_seconds = burst_seconds
        self._rate = 0
        self._tokens = 0.0
        self._stamp = clock()
        self.set_rate(rate)

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def capacity(self) -> float:
        # Never below one read chunk, or a big read could wait forever for tokens that cannot pile up.
        return max(self._rate * self._burst_seconds, 64 * 1024.0)

    def set_rate(self, rate: int) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        with self._lock:
            self._refill()
            self._rate = int(rate)
            # Start empty: a new limit must not begin with a free burst.
            self._tokens = min(self._tokens, 0.0) if rate else 0.0

    def _refill(self) -> None:
        now = self._clock()
        if self._rate:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def consume(self, n: int, control: Control | None = None) -> None:
        """Take ``n`` bytes' worth of tokens, sleeping as long as the rate requires."""
        while n > 0:
            with self._lock:
                if not self._rate:
                    return
                self._refill()
                take = min(n, int(self.capacity))
                # Go into debt by ``take`` and sleep the debt off: keeps the average exact.
                self._tokens -= take
                wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
            n -= take
            if wait > 0:
                if control is not None:
                    control.sleep(wait)
                else:
                    time.sleep(wait)
