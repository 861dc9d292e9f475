"""Fixtures for mistcore's tests (no Django needed)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty folder of our own (the project's root conftest puts storage folders in tmp_path)."""
    path = tmp_path / "work"
    path.mkdir()
    return path
