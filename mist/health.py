"""Liveness (/healthz) and readiness (/readyz) probes for the proxy, systemd and monitoring."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from builds import objectstore

logger = logging.getLogger("mist.health")


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and can answer; nothing else is checked."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"
        return f"database unreachable: {exc.__class__.__name__}: {exc}".strip()
    return None


def _check_writable(path: Path) -> str | None:
    probe = path / f".readyz-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        return f"{path} not writable: {exc.strerror or exc}"
    return None


def _check_worker() -> str | None:
    from django_q.status import Stat

    try:
        clusters = Stat.get_all()
    except Exception as exc:
        return f"worker status unreadable: {exc}"
    if not clusters:
        return "no worker heartbeat in the last minute (is `manage.py qcluster` running?)"
    return None


def readiness_checks() -> dict[str, str | None]:
    """Run every readiness check; a value of None means the check passed."""
    checks = {"database": _check_database()}
    checks["storage"] = _check_writable(Path(settings.MIST_STORAGE_ROOT))
    checks["cache"] = _check_writable(Path(settings.MIST_CACHE_ROOT))
    checks["worker"] = _check_worker() if checks["database"] is None else "skipped: database down"
    if objectstore.enabled():
        checks["bucket"] = objectstore.check() or None
    return checks


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness_checks()
    failing = {name: error for name, error in checks.items() if error}
    body = {
        "status": "ok" if not failing else "unavailable",
        "checks": {name: ("ok" if error is None else error) for name, error in checks.items()},
        "failing": sorted(failing),
    }
    if failing:
        logger.warning("readiness failed", extra={"failing": ",".join(sorted(failing))})
    return JsonResponse(body, status=200 if not failing else 503)
