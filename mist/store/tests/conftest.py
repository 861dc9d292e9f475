"""Fixtures for the store's tests: the Steam fake."""

from __future__ import annotations

from catalog.tests.steam_fake import steam  # noqa: F401 (fixture)
