"""Human-readable sizes, rates and durations, and parsing of ``5M``-style rate limits."""

from __future__ import annotations

import math
import re

_UNITS = ["B", "KB", "MB", "GB", "TB"]
_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(i?[bB]?)(?:/s)?\s*")
_MULTIPLIERS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KB`` (binary multiples, the way file managers show sizes)."""
    n = float(n)
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """``1048576`` -> ``1.0 MB/s``."""
    return f"{format_bytes(bytes_per_second)}/s"


def format_duration(seconds: float | None) -> str:
    """``95`` -> ``1m35s``; unknown (None, inf) -> ``--``."""
    if seconds is None or math.isinf(seconds) or math.isnan(seconds) or seconds < 0:
        return "--"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def parse_rate(text: str | int | float | None) -> int:
    """``"5M"`` -> 5 MiB/s in bytes; ``"0"``, ``""`` or None -> 0 (no limit); ValueError if unreadable."""
    if text is None:
        return 0
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"rate limit must not be negative, got {text}")
        return int(text)
    if text.strip() == "":
        return 0
    match = _RATE.fullmatch(text)
    if not match:
        raise ValueError(f"unreadable rate {text!r}: use a number of bytes per second with K, M or G, e.g. 5M")
    number, prefix, _ = match.groups()
    return int(float(number) * _MULTIPLIERS[prefix.lower()])
