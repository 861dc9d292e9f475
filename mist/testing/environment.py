"""pytest plugin loaded before Django (`-p mist.testing.environment`): picks the test database.

PostgreSQL at DATABASE_URL, or at 127.0.0.1:5432 when it answers. With CI=true a missing
PostgreSQL is a failure; elsewhere it says so in one loud line and the suite runs on SQLite.
Also reports, in one line each, which external programs are missing (their tests are skipped).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile

import pytest

# Programs some tests drive for real; CI installs them all (.ci/run).
EXTERNAL_TOOLS = {
    "chromium": "browser tests of the store",
    "chromedriver": "browser tests of the store",
    "rdiff": "librsync interoperability tests",
    "nginx": "the X-Accel-Redirect deploy smoke test",
    "curl": "resume tests with real download clients",
    "wget": "resume tests with real download clients",
    "aria2c": "resume tests with real download clients",
}

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _postgres_answers(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _configure_environment() -> str:
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-0123456789abcdef")
    os.environ.setdefault("ALLOWED_HOSTS", "*")
    os.environ.setdefault("SESSION_COOKIE_SECURE", "false")
    os.environ.setdefault("CSRF_COOKIE_SECURE", "false")
    os.environ.setdefault("SECURE_HSTS_SECONDS", "0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("STEAM_APPDETAILS_URL", "http://127.0.0.1:9/steam-disabled-in-tests")
    os.environ.setdefault("DISCORD_WEBHOOK_URL", "")
    scratch = tempfile.mkdtemp(prefix="mist-test-")
    os.environ.setdefault("MIST_VAR_DIR", scratch)
    os.environ.setdefault("MIST_STORAGE_ROOT", os.path.join(scratch, "storage"))
    os.environ.setdefault("MIST_CACHE_ROOT", os.path.join(scratch, "cache"))
    if os.environ.get("DATABASE_URL"):
        return f"PostgreSQL/SQLite from DATABASE_URL ({os.environ['DATABASE_URL'].split('@')[-1]})"
    if _postgres_answers():
        os.environ["DATABASE_URL"] = "postgres://postgres@127.0.0.1:5432/mist"
        return "PostgreSQL at 127.0.0.1:5432"
    if IN_CI:
        raise pytest.UsageError(
            "CI=true but no PostgreSQL answers at 127.0.0.1:5432 and DATABASE_URL is unset: "
            "the suite must run on real PostgreSQL in CI."
        )
    sys.stderr.write(
        "\n!!! NO POSTGRESQL REACHABLE (DATABASE_URL unset, nothing on 127.0.0.1:5432): "
        "running the suite on SQLite; CI runs it on PostgreSQL !!!\n\n"
    )
    return "SQLite (no PostgreSQL reachable)"


DATABASE_DESCRIPTION = _configure_environment()


def missing_tools() -> dict[str, str]:
    return {name: why for name, why in EXTERNAL_TOOLS.items() if shutil.which(name) is None}


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"mist test database: {DATABASE_DESCRIPTION}"]
    missing = missing_tools()
    if missing:
        if IN_CI:
            lines.append(f"!!! CI=true and tools are missing: {', '.join(missing)} (their tests will FAIL)")
        else:
            lines.append(
                "!!! MISSING TOOLS, their tests are skipped: "
                + "; ".join(f"{n} ({why})" for n, why in missing.items())
            )
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = missing_tools()
    for item in items:
        for mark in item.iter_markers("needs_tool"):
            for tool in mark.args:
                if tool in missing and not IN_CI:
                    item.add_marker(pytest.mark.skip(reason=f"{tool} is not installed ({missing[tool]})"))
