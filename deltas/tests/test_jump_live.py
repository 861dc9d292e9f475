"""Issue 15 (first part): version switching at patch size in either direction. The patcher CLI against the
live server and a real worker: a backward jump over two versions (no reverse patch kept) waits for a jump
delta made on demand; a forward move over three versions takes the ready chain while the worker makes the
jump, which the next friend making the same move then gets from the cache without a worker job. Every
install ends byte-identical to the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builds.models import Job, Version
from builds.services import push_version
from catalog.models import Game
from deltas.models import JumpDelta
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mist_patcher.tests.test_e2e_live import PASSWORD, Patcher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _ready(name: str) -> bool:
    version = Version.objects.get(game__slug="hopper", name=name)
    assert version.status != Version.Status.FAILED, version.error
    return version.status == Version.Status.READY


@pytest.fixture
def five(tmp_path: Path, worker: Any, admin_user: Any) -> dict[str, Path]:
    builds = {"1.0": make_build(tmp_path / "src" / "1.0", seed=151, big_file_bytes=2_000_000)}
    names = ["1.0", "2.0", "3.0", "4.0", "5.0"]
    for step, (old, new) in enumerate(zip(names, names[1:], strict=False), start=1):
        builds[new] = next_version(builds[old], tmp_path / "src" / new, seed=151, step=step)
    game = Game.objects.create(slug="hopper", title="Hopper")
    for name, folder in builds.items():
        push_version(game=game, name=name, source=folder, user=admin_user)
        worker.wait_for(lambda n=name: _ready(n), timeout=180, what=f"{name} ready")
    return builds


def test_jumps_forward_backward_and_again_from_the_cache(five: dict[str, Path], live_server: Any, friend: Any,
                                                          tmp_path: Path, worker: Any) -> None:
    p = Patcher(tmp_path / "home", live_server.url)
    p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    p.run("install", "hopper", "--version", "1.0", "--platform", "windows")
    install = p.home / "games" / "hopper"

    # forward over three versions: the ready chain now, and the worker makes the jump for next time
    code, forward, _ = p.run("update", "hopper", "--version", "4.0")
    assert forward["route"] == "direct" and forward["steps"] == 3
    assert tree_bytes(install) == tree_bytes(five["4.0"])
    worker.wait_for(lambda: JumpDelta.objects.filter(from_version__name="1.0", to_version__name="4.0",
                                                     status="ready").exists(), timeout=120, what="the 1.0 -> 4.0 jump")
    jump = JumpDelta.objects.get(from_version__name="1.0", to_version__name="4.0")
    chain = sum(v.update_size for v in Version.objects.filter(game__slug="hopper", name__in=["2.0", "3.0", "4.0"]))
    assert jump.bundle_size < chain  # one patch between exactly these two versions beats the chain

    # backward over two: a rollback to a version with no reverse patch kept goes the same way
    code, backward, _ = p.run("update", "hopper", "--version", "2.0")
    assert backward["route"] == "jump", backward
    assert tree_bytes(install) == tree_bytes(five["2.0"])
    assert JumpDelta.objects.filter(from_version__name="4.0", to_version__name="2.0", status="ready").exists()

    # a second friend making the same jump gets the jump from the cache: no new worker job
    jobs_before = Job.objects.filter(kind=Job.Kind.JUMP_DELTA).count()
    other = Patcher(tmp_path / "home2", live_server.url)
    other.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    other.run("install", "hopper", "--version", "1.0", "--platform", "windows")
    code, again, err = other.run("update", "hopper", "--version", "4.0")
    assert again["route"] == "jump" and "made earlier and cached" in again["reason"], again
    assert again["downloaded_bytes"] <= jump.bundle_size
    assert Job.objects.filter(kind=Job.Kind.JUMP_DELTA).count() == jobs_before
    assert tree_bytes(other.home / "games" / "hopper") == tree_bytes(five["4.0"])

    # one step forward still uses the push-time delta
    code, step, _ = p.run("update", "hopper", "--version", "3.0")
    assert step["route"] == "direct"
    assert tree_bytes(install) == tree_bytes(five["3.0"])
