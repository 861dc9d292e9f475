"""Concurrent requests for the same reconstruction run it once; the others wait for its result."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from builds import storage
from builds.models import Version
from builds.services import make_base_archive, mark_ready, push_version
from catalog.models import Game
from deltas import services
from mist.testing.gamedata import make_build, next_version, tree_bytes


@pytest.mark.django_db(transaction=True)
def test_parallel_reconstructions_replay_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    game = Game.objects.create(slug="para", title="Para")
    v1 = make_build(tmp_path / "1", seed=41)
    v2 = next_version(v1, tmp_path / "2", seed=41, step=1)
    v3 = next_version(v2, tmp_path / "3", seed=41, step=2)
    for name, src in (("1", v1), ("2", v2), ("3", v3)):
        version = push_version(game=game, name=name, source=src).version
        if version.parent_id is None:
            make_base_archive(version=version)
            mark_ready(version=version)
        else:
            services.make_direct_delta(to_version=version)
    for name in ("1", "2"):
        shutil.rmtree(storage.cached_version_dir("para", "windows", name), ignore_errors=True)
        shutil.rmtree(storage.tree_dir("para", "windows", name), ignore_errors=True)

    replays: list[str] = []
    real_replay = services._replay

    def counting_replay(version: Version) -> Path:
        replays.append(version.name)
        return real_replay(version)

    monkeypatch.setattr(services, "_replay", counting_replay)
    results: list[Any] = []

    def worker() -> None:
        try:
            results.append(services.reconstruct_version(version=Version.objects.get(name="2")))
        except Exception as exc:  # surfaced by the assertion below
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert replays == ["2"], replays
    assert len(results) == 4 and len({str(r) for r in results}) == 1, results
    assert tree_bytes(results[0]) == tree_bytes(v2)
