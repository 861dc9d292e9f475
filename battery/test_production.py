"""Production shape, for real: gunicorn with deploy/gunicorn.conf.py and the production environment.

One run per module (a module fixture): DEBUG off, no test overrides of the cookie and HSTS
settings, Argon2 passwords, whitenoise's manifest static files (collectstatic first). Requests come
as nginx forwards them (`X-Forwarded-Proto: https`). Then: the settings and `check --deploy`, the
security headers and cookie flags on real responses, and what the process wrote to stdout (its JSON
log lines and gunicorn's access lines) checked for the secrets that went through it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import override_settings

from battery import tally

# django_db: so pytest-django sets up the test database even when only this module runs.
pytestmark = [pytest.mark.slow, pytest.mark.django_db]

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "Prod-Friend-Passw0rd!"
WRONG_PASSWORD = "Guessed-Wrong-Passw0rd!"
SLUG = "prod-game"
# Settings the test plugin (mist.testing.environment) relaxes for the suite: production must not see them.
TEST_ONLY = ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "DEBUG", "LOG_LEVEL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _production_env(*, storage: Path, cache: Path, static: Path, port: int) -> dict[str, str]:
    from mist.testing.worker import subprocess_env

    env = {k: v for k, v in subprocess_env().items() if k not in TEST_ONLY}
    env.update({
        "DEBUG": "false", "LOG_LEVEL": "INFO", "ALLOWED_HOSTS": "127.0.0.1",
        "MIST_STORAGE_ROOT": str(storage), "MIST_CACHE_ROOT": str(cache), "STATIC_ROOT": str(static),
        "MIST_BIND": f"127.0.0.1:{port}", "MIST_WEB_WORKERS": "1", "MIST_WEB_THREADS": "2",
    })
    return env


SETTINGS_DUMP = """
import json, django
django.setup()
from django.conf import settings as s
print(json.dumps({k: getattr(s, k) for k in (
    "DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SECURE_HSTS_SECONDS",
    "SECURE_CONTENT_TYPE_NOSNIFF", "X_FRAME_OPTIONS", "SECURE_REFERRER_POLICY", "SECURE_PROXY_SSL_HEADER",
    "PASSWORD_HASHERS")}))
"""


@pytest.fixture(scope="module")
def production(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        dict[str, Any]]:
    from accounts.models import User
    from builds import services as builds_services
    from builds.services import push_version
    from catalog.models import Game
    from downloads.services import signed_download_url
    from mist.testing.gamedata import make_build

    root = tmp_path_factory.mktemp("production")
    storage, cache, static = root / "storage", root / "cache", root / "static"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    record: dict[str, Any] = {"secrets": {"password": PASSWORD, "wrong password": WRONG_PASSWORD}}
    with django_db_blocker.unblock(), override_settings(
        MIST_STORAGE_ROOT=storage, MIST_CACHE_ROOT=cache,
        PASSWORD_HASHERS=["django.contrib.auth.hashers.Argon2PasswordHasher"],
    ):
        user = User.objects.create_user(username="prodfriend", password=PASSWORD)
        game = Game.objects.create(slug=SLUG, title="Prod Game")
        try:
            version = push_version(game=game, name="1.0", source=make_build(root / "build", seed=71)).version
            builds_services.mark_ready(version=version)
            env = _production_env(storage=storage, cache=cache, static=static, port=port)
            dump = subprocess.run([sys.executable, "-c", SETTINGS_DUMP], env={**env, "DJANGO_SETTINGS_MODULE":
                                  "mist.settings"}, cwd=REPO, capture_output=True, text=True, timeout=120)
            assert dump.returncode == 0, dump.stderr[-3000:]
            record["settings"] = json.loads(dump.stdout.strip().splitlines()[-1])
            record["check"] = subprocess.run(
                [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
            collect = subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput"], env=env, cwd=REPO,
                                     capture_output=True, text=True, timeout=300)
            assert collect.returncode == 0, collect.stderr[-3000:]
            log = root / "gunicorn.out"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "-c", str(REPO / "deploy" / "gunicorn.conf.py"),
                     "mist.wsgi:application"], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)
            try:
                _scenario(base, record, user=user, signed_url=signed_download_url)
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            record["output"] = log.read_text(errors="replace")
        finally:
            game.delete()
            user.delete()
    yield record


def _scenario(base: str, record: dict[str, Any], *, user: Any, signed_url: Any) -> None:
    """What a friend does in a browser and a patcher, behind nginx (HTTPS ends there)."""
    proxy = {"X-Forwarded-Proto": "https", "X-Request-ID": "battery-production"}
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or the worker is still booting
            pass
        assert time.monotonic() < deadline, "gunicorn did not come up"
        time.sleep(0.2)
    browser = requests.Session()
    page = browser.get(f"{base}/accounts/login/", headers=proxy, timeout=30)
    assert page.status_code == 200, page.text[:500]
    record["login_page"] = page
    record["plain_http_page"] = requests.get(f"{base}/accounts/login/", timeout=30)
    token = browser.cookies["csrftoken"]
    origin = base.replace("http://", "https://")
    # The cookie is Secure and this hop is plain HTTP (TLS ends at nginx): send it as the browser would have.
    login = requests.post(f"{base}/accounts/login/", allow_redirects=False, timeout=30,
                          data={"username": "prodfriend", "password": PASSWORD, "csrfmiddlewaretoken": token},
                          headers={**proxy, "Referer": f"{origin}/accounts/login/", "Origin": origin,
                                   "Cookie": f"csrftoken={token}"})
    assert login.status_code == 302, login.text[:1000]
    record["login"] = login
    api = requests.Session()
    bad = api.post(f"{base}/api/v1/auth/token", json={"username": "prodfriend", "password": WRONG_PASSWORD},
                   headers=proxy, timeout=30)
    assert bad.status_code == 401
    pair = api.post(f"{base}/api/v1/auth/token", json={"username": "prodfriend", "password": PASSWORD},
                    headers=proxy, timeout=30).json()
    fresh = api.post(f"{base}/api/v1/auth/token/refresh", json={"refresh": pair["refresh"]}, headers=proxy,
                     timeout=30).json()
    record["secrets"] |= {"access token": pair["access"], "refresh token": pair["refresh"],
                          "refreshed access": fresh["access"], "refreshed refresh": fresh["refresh"]}
    record["api"] = api.get(f"{base}/api/v1/games", headers={**proxy, "Authorization": f"Bearer {fresh['access']}"},
                            timeout=30)
    assert record["api"].status_code == 200
    good = signed_url(user=user, kind="file", slug=SLUG, version="1.0", ref="config.ini")
    assert requests.get(base + good, headers=proxy, timeout=30).status_code == 200
    not_built = signed_url(user=user, kind="archive", slug=SLUG, version="1.0")
    assert requests.get(base + not_built, headers=proxy, timeout=30).status_code == 404
    record["signatures"] = [parse_qs(urlsplit(u).query)["sig"][0] for u in (good, not_built)]


def test_production_settings_are_the_secure_ones(production: dict[str, Any]) -> None:
    s = production["settings"]
    assert s["DEBUG"] is False
    assert s["SESSION_COOKIE_SECURE"] is True and s["CSRF_COOKIE_SECURE"] is True and s["SESSION_COOKIE_HTTPONLY"]
    assert s["SECURE_HSTS_SECONDS"] >= 3600
    assert s["SECURE_CONTENT_TYPE_NOSNIFF"] is True and s["X_FRAME_OPTIONS"] == "DENY"
    assert s["SECURE_REFERRER_POLICY"] == "same-origin"
    assert s["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert s["PASSWORD_HASHERS"][0].endswith("Argon2PasswordHasher")
    check = production["check"]
    assert check.returncode == 0, check.stdout + check.stderr


def test_production_responses_carry_the_security_headers(production: dict[str, Any]) -> None:
    for response in (production["login_page"], production["api"]):
        h = response.headers
        assert h["Strict-Transport-Security"].startswith("max-age=") and int(
            h["Strict-Transport-Security"].split("=")[1].split(";")[0]) >= 3600
        assert h["X-Frame-Options"] == "DENY"
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "same-origin"
        assert h["X-Request-ID"] == "battery-production"
    # HSTS only over HTTPS (as RFC 6797 says); the other headers always.
    plain = production["plain_http_page"].headers
    assert "Strict-Transport-Security" not in plain and plain["X-Frame-Options"] == "DENY"


def _cookie(response: requests.Response, name: str) -> str:
    raw = response.raw.headers.getlist("Set-Cookie")
    found = [c for c in raw if c.startswith(f"{name}=")]
    assert found, f"no {name} cookie in {raw}"
    return found[0]


def test_production_cookies_are_secure(production: dict[str, Any]) -> None:
    csrf = _cookie(production["login_page"], "csrftoken")
    session = _cookie(production["login"], "sessionid")
    assert "Secure" in csrf and "SameSite=Lax" in csrf
    assert "Secure" in session and "HttpOnly" in session and "SameSite=Lax" in session
    # Secure even when the request came over plain HTTP: the flag is a setting, not a guess.
    assert "Secure" in _cookie(production["plain_http_page"], "csrftoken")


def _json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_production_json_logs_carry_no_secret(production: dict[str, Any]) -> None:
    output = production["output"]
    lines = _json_lines(output)
    events = {line.get("event") for line in lines}
    assert {"login succeeded", "login failed"} <= events, sorted(map(str, events))
    json_text = "\n".join(line for line in output.splitlines() if line.startswith("{"))
    tally.bad_inputs("secrets looked for in production logs", len(production["secrets"]))
    leaked = [name for name, value in production["secrets"].items() if value in output]
    assert not leaked, f"in the production output: {leaked}"
    assert all(line.get("request_id") for line in lines)
    assert "battery-production" in json_text  # the proxy's request id is on the lines


def test_production_logs_carry_no_download_signature(production: dict[str, Any]) -> None:
    output = production["output"]
    assert re.search(r"path=\"/dl/file/", output), "gunicorn's access lines are missing"
    for signature in production["signatures"]:
        assert signature not in output, "a signed URL's signature is in the production logs"


def test_nginx_access_log_format_has_no_query_string() -> None:
    conf = (REPO / "deploy" / "nginx" / "mist.conf").read_text()
    fmt = re.search(r"log_format\s+mist_main\s+(.*?);", conf, re.S)
    assert fmt, "log_format mist_main not found"
    assert not re.search(r"\$(request|request_uri|args|query_string|arg_sig)\b", fmt.group(1)), fmt.group(1)
