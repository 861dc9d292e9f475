"""Helpers of the fault tests: catch a worker in the middle of a step, freeze it, kill it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builds.models import Job, Version


def freeze_when(worker: Any, condition: Callable[[], object], *, timeout: float = 120, what: str = "") -> object:
    """Poll fast for `condition`; the moment it holds, SIGSTOP the whole cluster so the state stays mid-step.

    Stopping first and killing after makes "mid-step" deterministic: a step of a few hundred
    milliseconds cannot finish between seeing its temporary file and the kill.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            os.killpg(worker.proc.pid, signal.SIGSTOP)
            return found
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited waiting for {what}:\n{worker.log()[-3000:]}")
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; worker log:\n{worker.log()[-3000:]}")


def kill_frozen(worker: Any) -> None:
    """SIGKILL a frozen cluster (a stopped process dies on SIGKILL at once)."""
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=10)


def temp_entries(folder: Path, name: str) -> list[Path]:
    """mistcore.fsutil's temporary siblings of `folder/name` (`.<name>.tmp-<hex>`)."""
    return sorted(folder.glob(f".{name}.tmp-*")) if folder.is_dir() else []


def ready(version_pk: int) -> bool:
    version = Version.objects.get(pk=version_pk)
    if version.status == Version.Status.FAILED:
        raise AssertionError(f"{version} failed on the worker: {version.error}")
    return version.status == Version.Status.READY


def jobs_settled() -> bool:
    """No job is queued or running any more."""
    return not Job.objects.active().exists()


def orphan_jobs() -> list[str]:
    """Jobs that are not done, or failed without saying why."""
    bad = [f"{j.kind} {j.key} {j.status}" for j in Job.objects.exclude(status=Job.Status.DONE)
           if j.status != Job.Status.FAILED or not j.error.strip()]
    return bad
