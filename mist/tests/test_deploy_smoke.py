"""The deploy/ folder: the full smoke test (gunicorn + worker + nginx + PostgreSQL, backup and restore),
and cheap checks that the production files agree with each other and with the settings."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

BASE_DIR = Path(settings.BASE_DIR)
DEPLOY = BASE_DIR / "deploy"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(DEPLOY / "systemd" / name)
    return parser


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m|h)?", value.strip())
    assert match, value
    return int(match.group(1)) * {"s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]


@pytest.mark.slow
@pytest.mark.needs_tool("nginx")
def test_smoke_test_passes(tmp_path: Path) -> None:
    """deploy/smoke_test.sh end to end; its own output says how long each stage took."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIST_", "DJANGO_"))}
    s = settings.DATABASES["default"]
    if s["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the smoke test needs PostgreSQL")
    auth = (s.get("USER") or "postgres") + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    env.update(
        MIST_SMOKE_PG=f"postgres://{auth}@{s.get('HOST') or '127.0.0.1'}:{s.get('PORT') or 5432}",
        MIST_PYTHON=sys.executable,
        TMPDIR=str(tmp_path),
    )
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        ["bash", str(DEPLOY / "smoke_test.sh")], env=env, capture_output=True, text=True, timeout=600,
    )
    sys.stdout.write(result.stdout[-6000:])
    assert result.returncode == 0, f"smoke test failed:\n{result.stdout[-8000:]}\n{result.stderr[-8000:]}"
    assert "[smoke] PASSED" in result.stdout


def test_worker_unit_outlasts_the_task_timeout_and_stops_gently() -> None:
    worker = _unit("mist-worker.service")["Service"]
    assert worker["KillMode"] == "mixed"
    assert _seconds(worker["TimeoutStopSec"]) > settings.Q_CLUSTER["timeout"]
    assert worker["ExecStart"].endswith("manage.py qcluster")
    web = _unit("mist-web.service")["Service"]
    assert web["KillMode"] == "mixed"
    for unit in (worker, web):
        assert unit["User"] == "mist" and unit["EnvironmentFile"] == "/etc/mist/mist.env"
        assert unit["NoNewPrivileges"] == "yes" and unit["ProtectSystem"] == "strict"


def test_compose_file_parses_and_matches_the_settings() -> None:
    # Docker cannot run on this machine: the file is parsed and checked, not started.
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"db", "web", "worker", "nginx"}
    assert services["db"]["image"].startswith("postgres:16")
    assert _seconds(services["worker"]["stop_grace_period"]) > settings.Q_CLUSTER["timeout"]
    assert services["worker"]["command"] == ["worker"] and services["web"]["command"] == ["web"]
    for name in ("web", "worker"):
        assert services[name]["environment"]["MIST_ACCEL_REDIRECT"] == "true"
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "./nginx/mist.conf:/etc/nginx/templates/default.conf.template:ro" in services["nginx"]["volumes"]
    # every ${MIST_*} placeholder of the nginx template is given to the nginx container
    placeholders = set(re.findall(r"\$\{(MIST_[A-Z_]+)\}", _template_without_comments()))
    assert placeholders <= set(services["nginx"]["environment"])


def _template_without_comments() -> str:
    lines = (DEPLOY / "nginx" / "mist.conf").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def _render(env: dict[str, str], env_file: str = "/dev/null") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIST_") and k != "STATIC_ROOT"}
    return subprocess.run(
        ["bash", str(DEPLOY / "render-nginx.sh"), env_file], env={**clean, **env}, capture_output=True, text=True,
        timeout=30,
    )


def test_render_nginx_fills_every_placeholder_from_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "mist.env"
    env_file.write_text((DEPLOY / ".env.production.example").read_text())

    result = _render({}, str(env_file))

    assert result.returncode == 0, result.stderr
    site = result.stdout
    assert "${" not in "\n".join(line for line in site.splitlines() if not line.lstrip().startswith("#"))
    assert "alias /srv/mist/storage/;" in site and "alias /srv/mist/cache/;" in site
    assert "set_real_ip_from 100.101.102.103;" in site
    assert "server 127.0.0.1:8000;" in site


def test_render_nginx_refuses_a_missing_value() -> None:
    result = _render({"MIST_STORAGE_ROOT": "/s", "MIST_CACHE_ROOT": "/c", "STATIC_ROOT": "/st"})
    assert result.returncode != 0
    assert "MIST_BORDER_PROXY is not set" in result.stderr


@pytest.mark.needs_tool("nginx")
def test_rendered_site_is_accepted_by_nginx(tmp_path: Path) -> None:
    result = _render({
        "MIST_BORDER_PROXY": "100.101.102.103", "MIST_STORAGE_ROOT": str(tmp_path / "s"),
        "MIST_CACHE_ROOT": str(tmp_path / "c"), "STATIC_ROOT": str(tmp_path / "st"), "MIST_LISTEN": "127.0.0.1:9",
        "MIST_ACCESS_LOG": str(tmp_path / "a.log"), "MIST_ERROR_LOG": str(tmp_path / "e.log"),
    })
    assert result.returncode == 0, result.stderr
    (tmp_path / "mist.conf").write_text(result.stdout)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/e.log; events {{}}\n"
        f"http {{ include /etc/nginx/mime.types; include {tmp_path}/mist.conf; }}\n"
    )
    nginx = shutil.which("nginx")
    assert nginx
    check = subprocess.run([nginx, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_gunicorn_config_is_valid_and_sized_for_two_cores() -> None:
    env: dict[str, Any] = {**os.environ, "SECRET_KEY": "x" * 60, "ALLOWED_HOSTS": "localhost"}
    for key in ("MIST_WEB_WORKERS", "MIST_WEB_THREADS", "MIST_WEB_TIMEOUT", "MIST_BIND"):
        env.pop(key, None)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run(
        [str(gunicorn), "--check-config", "--print-config", "-c", str(DEPLOY / "gunicorn.conf.py"), "mist.wsgi"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = dict(re.findall(r"^(\w+)\s+= (.*)$", result.stdout, re.M))
    assert (config["workers"], config["threads"], config["worker_class"]) == ("3", "4", "gthread")
    assert config["timeout"] == "120"
    assert config["bind"] == "['127.0.0.1:8000']"
