"""Security checks the permission walk does not cover: CSRF on every form, and no secret in the logs.

The permission walk (accounts/tests/test_permission_walk.py) proves who may call what. Here:
- every browser door (store, account, login, admin) refuses a POST without a CSRF token with 403,
  and the API refuses session-authenticated writes without one (only the public auth endpoints,
  which take credentials in the body and set no cookie, are exempt by design);
- the JSON log lines written while a friend signs in with a password, fails a login, refreshes a
  token, pairs a device and downloads through a signed URL carry none of those secrets.
Production settings and headers are checked on a real gunicorn in battery/test_production.py.
"""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern

from battery import tally
from builds import services as builds_services
from builds.services import push_version
from catalog.models import Game
from conftest import password_of
from downloads.services import signed_download_url
from mist.observability import JsonFormatter, RequestIdFilter
from mist.testing.gamedata import make_build

pytestmark = pytest.mark.django_db

SLUG = "space-game"
# The API's public auth endpoints: credentials in the body, no session, no cookie set: nothing to forge.
CSRF_EXEMPT_BY_DESIGN = {"api/v1/auth/token", "api/v1/auth/token/refresh", "api/v1/auth/logout",
                         "api/v1/auth/devices/redeem"}
_PARAM = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")


@pytest.fixture
def game(tmp_path: Path, admin_user: Any) -> Game:
    game = Game.objects.create(slug=SLUG, title="Space Game")
    version = push_version(game=game, name="1.0", source=make_build(tmp_path / "b", seed=61), user=admin_user).version
    builds_services.mark_ready(version=version)
    return game


def _example_url(pattern: Any) -> str:
    """The admin's regex routes (app_list, catch-all) as real URLs; any other regex route fails loudly."""
    if "app_label" in str(pattern.pattern):
        return "builds/"
    if str(pattern.pattern) == "(?P<url>.*)$":  # the admin's catch-all
        return "nowhere/"
    raise AssertionError(f"regex route {pattern.pattern}: give the CSRF walk an example URL for it")


def _routes(patterns: list[Any] | None = None, prefix: str = "") -> list[str]:
    out = []
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            out += _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            is_route = isinstance(pattern.pattern, RoutePattern)
            out.append(prefix + (str(pattern.pattern) if is_route else _example_url(pattern)))
    return out


def _fill(route: str, device_id: str) -> str:
    values = {"slug": SLUG, "version": "1.0", "device_id": device_id, "name": "header.png", "pair": "1.0__1.0",
              "path": "config.ini", "job_id": "6f1c8a1e-0000-4000-8000-000000000000",
              "upload_id": "6f1c8a1e-0000-4000-8000-000000000000", "object_id": "1", "app_label": "builds",
              "content_type_id": "1", "url": "x", "platform": "windows"}
    return "/" + _PARAM.sub(lambda m: values.get(m["name"], "1"), route)


def test_every_form_refuses_a_post_without_a_csrf_token(game: Game, friend: Any, admin_user: Any) -> None:
    from accounts.services import create_pairing_code, redeem_pairing_code

    code = create_pairing_code(user=friend).code
    device_id = redeem_pairing_code(code=code, name="pc", address="127.0.0.1")["device_id"]
    friend_browser = Client(enforce_csrf_checks=True)
    friend_browser.force_login(friend)
    admin_browser = Client(enforce_csrf_checks=True)
    admin_browser.force_login(admin_user)
    anonymous = Client(enforce_csrf_checks=True)
    not_refused = []
    walked = 0
    for route in _routes():
        if route in CSRF_EXEMPT_BY_DESIGN:
            continue
        url = _fill(route, device_id)
        if route.startswith(("admin/", "api/v1/builds/")):
            browsers = [admin_browser]  # only the admin's session could do anything there
        elif route.startswith("api/"):
            browsers = [friend_browser]  # without a session the API has nothing to forge (401)
        else:
            browsers = [friend_browser, anonymous]
        for browser in browsers:
            for method in ("post", "put", "delete") if route.startswith("api/") else ("post",):
                walked += 1
                tally.bad_inputs("CSRF walk: unsafe requests without a token")
                response = getattr(browser, method)(url, {"next": "/", "name": "x", "username": "friend",
                                                          "password": password_of(friend)})
                # The Swagger page renders its refusals as HTML without the reason: its 403 is enough.
                reason_shown = b"CSRF" in response.content or route == "api/docs/"
                if response.status_code != 403 or not reason_shown:
                    not_refused.append(f"{method.upper()} {url} -> {response.status_code}")
    assert walked > 60
    assert not not_refused, "\n".join(not_refused)
    # The 403s were CSRF refusals: the same session with a token gets through.
    friend_browser.get("/accounts/")
    token = friend_browser.cookies["csrftoken"].value
    assert friend_browser.post("/accounts/devices/pair", {"csrfmiddlewaretoken": token}).status_code == 200
    plan = friend_browser.post(f"/api/v1/games/{SLUG}/updates", {}, content_type="application/json",
                               HTTP_X_CSRFTOKEN=token)
    assert plan.status_code == 200, plan.content


def test_the_login_form_itself_needs_a_csrf_token(game: Game, friend: Any) -> None:
    browser = Client(enforce_csrf_checks=True)
    form = {"username": "friend", "password": password_of(friend)}
    refused = browser.post("/accounts/login/", form)
    assert refused.status_code == 403 and "_auth_user_id" not in browser.session
    browser.get("/accounts/login/")
    form["csrfmiddlewaretoken"] = browser.cookies["csrftoken"].value
    assert browser.post("/accounts/login/", form).status_code == 302
    assert browser.session["_auth_user_id"] == str(friend.pk)


# --- No secret in the logs ---------------------------------------------------------------------------


class _Capture:
    """The production log pipeline (JSON formatter, request-id filter) at INFO, into memory."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())
        self.handler.addFilter(RequestIdFilter())
        self.root = logging.getLogger()

    def __enter__(self) -> _Capture:
        self.level = self.root.level
        self.root.setLevel(logging.INFO)  # production's LOG_LEVEL (tests run at WARNING)
        self.root.addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.level)

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]


def test_no_secret_reaches_the_json_logs(game: Game, friend: Any, settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.Argon2PasswordHasher"]  # as in production
    password = password_of(friend)
    friend.set_password(password)
    friend.save()
    wrong_password = "Not-The-Passw0rd-4711!"
    secrets: dict[str, str] = {"password": password, "wrong password": wrong_password}
    browser = Client()
    api = Client()
    with _Capture() as capture:
        # a password login in the browser, a failed and a good one on the API
        assert browser.post("/accounts/login/", {"username": "friend", "password": password}).status_code == 302
        assert api.post("/api/v1/auth/token", {"username": "friend", "password": wrong_password},
                        content_type="application/json").status_code == 401
        pair = api.post("/api/v1/auth/token", {"username": "friend", "password": password},
                        content_type="application/json").json()
        secrets |= {"access token": pair["access"], "refresh token": pair["refresh"]}
        # a token refresh, then a replay of the used refresh token (refused, and logged as such)
        fresh = api.post("/api/v1/auth/token/refresh", {"refresh": pair["refresh"]}, content_type="application/json")
        assert fresh.status_code == 200
        secrets |= {"refreshed access": fresh.json()["access"], "refreshed refresh": fresh.json()["refresh"]}
        assert api.post("/api/v1/auth/token/refresh", {"refresh": pair["refresh"]},
                        content_type="application/json").status_code == 401
        # a pairing code shown on the account page, redeemed by a patcher
        page = browser.post("/accounts/devices/pair").content.decode()
        code = re.search(r'id="pairing-code"[^>]*>([^<]+)<', page)
        assert code, page[:2000]
        secrets["pairing code"] = code.group(1).strip()
        device = api.post("/api/v1/auth/devices/redeem", {"code": secrets["pairing code"], "name": "living room"},
                          content_type="application/json")
        assert device.status_code == 200, device.content
        secrets |= {"device access": device.json()["access"], "device refresh": device.json()["refresh"]}
        # a download through a signed URL (its refusals: test_signed_url_refusals_do_not_log_the_signature)
        url = signed_download_url(user=friend, kind="file", slug=SLUG, version="1.0", ref="config.ini")
        secrets["URL signature"] = parse_qs(urlsplit(url).query)["sig"][0]
        assert Client().get(url).status_code == 200
        # a bearer token that is not valid any more, and a logout with the device's refresh token
        api.get("/api/v1/games", HTTP_AUTHORIZATION=f"Bearer {pair['access']}x")
        assert api.post("/api/v1/auth/logout", {"refresh": secrets["device refresh"]},
                        content_type="application/json").status_code == 204
    lines = capture.lines
    events = {line["event"] for line in lines}
    # the capture saw the story, so an empty log cannot pass this test
    assert {"login succeeded", "login failed", "device paired"} <= events, sorted(events)
    raw = capture.stream.getvalue()
    leaked = [f"{name} in {line}" for name, value in secrets.items() for line in raw.splitlines() if value in line]
    tally.bad_inputs("secrets looked for in the JSON logs", len(secrets))
    assert not leaked, f"secrets in the logs: {leaked}"
    # Partial leaks count too: a token's signature part alone is a credential.
    for name, value in secrets.items():
        if value.count(".") == 2:
            assert value.rsplit(".", 1)[1] not in raw, f"the signature of the {name} is in the logs"


def test_signed_url_refusals_do_not_log_the_signature(game: Game, friend: Any) -> None:
    # A friend clicks an archive link before the archive is built (404), and an expired link (403): both
    # signatures are real; the first one becomes a working download link for anyone reading the logs.
    not_built = signed_download_url(user=friend, kind="archive", slug=SLUG, version="1.0")
    expired = signed_download_url(user=friend, kind="file", slug=SLUG, version="1.0", ref="config.ini", ttl=-10)
    with _Capture() as capture:
        assert Client().get(not_built).status_code == 404
        assert Client().get(expired).status_code == 403
    raw = capture.stream.getvalue()
    assert "Not Found: /dl/archive/" in raw and "Forbidden: /dl/file/" in raw
    tally.bad_inputs("secrets looked for in the JSON logs", 2)
    for url in (not_built, expired):
        signature = parse_qs(urlsplit(url).query)["sig"][0]
        assert signature not in raw, "a download URL's signature is in the logs"
