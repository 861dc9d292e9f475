"""What the battery tried and what held, collected while the tests run and printed at the end.

Tests record into this module (one pytest process, so plain module state is enough):
- fault cases are recorded by the `fault` marker (see battery/conftest.py), survived = passed;
- every bad input a test feeds a parser or the API is counted with `bad_inputs(...)`;
- the load test records how many patchers ended with the right files with `load(...)`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Tally:
    faults: dict[str, bool] = field(default_factory=dict)  # case -> survived
    skipped_faults: dict[str, str] = field(default_factory=dict)  # case -> why it did not run
    bad: Counter[str] = field(default_factory=Counter)  # parser or endpoint -> inputs tried
    load_ok: int | None = None
    load_total: int | None = None


TALLY = Tally()


def fault(case: str, *, survived: bool) -> None:
    """Record one fault case and whether the system recovered or failed cleanly."""
    TALLY.faults[case] = survived and TALLY.faults.get(case, True)


def fault_skipped(case: str, why: str) -> None:
    TALLY.skipped_faults[case] = why


def bad_inputs(target: str, n: int = 1) -> None:
    """Count `n` hostile or malformed inputs fed to `target` (a parser or an endpoint)."""
    TALLY.bad[target] += n


def load(*, ok: int, total: int) -> None:
    TALLY.load_ok, TALLY.load_total = ok, total
