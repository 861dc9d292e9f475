"""The audit log: an append-only, hash-chained record of security-relevant actions.

Every row stores `hash = sha256(prev_hash + canonical_content)`, where `prev_hash` is the previous
row's hash (64 zeros for the first row). Editing, deleting or reordering a row breaks the chain at
that row, which `verify_chain()` (and `manage.py audit_verify`) reports. Inserts are serialised with
a PostgreSQL advisory lock (SQLite serialises writers itself), so concurrent requests never fork it.

Other apps call `record(action=..., actor=..., target=..., data=...)`.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, models, transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.addresses import client_address
from accounts.models import AuditEntry

logger = logging.getLogger("mist.audit")

GENESIS_HASH = "0" * 64
# Arbitrary constant key for pg_advisory_xact_lock ("mistaudi" in ASCII).
_ADVISORY_LOCK_KEY = 0x6D69737461756469

Action = AuditEntry.Action

# The request being served, set by accounts.middleware.AuditContextMiddleware, so that signal
# receivers (admin edits of users and grants) know who acted.
current_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "mist_audit_request", default=None
)


def current_actor() -> Any | None:
    """The authenticated user of the request being served, if any."""
    request = current_request.get()
    user = getattr(request, "user", None) if request is not None else None
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def current_address() -> str:
    """The client address of the request being served ('' outside a request)."""
    request = current_request.get()
    return client_address(request) if request is not None else ""


def canonical_content(entry: AuditEntry) -> bytes:
    """The bytes hashed for a row: every field but the hashes, as sorted compact JSON."""
    at = entry.at.astimezone(UTC).isoformat(timespec="microseconds")
    payload = {
        "at": at,
        "action": entry.action,
        "actor_id": entry.actor_id,
        "actor_username": entry.actor_username,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "target_repr": entry.target_repr,
        "data": entry.data,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def chain_hash(*, prev_hash: str, entry: AuditEntry) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_content(entry)).hexdigest()


def _lock_chain() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK_KEY])
    # SQLite (the embedded demo) runs transactions as BEGIN IMMEDIATE: writers are already serial.


def _strip_nul(value: Any) -> Any:
    # PostgreSQL's jsonb refuses U+0000 in strings.
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    if isinstance(value, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    return value


def _normalise_data(data: dict[str, Any] | None) -> dict[str, Any]:
    # Round-trip through JSON so the hashed content is exactly what the database gives back.
    return _strip_nul(json.loads(json.dumps(data or {}, default=str, ensure_ascii=False)))


def record(
    *,
    action: str,
    actor: Any | None = None,
    target: models.Model | None = None,
    data: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEntry:
    """Append one entry to the audit chain and return it."""
    if action not in Action.values:
        raise ValueError(f"unknown audit action {action!r}")
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    entry = AuditEntry(
        at=now or timezone.now(),
        action=action,
        actor_id=actor.pk if actor is not None else None,
        actor_username=actor.get_username()[:150] if actor is not None else "",
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        data=_normalise_data(data),
    )
    with transaction.atomic():
        _lock_chain()
        last = AuditEntry.objects.order_by("-id").values_list("hash", flat=True).first()
        entry.prev_hash = last or GENESIS_HASH
        entry.hash = chain_hash(prev_hash=entry.prev_hash, entry=entry)
        entry.save(force_insert=True)
    # The log line is an external witness of the chain head (it also catches a deleted last row).
    logger.info(
        "audit %s", action,
        extra={"audit_id": entry.pk, "audit_hash": entry.hash, "actor": entry.actor_username,
               "target": f"{entry.target_type}:{entry.target_id}"},
    )
    return entry


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str = ""
    head_hash: str = GENESIS_HASH


def verify_chain() -> ChainVerification:
    """Walk the whole chain in insertion order and report the first row that does not fit."""
    prev_hash = GENESIS_HASH
    checked = 0
    for entry in AuditEntry.objects.order_by("id").iterator(chunk_size=2000):
        if entry.prev_hash != prev_hash:
            return ChainVerification(
                ok=False, checked=checked, first_bad_id=entry.pk, head_hash=prev_hash,
                reason=(
                    f"row {entry.pk} does not follow the previous row (prev_hash {entry.prev_hash[:12]}..., "
                    f"expected {prev_hash[:12]}...): a row before it was deleted, edited or reordered"
                ),
            )
        expected = chain_hash(prev_hash=prev_hash, entry=entry)
        if entry.hash != expected:
            return ChainVerification(
                ok=False, checked=checked, first_bad_id=entry.pk, head_hash=prev_hash,
                reason=f"row {entry.pk} content does not match its hash: it was edited",
            )
        prev_hash = entry.hash
        checked += 1
    return ChainVerification(ok=True, checked=checked, head_hash=prev_hash)
