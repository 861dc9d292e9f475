"""Audit receivers for changes made outside our services: users and grants edited in the admin,
`manage.py createsuperuser`/`changepassword`, and any other door onto those models."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from accounts import audit
from accounts.models import User
from accounts.services import revoke_password_tokens
from catalog.models import Game, GameGrant

# The role and identity fields whose changes are audited.
_TRACKED = ("username", "is_active", "is_staff", "is_superuser")


@receiver(pre_save, sender=User, dispatch_uid="accounts.audit.user_pre_save")
def remember_user_before_save(sender: type[User], instance: User, update_fields: Any = None, **kwargs: Any) -> None:
    if instance.pk is None or kwargs.get("raw"):
        return
    if update_fields is not None and not set(update_fields) & set(_TRACKED):
        return  # e.g. last_login on every login: nothing audited can change
    instance._audit_before = User.objects.filter(pk=instance.pk).values(*_TRACKED).first()  # type: ignore[attr-defined]


@receiver(post_save, sender=User, dispatch_uid="accounts.audit.user_post_save")
def audit_user_saved(sender: type[User], instance: User, created: bool, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    actor = audit.current_actor()
    if created:
        audit.record(action=audit.Action.USER_CREATED, actor=actor, target=instance,
                     data={field: getattr(instance, field) for field in _TRACKED})
        return
    before = getattr(instance, "_audit_before", None) or {}
    instance._audit_before = None  # type: ignore[attr-defined]
    changes = {
        field: [before[field], getattr(instance, field)]
        for field in _TRACKED
        if field in before and before[field] != getattr(instance, field)
    }
    if changes:
        audit.record(action=audit.Action.USER_CHANGED, actor=actor, target=instance, data={"changes": changes})
    # set_password() leaves the raw password in _password until save() finishes; the silent rehash
    # of check_password() clears it first, so only real password changes are recorded here.
    if getattr(instance, "_password", None) is not None:
        revoked = revoke_password_tokens(user=instance)
        audit.record(action=audit.Action.USER_PASSWORD_CHANGED, actor=actor, target=instance,
                     data={"refresh_tokens_revoked": revoked})


@receiver(post_delete, sender=User, dispatch_uid="accounts.audit.user_post_delete")
def audit_user_deleted(sender: type[User], instance: User, **kwargs: Any) -> None:
    audit.record(action=audit.Action.USER_DELETED, actor=audit.current_actor(), target=instance,
                 data={"username": instance.get_username()})


@receiver(post_save, sender=GameGrant, dispatch_uid="accounts.audit.grant_post_save")
def audit_grant_saved(sender: type[GameGrant], instance: GameGrant, created: bool, **kwargs: Any) -> None:
    if kwargs.get("raw") or not created:
        return
    actor = audit.current_actor() or instance.granted_by
    audit.record(action=audit.Action.GRANT_CREATED, actor=actor, target=instance.game,
                 data={"user": instance.user.get_username(), "game": instance.game.slug, "grant": instance.pk})


@receiver(post_delete, sender=GameGrant, dispatch_uid="accounts.audit.grant_post_delete")
def audit_grant_deleted(sender: type[GameGrant], instance: GameGrant, **kwargs: Any) -> None:
    # During a cascade the user or game row may already be gone: record ids, never fail the delete.
    user = User.objects.filter(pk=instance.user_id).first()
    game = Game.objects.filter(pk=instance.game_id).first()
    audit.record(
        action=audit.Action.GRANT_DELETED, actor=audit.current_actor(), target=game,
        data={"user": user.get_username() if user else instance.user_id,
              "game": game.slug if game else instance.game_id, "grant": instance.pk},
    )
