"""Issue 15 (first part): version switching at patch size in either direction. The patcher CLI against the
live server and a real worker: a backward jump over two versions (no reverse patch kept) waits for a jump
delta made on demand; a forward move over three versions takes the ready chain while the worker makes the
jump, which the next friend making the same move then gets from the cache without a worker job. Every
install ends byte-identical to the target."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from builds.models import CacheEntry, Job, Version
from builds.services import push_version
from catalog.models import Game
from deltas.models import JumpDelta
from deltas.services import jump_path
from deltas.storage_check import check_game
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mist_patcher.tests.test_e2e_live import PASSWORD, Patcher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _ready(name: str) -> bool:
    version = Version.objects.get(game__slug="hopper", name=name)
    assert version.status != Version.Status.FAILED, version.error
    return version.status == Version.Status.READY


def _push_series(tmp_path: Path, worker: Any, admin_user: Any, count: int, big: int) -> dict[str, Path]:
    builds = {"1.0": make_build(tmp_path / "src" / "1.0", seed=151, big_file_bytes=big)}
    names = [f"{n}.0" for n in range(1, count + 1)]
    for step, (old, new) in enumerate(zip(names, names[1:], strict=False), start=1):
        builds[new] = next_version(builds[old], tmp_path / "src" / new, seed=151, step=step)
    game = Game.objects.create(slug="hopper", title="Hopper")
    for name, folder in builds.items():
        push_version(game=game, name=name, source=folder, user=admin_user)
        worker.wait_for(lambda n=name: _ready(n), timeout=180, what=f"{name} ready")
    return builds


@pytest.fixture
def five(tmp_path: Path, worker: Any, admin_user: Any) -> dict[str, Path]:
    return _push_series(tmp_path, worker, admin_user, 5, 2_000_000)


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


def _jump(a: str, b: str) -> JumpDelta:
    return JumpDelta.objects.select_related("from_version", "to_version__game").get(
        from_version__name=a, to_version__name=b, status="ready")


def test_a_damaged_cached_jump_is_dropped_and_made_again_never_applied(tmp_path: Path, worker: Any, admin_user: Any,
                                                                       live_server: Any, friend: Any) -> None:
    builds = _push_series(tmp_path, worker, admin_user, 3, 600_000)
    expected = tree_bytes(builds["1.0"])

    def friend_on_3(n: int) -> Patcher:
        p = Patcher(tmp_path / f"home{n}", live_server.url)
        p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
        p.run("install", "hopper", "--version", "3.0", "--platform", "windows")
        return p

    # a rollback over two versions makes the jump 3.0 -> 1.0 once
    code, first, _ = friend_on_3(1).run("update", "hopper", "--version", "1.0")
    assert first["route"] == "jump" and tree_bytes(tmp_path / "home1" / "games" / "hopper") == expected
    made = _jump("3.0", "1.0")
    bundle = jump_path(made)

    # truncated: the planner drops it and the worker makes it again; the friend waits and gets the right bytes
    with open(bundle, "r+b") as fh:
        fh.truncate(made.bundle_size // 2)
    code, second, _ = friend_on_3(2).run("update", "hopper", "--version", "1.0")
    assert second["route"] == "jump", second
    assert tree_bytes(tmp_path / "home2" / "games" / "hopper") == expected
    again = _jump("3.0", "1.0")
    assert again.pk != made.pk and bundle.stat().st_size == again.bundle_size

    # corrupt in place (same size, written to since): detected by its sha256 before anyone is offered it
    with open(bundle, "r+b") as fh:
        fh.seek(again.bundle_size // 2)
        byte = fh.read(1)
        fh.seek(again.bundle_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    code, third, _ = friend_on_3(3).run("update", "hopper", "--version", "1.0")
    assert third["route"] == "jump" and tree_bytes(tmp_path / "home3" / "games" / "hopper") == expected
    rebuilt = _jump("3.0", "1.0")
    assert rebuilt.pk != again.pk

    # rotted in place with its timestamp kept: the server cannot tell cheaply, the patcher's sha256 check
    # refuses it (the install stays 3.0, untouched), storage_check finds and drops it, and the retry works
    stat = bundle.stat()
    with open(bundle, "r+b") as fh:
        fh.seek(10)
        byte = fh.read(1)
        fh.seek(10)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(bundle, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    fourth = friend_on_3(4)
    code, refused, err = fourth.run("update", "hopper", "--version", "1.0", ok=False)
    assert code != 0 and "wrong SHA-256" in refused.get("error", ""), (code, refused, err)
    assert tree_bytes(tmp_path / "home4" / "games" / "hopper") == tree_bytes(builds["3.0"])
    problems = list(check_game(rebuilt.to_version.game))
    assert any("cached jump 3.0 -> 1.0" in line and "corrupt" in line for line in problems), problems
    assert not JumpDelta.objects.filter(pk=rebuilt.pk).exists()
    assert not CacheEntry.objects.filter(key=rebuilt.cache_key).exists() and not bundle.exists()
    code, retried, _ = fourth.run("update", "hopper", "--version", "1.0")
    assert retried["route"] == "jump" and tree_bytes(tmp_path / "home4" / "games" / "hopper") == expected
    assert Job.objects.filter(kind=Job.Kind.JUMP_DELTA, status=Job.Status.DONE).count() == 1  # one live job per key


def test_a_locally_modified_install_takes_the_jump_and_fetches_only_its_modified_files(
        tmp_path: Path, worker: Any, admin_user: Any, live_server: Any, friend: Any) -> None:
    builds = _push_series(tmp_path, worker, admin_user, 3, 600_000)
    old, new = tree_bytes(builds["3.0"]), tree_bytes(builds["1.0"])
    changing = sorted(p for p in old if p in new and old[p] != new[p])
    same = sorted(p for p in old if p in new and old[p] == new[p])
    assert changing and same
    p = Patcher(tmp_path / "home", live_server.url)
    p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    p.run("install", "hopper", "--version", "3.0", "--platform", "windows")
    install = p.home / "games" / "hopper"
    # a mod rewrote a file the jump patches, and another one the jump leaves alone (an update checks the
    # files it does not touch by size only; `mist-patcher repair` hashes everything)
    data = old[changing[0]][0]
    (install / changing[0]).write_bytes(data[:1000] + b"modded" * 500 + data[1000:])
    (install / same[0]).write_bytes(b"modded" + old[same[0]][0])

    code, result, _ = p.run("update", "hopper", "--version", "1.0")
    assert result["route"] == "jump", result
    assert result["modified_locally"] == [changing[0]], result
    assert result["uploaded_bytes"] > 0  # rdiff signatures of the modified files, not the whole install
    assert tree_bytes(install) == new
    jump = _jump("3.0", "1.0")
    # the jump, plus at most the two modified files (rdiff against the local copies; 64 KiB for the wrappers)
    assert result["downloaded_bytes"] <= (jump.bundle_size + len(new[changing[0]][0]) + len(new[same[0]][0])
                                          + (64 << 10)), result


def test_a_copy_from_elsewhere_is_matched_to_its_version_and_then_updates_by_a_jump(
        tmp_path: Path, worker: Any, admin_user: Any, live_server: Any, friend: Any) -> None:
    """An unknown basis (a folder copied from a friend's disk, one file modded, a save file added) is matched
    against every version's manifest by hash, repaired to the closest version (only the modded file crosses
    the wire, block-level), and then takes the jump, not a whole-game indirect update."""
    import shutil

    builds = _push_series(tmp_path, worker, admin_user, 3, 600_000)
    copy = tmp_path / "usb-stick" / "hopper"
    shutil.copytree(builds["2.0"], copy)
    v2 = tree_bytes(builds["2.0"])
    big = max(v2, key=lambda p: len(v2[p][0]))
    data = v2[big][0]
    (copy / big).write_bytes(data[:5000] + b"modded" * 100 + data[5600:])
    (copy / "saves").mkdir()
    (copy / "saves" / "slot1.sav").write_bytes(b"my progress")

    p = Patcher(tmp_path / "home", live_server.url)
    p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    code, looked, _ = p.run("adopt", "hopper", str(copy), "--platform", "windows", "--dry-run")
    assert looked["version"] == "2.0" and looked["repaired"] == [big] and looked["dry_run"]
    assert [c["version"] for c in looked["candidates"]][0] == "2.0" and len(looked["candidates"]) == 3
    assert (copy / big).read_bytes() != data  # a dry run changes nothing

    code, adopted, _ = p.run("adopt", "hopper", str(copy), "--platform", "windows")
    assert adopted["version"] == "2.0" and adopted["repaired"] == [big] and adopted["extra"] == 1
    assert 0 < adopted["downloaded"] < len(data) // 2, adopted  # block-level against the modded copy
    after = tree_bytes(copy)
    assert after.pop("saves/slot1.sav")[0] == b"my progress"
    assert after == v2
    p.run("verify", "hopper")  # exit 0: every file of 2.0 intact (3 would mean damaged)

    code, result, _ = p.run("update", "hopper", "--version", "1.0")
    assert result["route"] == "jump" and not result.get("modified_locally"), result
    after = tree_bytes(copy)
    assert after.pop("saves/slot1.sav")[0] == b"my progress"
    assert after == tree_bytes(builds["1.0"])

    code, refused, _ = p.run("adopt", "hopper", str(copy), ok=False)
    assert code == 1 and "already installed" in refused["error"]
    stranger = tmp_path / "not-the-game"
    stranger.mkdir()
    (stranger / "readme.txt").write_text("hello")
    other = Patcher(tmp_path / "home2", live_server.url)
    other.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    code, none, _ = other.run("adopt", "hopper", str(stranger), "--platform", "windows", ok=False)
    assert code == 1 and "matches no version" in none["error"], none
    assert not (tmp_path / "home2" / "state" / "hopper.json").exists()


def test_an_indirect_update_diffs_files_the_server_knows_with_the_direct_engines(
        tmp_path: Path, worker: Any, admin_user: Any, live_server: Any, friend: Any) -> None:
    """The indirect route (the route for an unknown basis): a client file whose sha256 the server finds in a
    version it has is diffed with HDiffPatch / zstd --patch-from against that copy; a modded file (a basis the
    server has never seen) goes by librsync; the install ends as the target, byte for byte."""
    from builds import storage
    from builds.models import Job
    from mistcore import safetar
    from mistcore.indirect import MANIFEST_NAME, IndirectManifest

    builds = _push_series(tmp_path, worker, admin_user, 3, 1_500_000)
    old, new = tree_bytes(builds["1.0"]), tree_bytes(builds["3.0"])
    changing = sorted(p for p in old if p in new and old[p] != new[p])
    p = Patcher(tmp_path / "home", live_server.url)
    p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    p.run("install", "hopper", "--version", "1.0", "--platform", "windows")
    install = p.home / "games" / "hopper"
    modded = max(changing, key=lambda path: len(old[path][0]))
    data = old[modded][0]
    (install / modded).write_bytes(data[:2000] + b"mod" * 300 + data[2900:])

    code, result, _ = p.run("update", "hopper", "--version", "3.0", "--route", "indirect")
    assert result["route"] == "indirect", result
    assert tree_bytes(install) == new
    job = Job.objects.filter(kind=Job.Kind.INDIRECT, status=Job.Status.DONE).latest("created_at")
    assert job.params["known_bases"] is True  # this patcher said it applies the direct engines
    bundle = storage.indirect_bundle_path(str(job.pk))
    manifest = next(IndirectManifest.from_json(reader.read()) for name, _size, reader in safetar.iter_tar_zst(
        bundle, max_members=10_000, max_total_bytes=1 << 30) if name == MANIFEST_NAME)
    engines = {op.path: op.engine for op in manifest.ops}
    assert engines[modded] == "rdiff", engines
    direct = {path: engine for path, engine in engines.items() if engine in ("hdiff", "hdiff-lzma", "lzma-patch",
                                                                            "x86-split", "zstd-patch", "hdiff-window")}
    big = {path for path in changing if path != modded and len(new[path][0]) > 100_000}
    assert big and big <= set(direct), engines  # (a tiny text file may go whole: a tie goes to zstd)


def test_a_rollback_without_a_kept_reverse_patch_takes_the_jump(five: dict[str, Path], live_server: Any,
                                                                friend: Any, tmp_path: Path, worker: Any) -> None:
    p = Patcher(tmp_path / "home", live_server.url)
    p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    p.run("install", "hopper", "--version", "2.0", "--platform", "windows")
    code, forward, _ = p.run("update", "hopper", "--version", "4.0")
    assert forward["route"] == "direct" and forward["steps"] == 2
    kept = tmp_path / "home" / "rollback" / "hopper"
    assert kept.is_dir()
    shutil.rmtree(kept)  # as if over the rollback cap: no reverse patch kept
    code, back, _ = p.run("rollback", "hopper")
    assert (back["source"], back["from_version"], back["to_version"]) == ("jump", "4.0", "2.0"), back
    assert tree_bytes(p.home / "games" / "hopper") == tree_bytes(five["2.0"])
    jump = JumpDelta.objects.get(from_version__name="4.0", to_version__name="2.0")
    assert back["downloaded_bytes"] == jump.bundle_size  # one patch between exactly those versions, nothing else
