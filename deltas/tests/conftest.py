"""Fixtures for deltas tests: a game with three versions whose deltas are made in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builds.models import Version
from builds.services import make_base_archive, mark_ready, push_version
from catalog.models import Game
from deltas.services import make_direct_delta
from mist.testing.gamedata import make_build, next_version


def process_inline(version: Version) -> None:
    """What the worker does for a pushed version, run in the test process (the queue is not used)."""
    if version.parent_id is None:
        make_base_archive(version=version)
        mark_ready(version=version)
    else:
        make_direct_delta(to_version=version)


@pytest.fixture
def three_versions(db: None, tmp_path: Path) -> dict[str, Any]:
    game = Game.objects.create(slug="trio", title="Trio")
    v1 = make_build(tmp_path / "src" / "1", seed=31)
    v2 = next_version(v1, tmp_path / "src" / "2", seed=31, step=1)
    v3 = next_version(v2, tmp_path / "src" / "3", seed=31, step=2)
    sources = {"1": v1, "2": v2, "3": v3}
    for name, src in sources.items():
        version = push_version(game=game, name=name, source=src).version
        process_inline(version)
    return {"game": game, "sources": sources}
