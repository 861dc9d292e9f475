"""A real django-q2 cluster (`manage.py qcluster`) in a subprocess, on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

BASE_DIR = Path(settings.BASE_DIR)


def test_database_url() -> str:
    """The URL of the database the tests are using right now (the test_ database)."""
    s = connection.settings_dict
    if s["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{s['NAME']}"
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    auth = s.get("USER") or "postgres"
    if s.get("PASSWORD"):
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth}@{host}:{port}/{s['NAME']}"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must see the same database and roots as the test."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": test_database_url(),
            "MIST_STORAGE_ROOT": str(settings.MIST_STORAGE_ROOT),
            "MIST_CACHE_ROOT": str(settings.MIST_CACHE_ROOT),
            "MIST_HDIFF_MAX_BYTES": str(settings.MIST_HDIFF_MAX_BYTES),
            "MIST_CACHE_BUDGET_BYTES": str(settings.MIST_CACHE_BUDGET_BYTES),
            "DISCORD_WEBHOOK_URL": settings.DISCORD_WEBHOOK_URL,
            "STEAM_APPDETAILS_URL": settings.STEAM_APPDETAILS_URL,
            "PYTHONUNBUFFERED": "1",
            # The object storage backend (tests on MIST_STORAGE=s3 point the worker at the same bucket).
            "MIST_STORAGE": settings.MIST_STORAGE,
            "MIST_S3_ENDPOINT_URL": settings.MIST_S3_ENDPOINT_URL,
            "MIST_S3_BUCKET": settings.MIST_S3_BUCKET,
            "MIST_S3_REGION": settings.MIST_S3_REGION,
            "MIST_S3_ACCESS_KEY_ID": settings.MIST_S3_ACCESS_KEY_ID,
            "MIST_S3_SECRET_ACCESS_KEY": settings.MIST_S3_SECRET_ACCESS_KEY,
            "MIST_S3_PREFIX": settings.MIST_S3_PREFIX,
            "MIST_S3_PART_BYTES": str(settings.MIST_S3_PART_BYTES),
            "MIST_S3_LOCAL_BYTES": str(settings.MIST_S3_LOCAL_BYTES),
        }
    )
    env.update(extra)
    return env


class WorkerCluster:
    """Start/stop/kill a qcluster process; `wait_for` polls a condition while it works."""

    def __init__(self, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerCluster:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), "qcluster"],
            cwd=BASE_DIR,
            # The worker logs at INFO into its own file (the test process stays at WARNING): a timeout
            # then shows what the worker did last.
            env=subprocess_env(**{"LOG_LEVEL": "INFO", **self.extra_env}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the whole cluster (monitor, pusher and workers), as an OOM killer would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the cluster's leader (it stops its workers), then SIGKILL whatever is left."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, condition: Callable[[], object], *, timeout: float = 120, what: str = "") -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}) waiting for {what}:\n{self.log()}")
            time.sleep(0.3)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; unfinished jobs:\n{unfinished_jobs()}\n"
                             f"worker log:\n{self.log()[-5000:]}")


def unfinished_jobs() -> str:
    """The jobs still queued or running, one line each: what a timeout in a worker test is waiting on."""
    from builds.models import Job

    lines = [f"  {j.kind} {j.key} {j.status} attempts={j.attempts} progress={j.progress:.2f} "
             f"created={j.created_at:%H:%M:%S} started={j.started_at and f'{j.started_at:%H:%M:%S}'} "
             f"heartbeat={j.heartbeat_at and f'{j.heartbeat_at:%H:%M:%S}'}"
             for j in Job.objects.active().order_by("created_at")]
    return "\n".join(lines) or "  (none)"
