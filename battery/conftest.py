"""The battery's plumbing: fault bookkeeping, the closing tally line, and running the Postgres restart last.

Markers (registered here, so `--strict-markers` accepts them):
- `@pytest.mark.fault("worker SIGKILL mid-archive")`: the test is one fault case; it survived if it passed.
- `@pytest.mark.runs_last`: moved to the very end of the session (the Postgres restart hurts
  whatever else runs at that moment, so nothing of ours runs after it).

Fault tests that live with their apps are counted too when they ran in the same session
(REFERENCED_FAULTS): the battery does not duplicate them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from battery import tally

# Fault cases covered by other apps' tests: node id -> the case they prove.
REFERENCED_FAULTS = {
    "deltas/tests/test_worker_faults.py::test_worker_killed_mid_delta_recovers": "worker SIGKILL mid-delta",
    "builds/tests/test_push.py::test_a_push_killed_mid_copy_leaves_nothing_visible": "push SIGKILL mid-copy",
    "mist_patcher/tests/test_e2e_live.py::test_sigkill_during_a_slow_download_keeps_the_old_version_and_resumes":
        "patcher SIGKILL mid-download",
    "mist_patcher/tests/test_e2e_live.py::test_sigkill_around_the_switch_in_recovers_by_itself":
        "patcher SIGKILL mid-apply (before and after the switch-in)",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fault(case): a battery fault case; it survived when the test passed")
    config.addinivalue_line("markers", "runs_last: run at the very end of the session (disrupts other tests)")


@pytest.hookimpl(trylast=True)  # after pytest-django's own reordering by test type
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.get_closest_marker("runs_last")]
    if last:
        items[:] = [item for item in items if not item.get_closest_marker("runs_last")] + last


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    marker = item.get_closest_marker("fault")
    if marker is not None:
        case = str(marker.args[0])
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            tally.fault_skipped(case, reason)
        elif report.when == "call" or report.failed:
            tally.fault(case, survived=report.passed)
    return report


def _referenced_outcomes(terminalreporter: Any) -> dict[str, bool]:
    """Node id -> passed, for the referenced app fault tests that ran in this session."""
    outcomes: dict[str, bool] = {}
    for key in ("passed", "failed", "error"):
        for report in terminalreporter.stats.get(key, []):
            nodeid = getattr(report, "nodeid", "")
            if nodeid not in REFERENCED_FAULTS:
                continue
            if key != "passed":
                outcomes[nodeid] = False  # a failure in any phase
            elif getattr(report, "when", "") == "call":
                outcomes.setdefault(nodeid, True)
    return outcomes


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    t = tally.TALLY
    if not (t.faults or t.skipped_faults or t.bad or t.load_total is not None):
        return  # the battery did not run in this session
    faults = dict(t.faults)
    referenced = _referenced_outcomes(terminalreporter)
    for nodeid, passed in sorted(referenced.items()):
        faults[f"{REFERENCED_FAULTS[nodeid]} [{nodeid.split('::')[0]}]"] = passed
    not_run = [case for nodeid, case in REFERENCED_FAULTS.items() if nodeid not in referenced]
    survived = sum(faults.values())
    load = "not run" if t.load_total is None else f"{t.load_ok}/{t.load_total} patchers ok"
    terminalreporter.write_sep("-", "reliability battery")
    for case, ok in faults.items():
        terminalreporter.write_line(f"  fault {'survived' if ok else 'NOT SURVIVED'}: {case}")
    for case, why in t.skipped_faults.items():
        terminalreporter.write_line(f"  fault skipped: {case} ({why})")
    for case in not_run:
        terminalreporter.write_line(f"  fault covered by an app test not run in this session: {case}")
    for target, n in sorted(t.bad.items()):
        terminalreporter.write_line(f"  bad inputs: {n:6d}  {target}")
    terminalreporter.write_line(
        f"battery: faults survived {survived}/{len(faults)}, bad inputs tried {sum(t.bad.values())}, load: {load}"
    )
