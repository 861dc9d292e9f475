"""The newer engines end to end: a library rebuilt with a small change is pushed, the real worker encodes it as
bsdiff-lzma, and the patcher (its CLI, over HTTP) updates an install to the exact bytes of the new version; a
library with much new code travels as x86-split, forward by the push-time delta and back by a jump."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from builds.models import Version
from builds.services import push_version
from catalog.models import Game
from deltas.models import DirectDelta, JumpDelta
from deltas.services import jump_path
from mist.testing.gamedata import make_build, tree_bytes
from mist_patcher.tests.test_e2e_live import PASSWORD, Patcher
from mistcore import delta as mdelta
from mistcore.engines import lzpatch
from mistcore.tests.helpers import relinked_library, x86_release_pair

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _ready(name: str) -> bool:
    version = Version.objects.get(game__slug="relink", name=name)
    assert version.status != Version.Status.FAILED, version.error
    return version.status == Version.Status.READY


def _push_library_update(tmp_path: Path, worker: Any, admin_user: Any, path: str, old_lib: bytes, new_lib: bytes,
                         seed: int) -> tuple[Path, Path, dict[str, Any]]:
    """A game whose 1.1 changes only the library at ``path``, pushed by the admin, both versions made ready by the
    worker: (1.0's tree, 1.1's tree, the 1.0 -> 1.1 delta's report row for the library)."""
    v1 = make_build(tmp_path / "src" / "1.0", seed=seed)
    (v1 / path).write_bytes(old_lib)
    v2 = tmp_path / "src" / "1.1"
    shutil.copytree(v1, v2)
    (v2 / path).write_bytes(new_lib)
    game = Game.objects.create(slug="relink", title="Relink")
    for name, folder in (("1.0", v1), ("1.1", v2)):
        push_version(game=game, name=name, source=folder, user=admin_user)
        worker.wait_for(lambda n=name: _ready(n), timeout=180, what=f"{name} ready")
    report = {row["path"]: row for row in DirectDelta.objects.get(to_version__name="1.1").report}
    return v1, v2, report[path]


def _update(tmp_path: Path, live_server: Any, start: str, target: str) -> tuple[Patcher, dict[str, Any]]:
    """A friend's patcher that installed ``start`` and updated to ``target``: (the patcher, the update's report)."""
    p = Patcher(tmp_path / "home", live_server.url)
    p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    p.run("install", "relink", "--version", start, "--platform", "windows")
    _code, update, _ = p.run("update", "relink", "--version", target)
    return p, update


def test_a_relinked_library_travels_as_bsdiff_lzma_and_updates_byte_exact(
    tmp_path: Path, worker: Any, admin_user: Any, live_server: Any, friend: Any
) -> None:
    # given a game whose physics library is rebuilt with a small change (every later address moves)
    old_lib, new_lib = relinked_library(random.Random(9))
    # when the admin pushes both and the worker makes the direct delta
    _, v2, lib = _push_library_update(tmp_path, worker, admin_user, "bin/libphysics.so", old_lib, new_lib, seed=61)
    # then the library travels as bsdiff-lzma, at a fraction of the file
    assert lib["engine"] == "bsdiff-lzma" and lib["patch_size"] < len(new_lib) // 20, lib
    # and a friend's patcher installs 1.0, updates to 1.1 by that delta, and has exactly 1.1's bytes
    p, update = _update(tmp_path, live_server, "1.0", "1.1")
    assert update["route"] == "direct", update
    assert tree_bytes(p.home / "games" / "relink") == tree_bytes(v2)
    code, verify, _ = p.run("verify", "relink")
    assert code == 0 and verify["healthy"] and verify["version"] == "1.1", verify


def test_new_native_code_travels_as_x86_split_both_ways_and_updates_byte_exact(
    tmp_path: Path, worker: Any, admin_user: Any, live_server: Any, friend: Any
) -> None:
    # given a game whose engine library took an upstream release: a third more code, every address moved
    old_lib, new_lib = x86_release_pair(random.Random(15))
    # when the admin pushes both and the worker makes the direct delta
    v1, v2, lib = _push_library_update(tmp_path, worker, admin_user, "bin/libengine.so.1", old_lib, new_lib, seed=62)
    # then the library travels as x86-split, smaller than lzma-patch (the engine before it) would make it
    assert lib["engine"] == "x86-split" and lib["patch_size"] < len(lzpatch.diff_bytes(old_lib, new_lib)), lib
    # and a friend's patcher updates 1.0 -> 1.1 by that delta, then rolls back by a jump the worker makes
    p, update = _update(tmp_path, live_server, "1.0", "1.1")
    assert update["route"] == "direct", update
    assert tree_bytes(p.home / "games" / "relink") == tree_bytes(v2)
    code, back, _ = p.run("update", "relink", "--version", "1.0")
    assert back["route"] == "jump", back
    jump = JumpDelta.objects.select_related("from_version", "to_version__game").get(
        from_version__name="1.1", to_version__name="1.0", status="ready")
    unpacked = mdelta.unpack_bundle(src=jump_path(jump), dest=tmp_path / "jump", max_total_bytes=10**9)
    assert {op.path: op.engine for op in unpacked.ops}["bin/libengine.so.1"] == "x86-split"
    assert tree_bytes(p.home / "games" / "relink") == tree_bytes(v1)
    code, verify, _ = p.run("verify", "relink")
    assert code == 0 and verify["healthy"] and verify["version"] == "1.0", verify
