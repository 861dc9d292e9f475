"""The audit log: a hash chain that detects edits and deletions, serialised inserts, and the
actions that are recorded by the services and by the receivers of admin edits."""

from __future__ import annotations

import subprocess
import sys
import threading
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from accounts import audit
from accounts.audit import GENESIS_HASH, record, verify_chain
from accounts.models import AuditEntry
from accounts.services import revoke_device
from accounts.tests.conftest import pair_device
from catalog.models import Game, GameGrant
from conftest import password_of
from mist.testing.worker import BASE_DIR, subprocess_env

pytestmark = pytest.mark.django_db

A = AuditEntry.Action


def actions() -> list[str]:
    return list(AuditEntry.objects.order_by("id").values_list("action", flat=True))


def make_chain(n: int) -> list[AuditEntry]:
    return [record(action=A.LOGIN_FAILED, data={"username": f"user{i}", "n": i}) for i in range(n)]


def test_rows_are_chained_by_hash() -> None:
    rows = make_chain(3)
    assert rows[0].prev_hash == GENESIS_HASH
    assert rows[1].prev_hash == rows[0].hash
    assert rows[2].prev_hash == rows[1].hash
    assert len({row.hash for row in rows}) == 3
    result = verify_chain()
    assert (result.ok, result.checked, result.head_hash) == (True, 3, rows[2].hash)


def test_audit_verify_reports_an_intact_chain() -> None:
    make_chain(3)
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "audit chain OK: 3 row(s)" in out.getvalue()


def test_audit_verify_detects_an_edited_row() -> None:
    rows = make_chain(4)
    AuditEntry.objects.filter(pk=rows[1].pk).update(data={"username": "someone-else", "n": 1})
    with pytest.raises(CommandError, match=rf"BROKEN at row {rows[1].pk} .*edited"):
        call_command("audit_verify")


def test_audit_verify_detects_a_rewritten_hash() -> None:
    # Recomputing the edited row's own hash is not enough: the next row still points at the old one.
    rows = make_chain(4)
    tampered = AuditEntry.objects.get(pk=rows[1].pk)
    tampered.actor_username = "mallory"
    tampered.hash = audit.chain_hash(prev_hash=tampered.prev_hash, entry=tampered)
    AuditEntry.objects.filter(pk=tampered.pk).update(actor_username="mallory", hash=tampered.hash)
    with pytest.raises(CommandError, match=rf"BROKEN at row {rows[2].pk} "):
        call_command("audit_verify")


def test_audit_verify_detects_a_deleted_row() -> None:
    rows = make_chain(4)
    AuditEntry.objects.filter(pk=rows[1].pk).delete()
    result = verify_chain()
    assert not result.ok
    assert result.first_bad_id == rows[2].pk
    assert "deleted" in result.reason
    with pytest.raises(CommandError, match=rf"BROKEN at row {rows[2].pk} "):
        call_command("audit_verify")


def test_audit_verify_detects_a_deleted_first_row() -> None:
    rows = make_chain(3)
    AuditEntry.objects.filter(pk=rows[0].pk).delete()
    assert verify_chain().first_bad_id == rows[1].pk


@pytest.mark.django_db(transaction=True)
def test_audit_verify_exits_non_zero_from_the_shell() -> None:
    rows = make_chain(3)

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "audit_verify"], cwd=BASE_DIR, env=subprocess_env(),
            capture_output=True, text=True, timeout=60, check=False,
        )

    ok = run()
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "audit chain OK: 3 row(s)" in ok.stdout, ok.stdout + ok.stderr
    AuditEntry.objects.filter(pk=rows[2].pk).update(action=A.LOGIN_SUCCEEDED)
    broken = run()
    assert broken.returncode != 0, broken.stdout + broken.stderr
    assert f"BROKEN at row {rows[2].pk}" in broken.stderr, broken.stdout + broken.stderr


@pytest.mark.django_db(transaction=True)
def test_concurrent_inserts_never_fork_the_chain() -> None:
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            barrier.wait()
            for i in range(5):
                record(action=A.TOKEN_ISSUED, data={"writer": k, "i": i})
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    result = verify_chain()
    assert (result.ok, result.checked) == (True, 30)


def test_unknown_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown audit action"):
        record(action="coffee.made")
    assert not AuditEntry.objects.exists()


def test_logins_tokens_and_devices_are_audited(api_client: APIClient, friend: Any) -> None:
    AuditEntry.objects.all().delete()  # the fixture's user.created
    api_client.post("/api/v1/auth/token", {"username": "friend", "password": "nope"}, format="json")
    pair = api_client.post(
        "/api/v1/auth/token", {"username": "friend", "password": password_of(friend)}, format="json"
    ).json()
    api_client.post("/api/v1/auth/logout", {"refresh": pair["refresh"]}, format="json")
    device, _ = pair_device(friend)
    revoke_device(device=device, actor=friend)
    assert actions() == [
        A.LOGIN_FAILED, A.LOGIN_SUCCEEDED, A.TOKEN_ISSUED, A.TOKEN_REVOKED,
        A.PAIRING_CODE_ISSUED, A.DEVICE_PAIRED, A.TOKEN_ISSUED, A.DEVICE_REVOKED,
    ]
    failed = AuditEntry.objects.get(action=A.LOGIN_FAILED)
    assert failed.data == {"username": "friend", "address": "127.0.0.1", "channel": "api"}
    assert "nope" not in str(AuditEntry.objects.values_list("data", flat=True))
    paired = AuditEntry.objects.get(action=A.DEVICE_PAIRED)
    assert (paired.actor_username, paired.target_type, paired.target_id) == ("friend", "accounts.device", str(device.pk))
    assert verify_chain().ok


def test_user_lifecycle_is_audited(django_user_model: Any) -> None:
    user = django_user_model.objects.create_user(username="newfriend", password="first-Passw0rd!")
    user.is_staff = True
    user.save()
    user.is_active = False
    user.save(update_fields=["is_active"])
    user.set_password("second-Passw0rd!")
    user.save()
    user.last_login = None
    user.save(update_fields=["last_login"])  # not a tracked field: nothing recorded
    user.delete()
    assert actions() == [A.USER_CREATED, A.USER_CHANGED, A.USER_CHANGED, A.USER_PASSWORD_CHANGED, A.USER_DELETED]
    changes = [e.data["changes"] for e in AuditEntry.objects.filter(action=A.USER_CHANGED).order_by("id")]
    assert changes == [{"is_staff": [False, True]}, {"is_active": [True, False]}]
    assert "second-Passw0rd!" not in str(list(AuditEntry.objects.values_list("data", flat=True)))


def test_a_silent_rehash_on_login_is_not_a_password_change(settings: Any, friend: Any) -> None:
    # Switching the preferred hasher makes the next successful check_password() re-hash and save.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    AuditEntry.objects.all().delete()
    assert friend.check_password(password_of(friend))
    friend.refresh_from_db()
    assert friend.password.startswith("pbkdf2_sha256$")
    assert actions() == []


def test_admin_edits_are_audited_with_the_admin_as_actor(
    audit_middleware: None, client: Any, admin_user: Any, friend: Any
) -> None:
    game = Game.objects.create(slug="secret-game", title="Secret Game", is_private=True)
    client.force_login(admin_user)
    AuditEntry.objects.all().delete()
    # when: the admin grants, then removes, a private game, and resets the friend's password
    response = client.post("/admin/catalog/gamegrant/add/", {"user": friend.pk, "game": game.pk})
    assert response.status_code == 302
    grant = GameGrant.objects.get()
    grant_pk = grant.pk
    response = client.post(
        f"/admin/accounts/user/{friend.pk}/password/",
        {"password1": "reset-by-Adm1n!", "password2": "reset-by-Adm1n!", "usable_password": "true"},
    )
    assert response.status_code == 302
    response = client.post(f"/admin/catalog/gamegrant/{grant_pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not GameGrant.objects.exists()
    # then
    recorded = list(AuditEntry.objects.order_by("id"))
    assert [e.action for e in recorded] == [A.GRANT_CREATED, A.USER_PASSWORD_CHANGED, A.GRANT_DELETED]
    assert all(e.actor_username == "admin" for e in recorded)
    assert recorded[0].data == {"user": "friend", "game": "secret-game", "grant": grant_pk}
    assert (recorded[0].target_type, recorded[0].target_id) == ("catalog.game", str(game.pk))
    assert recorded[1].target_repr == "friend"
    assert recorded[2].data == {"user": "friend", "game": "secret-game", "grant": grant_pk}
    assert verify_chain().ok


def test_grants_made_by_services_are_audited_without_a_request(friend: Any, admin_user: Any) -> None:
    game = Game.objects.create(slug="hidden", title="Hidden", is_private=True)
    AuditEntry.objects.all().delete()
    grant = GameGrant.objects.create(user=friend, game=game, granted_by=admin_user)
    GameGrant.objects.filter(pk=grant.pk).delete()
    recorded = list(AuditEntry.objects.order_by("id"))
    assert [e.action for e in recorded] == [A.GRANT_CREATED, A.GRANT_DELETED]
    # Outside a request the grant's own granted_by is the best actor there is.
    assert recorded[0].actor_username == "admin"
    assert recorded[1].actor_username == ""


def test_the_audit_log_is_read_only_in_the_admin(client: Any, admin_user: Any) -> None:
    entry = record(action=A.LOGIN_FAILED, data={"username": "x"})
    client.force_login(admin_user)
    assert client.get("/admin/accounts/auditentry/").status_code == 200
    detail = client.get(f"/admin/accounts/auditentry/{entry.pk}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content
    assert client.get("/admin/accounts/auditentry/add/").status_code == 403
    assert client.post(f"/admin/accounts/auditentry/{entry.pk}/change/", {"action": "login.succeeded"}).status_code == 403
    assert client.post(f"/admin/accounts/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = client.post("/admin/accounts/auditentry/", {"action": "delete_selected", "_selected_action": [entry.pk]})
    assert bulk.status_code in (200, 302)
    assert AuditEntry.objects.filter(pk=entry.pk, action=A.LOGIN_FAILED).exists()
