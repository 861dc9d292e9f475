"""JWT issue, refresh, logout and revocation over the real API."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import jwt
import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts import services
from accounts.authentication import token_pair_for
from accounts.tests.conftest import bearer, pair_device
from conftest import password_of
from mist import settings as project_settings

pytestmark = [pytest.mark.django_db, pytest.mark.urls("accounts.tests.probe_urls")]

TOKEN = "/api/v1/auth/token"
REFRESH = "/api/v1/auth/token/refresh"
LOGOUT = "/api/v1/auth/logout"


def login(client: APIClient, user: Any, password: str | None = None) -> Any:
    return client.post(TOKEN, {"username": user.username, "password": password or password_of(user)}, format="json")


def test_password_login_issues_a_pair_scoped_by_role(api_client: APIClient, friend: Any, admin_user: Any) -> None:
    for user, scope in ((friend, "user"), (admin_user, "admin")):
        response = login(api_client, user)
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["scope"] == scope
        assert AccessToken(body["access"])["scope"] == scope
        assert RefreshToken(body["refresh"])["scope"] == scope
        assert "device" not in AccessToken(body["access"])
        me = bearer(body["access"]).get("/probe/whoami")
        assert me.json() == {"username": user.username, "scope": scope, "device": None}
    friend.refresh_from_db()
    assert friend.last_login is not None


def test_passwords_are_hashed_with_argon2id(settings: Any, django_user_model: Any) -> None:
    settings.PASSWORD_HASHERS = project_settings.PASSWORD_HASHERS
    user = django_user_model.objects.create_user(username="hashed", password="a-long-Passw0rd!")
    assert user.password.startswith("argon2$argon2id$")
    assert user.check_password("a-long-Passw0rd!")


@pytest.mark.parametrize(
    ("username", "password"),
    [("friend", "wrong-password"), ("nobody", "whatever-Passw0rd!"), ("FRIEND", "friend-Passw0rd!")],
    ids=["wrong-password", "unknown-user", "wrong-case"],
)
def test_refused_logins_answer_401_and_issue_nothing(
    api_client: APIClient, friend: Any, username: str, password: str
) -> None:
    response = api_client.post(TOKEN, {"username": username, "password": password}, format="json")
    assert response.status_code == 401
    assert response.json() == {"detail": "Wrong username or password."}
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert OutstandingToken.objects.count() == 0


def test_inactive_user_cannot_log_in(api_client: APIClient, friend: Any) -> None:
    friend.is_active = False
    friend.save()
    response = login(api_client, friend)
    assert response.status_code == 401
    assert OutstandingToken.objects.count() == 0


@pytest.mark.parametrize("url", [TOKEN, REFRESH, LOGOUT, "/api/v1/auth/devices/redeem"])
def test_malformed_json_is_a_400_with_detail(api_client: APIClient, url: str) -> None:
    response = api_client.post(url, data='{"username": "friend", ', content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_missing_fields_are_a_400_naming_them(api_client: APIClient) -> None:
    response = api_client.post(TOKEN, {"username": "friend"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "Invalid input."
    assert "password" in body["errors"]


def test_a_stale_bearer_header_does_not_block_login(friend: Any) -> None:
    client = bearer("not-a-jwt")
    assert login(client, friend).status_code == 200


def test_refresh_rotates_and_the_old_refresh_token_is_single_use(api_client: APIClient, friend: Any) -> None:
    first = login(api_client, friend).json()
    rotated = api_client.post(REFRESH, {"refresh": first["refresh"]}, format="json")
    assert rotated.status_code == 200
    body = rotated.json()
    assert set(body) == {"access", "refresh", "scope"}
    assert body["refresh"] != first["refresh"]
    assert bearer(body["access"]).get("/probe/whoami").status_code == 200
    again = api_client.post(REFRESH, {"refresh": first["refresh"]}, format="json")
    assert again.status_code == 401
    assert "blacklisted" in again.json()["detail"]


def test_refresh_rederives_scope_for_a_demoted_admin(api_client: APIClient, admin_user: Any) -> None:
    pair = login(api_client, admin_user).json()
    assert bearer(pair["access"]).get("/probe/admin").status_code == 200
    # when: the admin is demoted while holding an admin-scope token
    admin_user.is_staff = False
    admin_user.save()
    # then: the old access token no longer opens admin endpoints (is_staff is checked too) ...
    assert bearer(pair["access"]).get("/probe/admin").status_code == 403
    # ... and a refresh yields user scope
    refreshed = api_client.post(REFRESH, {"refresh": pair["refresh"]}, format="json").json()
    assert refreshed["scope"] == "user"
    assert AccessToken(refreshed["access"])["scope"] == "user"
    assert bearer(refreshed["access"]).get("/probe/admin").status_code == 403


def test_refresh_rederives_scope_for_a_promoted_friend(api_client: APIClient, friend: Any) -> None:
    pair = login(api_client, friend).json()
    friend.is_staff = True
    friend.save()
    # A user-scope token of a now-staff user is still refused: scope AND is_staff are needed.
    assert bearer(pair["access"]).get("/probe/admin").status_code == 403
    refreshed = api_client.post(REFRESH, {"refresh": pair["refresh"]}, format="json").json()
    assert refreshed["scope"] == "admin"
    assert bearer(refreshed["access"]).get("/probe/admin").status_code == 200


def test_user_scope_token_gets_403_on_admin_endpoint(friend_api: APIClient, admin_api: APIClient) -> None:
    response = friend_api.get("/probe/admin")
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]
    assert admin_api.get("/probe/admin").status_code == 200


def test_session_staff_user_passes_admin_scope(client: Any, admin_user: Any, friend: Any) -> None:
    client.force_login(admin_user)
    assert client.get("/probe/admin").status_code == 200
    client.force_login(friend)
    assert client.get("/probe/admin").status_code == 403


def test_anonymous_gets_401_with_bearer_challenge(api_client: APIClient) -> None:
    response = api_client.get("/probe/whoami")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_deactivated_user_is_cut_off_at_the_next_request(api_client: APIClient, friend: Any) -> None:
    pair = login(api_client, friend).json()
    client = bearer(pair["access"])
    assert client.get("/probe/whoami").status_code == 200
    friend.is_active = False
    friend.save()
    response = client.get("/probe/whoami")
    assert response.status_code == 401
    assert "inactive" in response.json()["detail"]
    refused = api_client.post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "No active account for this token."


def test_expired_access_token_is_401(friend: Any) -> None:
    token = AccessToken.for_user(friend)
    token["scope"] = "user"
    token.set_exp(from_time=timezone.now() - timedelta(hours=1))
    response = bearer(str(token)).get("/probe/whoami")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid" or "expired" in str(response.json())


def test_forged_token_is_401(friend: Any, admin_user: Any) -> None:
    # A token claiming the admin, signed with a key that is not ours.
    genuine = AccessToken(token_pair_for(friend)["access"])  # type: ignore[arg-type]
    payload = dict(genuine.payload, user_id=str(admin_user.pk), scope="admin")
    forged = jwt.encode(payload, "not-the-server-secret-" * 3, algorithm="HS256")
    assert bearer(forged).get("/probe/admin").status_code == 401
    assert bearer(forged).get("/probe/whoami").status_code == 401


def test_an_access_token_is_not_a_refresh_token(api_client: APIClient, friend: Any) -> None:
    pair = login(api_client, friend).json()
    response = api_client.post(REFRESH, {"refresh": pair["access"]}, format="json")
    assert response.status_code == 401
    assert "wrong type" in response.json()["detail"]


def test_logout_blacklists_the_refresh_token(api_client: APIClient, friend: Any) -> None:
    pair = login(api_client, friend).json()
    response = api_client.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 204
    assert BlacklistedToken.objects.filter(token__jti=RefreshToken(pair["refresh"], verify=False)["jti"]).exists()
    assert api_client.post(REFRESH, {"refresh": pair["refresh"]}, format="json").status_code == 401
    # A second logout with the same token changes nothing and says why.
    again = api_client.post(LOGOUT, {"refresh": pair["refresh"]}, format="json")
    assert again.status_code == 401
    assert "blacklisted" in again.json()["detail"]


def test_logout_with_garbage_is_401_and_changes_nothing(api_client: APIClient, friend: Any) -> None:
    login(api_client, friend)
    before = BlacklistedToken.objects.count()
    response = api_client.post(LOGOUT, {"refresh": "garbage"}, format="json")
    assert response.status_code == 401
    assert BlacklistedToken.objects.count() == before


def test_password_change_revokes_password_tokens_but_not_device_tokens(api_client: APIClient, friend: Any) -> None:
    password_pair = login(api_client, friend).json()
    _, device_pair = pair_device(friend)
    friend.set_password("a-brand-new-Passw0rd!")
    friend.save()
    assert api_client.post(REFRESH, {"refresh": password_pair["refresh"]}, format="json").status_code == 401
    assert api_client.post(REFRESH, {"refresh": device_pair["refresh"]}, format="json").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_of_one_token_succeed_once(friend: Any) -> None:
    refresh = token_pair_for(friend)["refresh"]
    results: list[str] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        try:
            barrier.wait()
            services.refresh_tokens(refresh=refresh)
            results.append("ok")
        except services.InvalidToken:
            results.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == ["ok", "refused", "refused", "refused"]
