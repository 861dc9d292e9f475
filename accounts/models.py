"""Accounts: friends and admins, created by the admin only (no public signup)."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """A Mist account. Staff users are admins (token scope `admin`); everyone else is a friend."""

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"

    @property
    def scope(self) -> str:
        return "admin" if self.is_staff else "user"
