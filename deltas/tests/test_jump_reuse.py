"""A forward jump re-uses the push-time patches of files that changed once on the way (by content); a backward
one, which has no such patches, diffs everything, and both end byte-identical to their target."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from builds import storage
from builds.models import Version
from builds.services import push_version
from catalog.models import Game
from deltas import services
from deltas.services import jump_path, make_jump_delta
from deltas.tests.conftest import process_inline
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mistcore import delta as mdelta
from mistcore.fsutil import clone_tree
from mistcore.tests.helpers import counting_diffs


@pytest.fixture
def series(db: None, tmp_path: Path) -> dict[str, Path]:
    """1 -> 2 -> 3: push 2 changes the executable, textures, levels and config; push 3 changes the config again
    and the engine library for the first time."""
    game = Game.objects.create(slug="trio", title="Trio")
    v1 = make_build(tmp_path / "src" / "1", seed=41)
    v2 = next_version(v1, tmp_path / "src" / "2", seed=41, step=1)
    v3 = tmp_path / "src" / "3"
    shutil.copytree(v2, v3)
    (v3 / "config.ini").write_text("[game]\nversion=3\nfullscreen=false\n")
    lib = bytearray((v3 / "bin" / "libengine.so.1").read_bytes())
    lib[5000:5000] = b"a patch release" * 20
    (v3 / "bin" / "libengine.so.1").write_bytes(bytes(lib))
    sources = {"1": v1, "2": v2, "3": v3}
    for name, src in sources.items():
        process_inline(push_version(game=game, name=name, source=src).version)
    return sources


def _applied(jump: Any, start: Path, tmp_path: Path, name: str) -> dict[str, tuple[bytes, bool]]:
    unpacked = tmp_path / f"{name}-unpacked"
    mdelta.unpack_bundle(src=jump_path(jump), dest=unpacked, max_total_bytes=10**9)
    clone_tree(start, tmp_path / name)
    mdelta.apply_delta_dir(delta_dir=unpacked, install_root=tmp_path / name, work_dir=tmp_path / f"{name}-work")
    return tree_bytes(tmp_path / name)


def test_a_forward_jump_diffs_only_what_changed_more_than_once(series: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v3 = Version.objects.get(name="1"), Version.objects.get(name="3")
    sources = series
    # the files that differ between 1 and 3, and those that changed in both pushes (the only ones to diff)
    m1, m2, m3 = (services.builds_services.read_manifest(version=v) for v in Version.objects.order_by("name"))
    by1, by2, by3 = m1.by_path(), m2.by_path(), m3.by_path()
    twice = {r.sha256 for p, r in by3.items() if p in by1 and p in by2 and by1[p].sha256 != by2[p].sha256 != r.sha256}
    once = {r.sha256 for p, r in by3.items() if p in by1 and p in by2 and r.sha256 != by1[p].sha256
            and (by2[p].sha256 == by1[p].sha256 or by2[p].sha256 == r.sha256)}
    assert len(twice) == 1 and len(once) >= 3  # the config; the executable, textures and library
    diffed = counting_diffs(monkeypatch)
    # when the worker's job makes the jump 1 -> 3
    jump = make_jump_delta(from_version=v1, to_version=v3)
    # then the files that changed twice were diffed, none that changed once: those came from the push-time deltas
    diffed_content = {by3[p].sha256 for p in diffed}
    assert twice <= diffed_content and not once & diffed_content, (diffed, twice, once)
    assert _applied(jump, sources["1"], tmp_path, "forward") == tree_bytes(sources["3"])

    # a backward jump has no push-time patches to re-use: every changed file with a basis is diffed
    diffed.clear()
    back = make_jump_delta(from_version=v3, to_version=v1)
    assert len(diffed) > len(twice)
    assert _applied(back, sources["3"], tmp_path, "backward") == tree_bytes(sources["1"])


def test_a_forward_jump_without_its_push_time_folders_is_made_whole(series: dict[str, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v3 = Version.objects.get(name="1"), Version.objects.get(name="3")
    # given push-time delta folders that are gone and whose bundles were damaged (nothing to re-use or rebuild)
    for v in (Version.objects.get(name="2"), v3):
        shutil.rmtree(storage.delta_dir("trio", v.platform, v.parent.name, v.name))
        storage.delta_bundle_path("trio", v.platform, v.parent.name, v.name).write_bytes(b"damaged")
    diffed = counting_diffs(monkeypatch)
    # when the jump is made
    jump = make_jump_delta(from_version=v1, to_version=v3)
    # then it diffed every changed file itself and still turns 1 into 3
    assert len(diffed) >= 4
    assert _applied(jump, series["1"], tmp_path, "whole") == tree_bytes(series["3"])
