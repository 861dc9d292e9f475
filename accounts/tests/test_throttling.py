"""Brute-force protection: the API and the login form share one database-backed failure count."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import F
from django.test import Client, RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.addresses import client_address
from accounts.models import LoginFailure
from accounts.throttling import LoginThrottled, check_allowed, record_failure
from conftest import password_of

pytestmark = pytest.mark.django_db

TOKEN = "/api/v1/auth/token"
LOGIN = "/accounts/login/"


def api_login(username: str, password: str, address: str = "127.0.0.1") -> Any:
    return APIClient(REMOTE_ADDR=address).post(TOKEN, {"username": username, "password": password}, format="json")


def form_login(username: str, password: str, address: str = "127.0.0.1") -> Any:
    return Client(REMOTE_ADDR=address).post(LOGIN, {"username": username, "password": password})


def test_api_throttles_a_username_after_five_failures(friend: Any) -> None:
    for _ in range(5):
        assert api_login("friend", "wrong").status_code == 401
    # Even the right password is refused while the username is locked.
    response = api_login("friend", password_of(friend))
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 890 <= retry_after <= 900
    assert "try again in" in response.json()["detail"]


def test_form_throttles_a_username_after_five_failures(friend: Any) -> None:
    for _ in range(5):
        response = form_login("friend", "wrong")
        assert response.status_code == 200
        assert b"Please enter a correct username and password" in response.content
    response = form_login("friend", password_of(friend))
    assert response.status_code == 429
    assert 890 <= int(response["Retry-After"]) <= 900
    assert b"Too many failed sign-in attempts" in response.content
    assert "_auth_user_id" not in response.wsgi_request.session


def test_api_and_form_failures_share_one_count(friend: Any) -> None:
    for _ in range(3):
        api_login("friend", "wrong")
    for _ in range(2):
        form_login("friend", "wrong")
    assert api_login("friend", password_of(friend)).status_code == 429
    assert form_login("friend", password_of(friend)).status_code == 429


def test_username_count_ignores_case_and_spaces(friend: Any) -> None:
    for name in ("friend", "FRIEND", " Friend", "friend ", "fRiEnD"):
        api_login(name, "wrong")
    assert api_login("friend", password_of(friend)).status_code == 429


def test_an_address_is_throttled_after_twenty_failures_across_usernames(friend: Any, outsider: Any) -> None:
    for i in range(20):
        assert api_login(f"guess{i}", "wrong", address="127.0.0.9").status_code == 401
    blocked = api_login("outsider", password_of(outsider), address="127.0.0.9")
    assert blocked.status_code == 429
    assert int(blocked["Retry-After"]) > 0
    assert form_login("friend", password_of(friend), address="127.0.0.9").status_code == 429
    # Another address is not affected.
    assert api_login("outsider", password_of(outsider), address="127.0.0.10").status_code == 200


def test_failures_older_than_the_window_no_longer_count(friend: Any) -> None:
    for _ in range(5):
        api_login("friend", "wrong")
    assert api_login("friend", password_of(friend)).status_code == 429
    # Time travel: the failures happened 15 minutes and 1 second ago.
    LoginFailure.objects.update(at=F("at") - timedelta(minutes=15, seconds=1))
    assert api_login("friend", password_of(friend)).status_code == 200


def test_retry_after_counts_down_from_the_oldest_failure_that_matters() -> None:
    now = timezone.now()
    for minutes_ago in (10, 8, 6, 4, 2):
        record_failure(kind="password", username="friend", address="127.0.0.1", now=now - timedelta(minutes=minutes_ago))
    with pytest.raises(LoginThrottled) as caught:
        check_allowed(username="friend", address="127.0.0.1", now=now)
    # The failure of 10 minutes ago leaves the 15-minute window in 5 minutes.
    assert caught.value.retry_after == 300
    check_allowed(username="friend", address="127.0.0.1", now=now + timedelta(minutes=5, seconds=1))


def test_a_successful_login_clears_the_usernames_failures(friend: Any) -> None:
    for _ in range(4):
        api_login("friend", "wrong")
    assert api_login("friend", password_of(friend)).status_code == 200
    for _ in range(4):
        api_login("friend", "wrong")
    assert api_login("friend", password_of(friend)).status_code == 200


def test_limits_are_configurable(settings: Any, friend: Any) -> None:
    settings.MIST_LOGIN_FAILURES_PER_USERNAME_ADDRESS = 2
    api_login("friend", "wrong")
    api_login("friend", "wrong")
    assert api_login("friend", password_of(friend)).status_code == 429


def test_throttled_requests_are_not_counted_as_failures(friend: Any) -> None:
    for _ in range(5):
        api_login("friend", "wrong")
    for _ in range(3):
        api_login("friend", "wrong")
    assert LoginFailure.objects.count() == 5


def test_logins_are_logged_without_the_password(friend: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mist.auth")
    api_login("friend", "Sup3r-secret-typo")
    api_login("friend", password_of(friend))
    form_login("friend", "An0ther-secret-typo")
    records = [r for r in caplog.records if r.name == "mist.auth"]
    events = [(r.getMessage(), r.__dict__.get("channel")) for r in records]
    assert events == [("login failed", "api"), ("login succeeded", "api"), ("login failed", "form")]
    assert all(r.__dict__.get("username") == "friend" for r in records)
    assert all(r.__dict__.get("address") == "127.0.0.1" for r in records)
    everything = json.dumps([{k: str(v) for k, v in vars(r).items()} for r in records])
    for secret in ("Sup3r-secret-typo", "An0ther-secret-typo", password_of(friend)):
        assert secret not in everything


def test_forwarded_for_is_ignored_without_trusted_proxies(settings: Any) -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="127.0.0.77")
    assert client_address(request) == "127.0.0.1"
    settings.MIST_TRUSTED_PROXIES = 1
    # The client may prepend anything; only the entry our proxy appended counts.
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6, 127.0.0.77")
    assert client_address(request) == "127.0.0.77"


def test_spoofed_forwarded_for_does_not_escape_the_address_throttle() -> None:
    for i in range(20):
        APIClient(REMOTE_ADDR="127.0.0.5", HTTP_X_FORWARDED_FOR=f"127.1.0.{i}").post(
            TOKEN, {"username": f"guess{i}", "password": "x"}, format="json"
        )
    response = APIClient(REMOTE_ADDR="127.0.0.5", HTTP_X_FORWARDED_FOR="127.1.1.1").post(
        TOKEN, {"username": "someone", "password": "x"}, format="json"
    )
    assert response.status_code == 429


def test_the_admin_login_page_is_throttled_too(admin_user: Any) -> None:
    for _ in range(5):
        response = Client().post("/admin/login/", {"username": "admin", "password": "wrong"})
        assert response.status_code == 200
    response = Client().post("/admin/login/", {"username": "admin", "password": password_of(admin_user)})
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert b"Too many failed sign-in attempts" in response.content
    assert LoginFailure.objects.filter(username="admin").count() == 5


def test_the_admin_login_still_works_and_refuses_friends(admin_user: Any, friend: Any) -> None:
    client = Client()
    response = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": password_of(admin_user)})
    assert response.status_code == 302
    assert client.get("/admin/").status_code == 200
    refused = Client().post("/admin/login/", {"username": "friend", "password": password_of(friend)})
    assert refused.status_code == 200
    assert b"staff account" in refused.content


# --- Issue 18 point 5: a stranger cannot lock the owner out ------------------------------------------------


def test_a_stranger_cannot_lock_the_owner_out(admin_user: Any) -> None:
    """Before: 5 wrong passwords from anywhere locked the admin for 15 minutes, from everywhere."""
    for _ in range(5):
        assert api_login("admin", "wrong", address="203.0.113.7").status_code == 401
    assert api_login("admin", password_of(admin_user), address="203.0.113.7").status_code == 429  # the stranger's
    assert api_login("admin", password_of(admin_user), address="198.51.100.2").status_code == 200  # the owner's
    assert form_login("admin", password_of(admin_user), address="198.51.100.3").status_code == 302


def test_the_global_username_limit_stops_guessing_from_many_addresses(friend: Any, settings: Any) -> None:
    settings.MIST_LOGIN_FAILURES_PER_USERNAME = 12
    for i in range(12):  # 4 addresses x 3 guesses: each under its own pair and address limits
        assert api_login("friend", "wrong", address=f"203.0.113.{i // 3}").status_code == 401
    # Every address that guessed is now locked for this username, even below its pair limit ...
    for i in range(4):
        response = api_login("friend", "wrong", address=f"203.0.113.{i}")
        assert response.status_code == 429
        assert 3590 <= int(response["Retry-After"]) <= 3600
    # ... and one more guess from a fresh address is counted and locks that address too ...
    assert api_login("friend", "wrong", address="203.0.113.50").status_code == 401
    assert api_login("friend", password_of(friend), address="203.0.113.50").status_code == 429
    # ... while the owner on an address that never failed signs in.
    assert api_login("friend", password_of(friend), address="192.0.2.1").status_code == 200


def test_the_owners_sign_in_does_not_reset_a_strangers_count(friend: Any) -> None:
    for _ in range(4):
        api_login("friend", "wrong", address="203.0.113.7")
    assert api_login("friend", password_of(friend), address="192.0.2.1").status_code == 200
    api_login("friend", "wrong", address="203.0.113.7")
    assert api_login("friend", password_of(friend), address="203.0.113.7").status_code == 429


def test_pairing_code_guesses_count_against_the_address_only(friend: Any) -> None:
    for _ in range(20):
        record_failure(kind="pairing", username="", address="203.0.113.8")
    with pytest.raises(LoginThrottled):
        check_allowed(username="friend", address="203.0.113.8")
    check_allowed(username="friend", address="192.0.2.9")
