"""Browser pages: sign in/out, password change, and the account page with its device forms."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import AuditEntry, Device, PairingCode
from accounts.services import _hash_code
from accounts.tests.conftest import pair_device
from conftest import password_of

pytestmark = pytest.mark.django_db


def csrf_client() -> Client:
    return Client(enforce_csrf_checks=True)


def csrf_token(client: Client, url: str) -> str:
    page = client.get(url)
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert match, f"no CSRF token on {url}"
    return match.group(1).decode()


def test_url_names_are_provided() -> None:
    assert reverse("login") == "/accounts/login/"
    assert reverse("logout") == "/accounts/logout/"
    assert reverse("password_change") == "/accounts/password/"
    assert reverse("account") == "/accounts/"


def test_login_page_is_accessible_and_csrf_protected(friend: Any) -> None:
    client = csrf_client()
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    html = page.content.decode()
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert 'autocomplete="current-password"' in html
    # Without the token the POST is refused.
    refused = client.post("/accounts/login/", {"username": "friend", "password": password_of(friend)})
    assert refused.status_code == 403


def test_login_and_logout_through_the_forms(friend: Any) -> None:
    client = csrf_client()
    token = csrf_token(client, "/accounts/login/")
    response = client.post(
        "/accounts/login/", {"username": "friend", "password": password_of(friend), "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("store:library")
    assert client.get("/accounts/").status_code == 200
    assert AuditEntry.objects.filter(action="login.succeeded", actor_username="friend", data__channel="form").exists()
    # Logout is POST only (a GET cannot sign anyone out), with CSRF.
    assert client.get("/accounts/logout/").status_code == 405
    token = csrf_token(client, "/accounts/")
    response = client.post("/accounts/logout/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert response["Location"] == reverse("login")
    assert client.get("/accounts/").status_code == 302


def test_wrong_password_shows_an_error_without_logging_in(friend: Any) -> None:
    client = Client()
    response = client.post("/accounts/login/", {"username": "friend", "password": "wrong"})
    assert response.status_code == 200
    assert 'role="alert"' in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_there_is_no_public_signup() -> None:
    for path in ("/accounts/signup/", "/accounts/register/"):
        assert Client().get(path).status_code == 404


def test_password_change_page(friend: Any) -> None:
    client = csrf_client()
    assert client.get("/accounts/password/").status_code == 302  # login required
    client.force_login(friend)
    token = csrf_token(client, "/accounts/password/")
    page = client.get("/accounts/password/").content.decode()
    for field in ("id_old_password", "id_new_password1", "id_new_password2"):
        assert f'<label for="{field}">' in page
    response = client.post("/accounts/password/", {
        "old_password": password_of(friend), "new_password1": "Fresh-and-l0ng-enough",
        "new_password2": "Fresh-and-l0ng-enough", "csrfmiddlewaretoken": token,
    })
    assert response.status_code == 302
    assert response["Location"] == reverse("account")
    friend.refresh_from_db()
    assert friend.check_password("Fresh-and-l0ng-enough")
    # The session that changed the password stays signed in.
    assert client.get("/accounts/").status_code == 200
    assert AuditEntry.objects.filter(action="user.password_changed", target_id=str(friend.pk)).exists()


def test_password_change_with_a_wrong_old_password_changes_nothing(friend: Any) -> None:
    client = Client()
    client.force_login(friend)
    response = client.post("/accounts/password/", {
        "old_password": "wrong", "new_password1": "Fresh-and-l0ng-enough", "new_password2": "Fresh-and-l0ng-enough",
    })
    assert response.status_code == 200
    friend.refresh_from_db()
    assert friend.check_password(password_of(friend))


def test_account_page_requires_login() -> None:
    response = Client().get("/accounts/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/accounts/")


def test_account_page_lists_devices_and_pairs_a_new_one(friend: Any, outsider: Any) -> None:
    pair_device(friend, name="Desk PC")
    pair_device(outsider, name="Not yours")
    client = csrf_client()
    client.force_login(friend)
    page = client.get("/accounts/").content.decode()
    assert "friend" in page
    assert reverse("password_change") in page
    assert "Desk PC" in page
    assert "Not yours" not in page
    assert "Pair a patcher" in page
    assert page.count('name="csrfmiddlewaretoken"') >= 4  # pair, rename, revoke, sign out
    # when: the friend asks for a pairing code
    token = csrf_token(client, "/accounts/")
    response = client.post("/accounts/devices/pair", {"csrfmiddlewaretoken": token})
    # then: the page shows a fresh code whose hash is what the database holds
    assert response.status_code == 200
    shown = re.search(r'<code id="pairing-code"[^>]*>([A-Z0-9]{8})</code>', response.content.decode())
    assert shown is not None
    code = shown.group(1)
    row = PairingCode.objects.get(user=friend, used_at__isnull=True)
    assert row.code_hash == _hash_code(code)
    assert "<time datetime=" in response.content.decode()
    assert client.post("/accounts/devices/pair").status_code == 403  # CSRF
    assert client.get("/accounts/devices/pair").status_code == 405


def test_rename_and_revoke_a_device(friend: Any) -> None:
    device, _ = pair_device(friend, name="Old name")
    client = Client()
    client.force_login(friend)
    response = client.post(f"/accounts/devices/{device.pk}/rename", {"name": "Laptop"})
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.name == "Laptop"
    assert client.post(f"/accounts/devices/{device.pk}/rename", {"name": ""}).status_code == 400
    device.refresh_from_db()
    assert device.name == "Laptop"
    response = client.post(f"/accounts/devices/{device.pk}/revoke")
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.is_revoked
    page = client.get("/accounts/").content.decode()
    assert "“Laptop” was unpaired" in page  # the flash message, once
    assert "Laptop" not in client.get("/accounts/").content.decode()


def test_someone_elses_device_answers_404(friend: Any, outsider: Any) -> None:
    device, _ = pair_device(outsider, name="Theirs")
    client = Client()
    client.force_login(friend)
    assert client.post(f"/accounts/devices/{device.pk}/rename", {"name": "Mine now"}).status_code == 404
    assert client.post(f"/accounts/devices/{device.pk}/revoke").status_code == 404
    device.refresh_from_db()
    assert (device.name, device.is_revoked) == ("Theirs", False)


def test_admin_can_revoke_devices(client: Any, admin_user: Any, friend: Any) -> None:
    device, _ = pair_device(friend)
    client.force_login(admin_user)
    assert client.get("/admin/accounts/device/").status_code == 200
    response = client.post(
        "/admin/accounts/device/", {"action": "revoke_selected", "_selected_action": [str(device.pk)]}
    )
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.is_revoked
    assert AuditEntry.objects.filter(action="device.revoked", actor_username="admin").exists()
    assert Device.objects.count() == 1
