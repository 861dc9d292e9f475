"""Child processes for the benchmarks: measured runs (time, peak memory) and background services.

Peak memory is the kernel's max RSS of a child as reported when it is reaped (``os.wait4``: the
counter ``resource.getrusage(RUSAGE_CHILDREN)`` reads, for that one child and what it reaped). On
Linux a child's counter starts from its parent's memory at fork time (the forked image's high-water
mark is kept across exec), so the measured command is started by a tiny fresh launcher process
(``_LAUNCHER``, ~10 MB) rather than by this big harness process: what it reports is the command's
own peak, give or take the launcher's few megabytes.

Every process started here gets its own process group and is registered, so a failure or a
Ctrl-C still stops it (and everything it started): ``stop_all`` runs from ``try/finally`` in the
CLI and from ``atexit``.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_RUNNING: list[Background] = []
# argv: RESULT_FILE CMD...; runs CMD, writes its max RSS (KiB) and exit code, exits with that code.
_LAUNCHER = """
import json, os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump({"max_rss_kib": usage.ru_maxrss, "code": code}, f)
sys.exit(code if code >= 0 else 128 - code)
"""


class ProcError(RuntimeError):
    """A benchmark child failed; the message quotes the end of its output."""


@dataclass
class Measured:
    """How a measured child ended: exit code, wall time, peak RSS (bytes) and its output."""

    returncode: int
    seconds: float
    max_rss: int
    output: str

    def check(self, what: str) -> Measured:
        if self.returncode != 0:
            raise ProcError(f"{what} failed with exit code {self.returncode}:\n{self.output[-3000:]}")
        return self


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_measured(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 3600,
    log: Path | None = None,
) -> Measured:
    """Run ``cmd`` to completion in its own process group; return its time, peak RSS and output."""
    log = log or Path(os.devnull)
    out_path = log if log != Path(os.devnull) else None
    fd, result_name = tempfile.mkstemp(prefix="bench-rusage-", suffix=".json")
    os.close(fd)
    result = Path(result_name)
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(result), *cmd],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = started + timeout
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    _kill_group(proc.pid, signal.SIGKILL)
                    pid, status, usage = os.wait4(proc.pid, 0)
                    proc.returncode = -9
                    raise ProcError(f"{cmd[0]} ... timed out after {timeout:.0f}s")
                time.sleep(0.02)
        except BaseException:
            _kill_group(proc.pid, signal.SIGKILL)
            try:
                os.waitpid(proc.pid, 0)
            except ChildProcessError:
                pass
            raise
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        # Anything the child left running in its group goes too.
        _kill_group(proc.pid, signal.SIGKILL)
    output = out_path.read_text(errors="replace") if out_path else ""
    try:
        child = json.loads(result.read_text())
        returncode, max_rss = int(child["code"]), int(child["max_rss_kib"]) * 1024
    except (OSError, ValueError, KeyError):
        returncode, max_rss = proc.returncode or -1, usage.ru_maxrss * 1024
    finally:
        result.unlink(missing_ok=True)
    return Measured(returncode=returncode, seconds=seconds, max_rss=max_rss, output=output)


class Background:
    """A long-running service (gunicorn, nginx, the worker) in its own process group, logged to a file."""

    def __init__(
        self, name: str, cmd: Sequence[str], *, env: Mapping[str, str] | None, cwd: Path | None, log: Path
    ) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(
            list(cmd),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _RUNNING.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, grace: float = 15) -> None:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; idempotent."""
        if self.proc.poll() is None:
            _kill_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._out.close()
        if self in _RUNNING:
            _RUNNING.remove(self)


def stop_all() -> None:
    """Stop every background service still running (newest first)."""
    for service in reversed(list(_RUNNING)):
        service.stop()


atexit.register(stop_all)
