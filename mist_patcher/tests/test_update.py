"""Updates by every route, repair at block level, rollback, and crash recovery (fake server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mist_patcher.core.errors import DiskFullError
from mist_patcher.core.install import install_game
from mist_patcher.core.recovery import recover_all
from mist_patcher.core.repair import repair_game, verify_game
from mist_patcher.core.rollback import rollback_game
from mist_patcher.core.staging import stage_dir_for
from mist_patcher.core.update import update_game
from mist_patcher.tests.conftest import tree_bytes
from mist_patcher.tests.fakeserver import FakeMist
from mistcore import journal


@pytest.mark.parametrize("route", ["direct", "indirect", "full"])
def test_update_by_each_route_gives_the_exact_build(ctx, fake_server: FakeMist, builds, route: str) -> None:
    # given
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    fake_server.force_route = route
    # when
    result = update_game(ctx, slug="space-game", version="3.0")
    # then
    assert (result.route, result.from_version, result.to_version) == (route, "1.0", "3.0")
    assert tree_bytes(install) == tree_bytes(builds["3.0"])
    assert ctx.state.require("space-game").version == "3.0"
    assert ctx.state.manifest("space-game").version == "3.0"
    assert not stage_dir_for(install).exists()
    assert journal.read_journal(install_root=install) is None
    assert verify_game(ctx, slug="space-game").healthy


def test_direct_chain_downloads_only_the_bundles(ctx, fake_server: FakeMist, builds) -> None:
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    fake_server.log.clear()
    result = update_game(ctx, slug="space-game")
    game = fake_server.games["space-game"]
    bundles = game.direct[("1.0", "2.0")].size + game.direct[("2.0", "3.0")].size
    assert result.route == "direct" and result.steps == 2
    assert result.downloaded == bundles == fake_server.bytes_sent()
    assert tree_bytes(install) == tree_bytes(builds["3.0"])


def test_update_backwards_to_an_older_version(ctx, fake_server: FakeMist, builds) -> None:
    install = Path(install_game(ctx, slug="space-game", version="3.0").path)
    result = update_game(ctx, slug="space-game", version="1.0")
    assert result.route in ("indirect", "full")
    assert tree_bytes(install) == tree_bytes(builds["1.0"])


def test_dry_run_and_up_to_date_change_nothing(ctx, fake_server: FakeMist, builds) -> None:
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    fake_server.log.clear()
    plan = update_game(ctx, slug="space-game", dry_run=True)
    assert plan.dry_run and plan.route == "direct" and plan.download_bytes > 0 and plan.disk_bytes > 0
    assert "fake planner" in plan.reason
    assert fake_server.bytes_sent() == 0
    assert tree_bytes(install) == tree_bytes(builds["1.0"])
    update_game(ctx, slug="space-game")
    assert update_game(ctx, slug="space-game").up_to_date


def test_direct_update_over_a_locally_modified_file_fetches_only_that_file_block_level(ctx, fake_server,
                                                                                       builds) -> None:
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    (install / "data" / "level1.pak").write_bytes(b"modded" * 1000)
    result = update_game(ctx, slug="space-game", version="2.0")
    # the delta applies to every other file; the modified one goes by rdiff against the local copy
    assert result.route == "direct", result.notes
    assert result.modified_locally == ["data/level1.pak"]
    assert result.uploaded > 0  # its signature went up
    assert any("modified locally" in n for n in result.notes)
    assert tree_bytes(install) == tree_bytes(builds["2.0"])


def test_a_chain_over_a_locally_modified_file_leaves_it_out_of_every_step(ctx, fake_server, builds) -> None:
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    (install / "data" / "level1.pak").write_bytes(b"modded" * 1000)
    result = update_game(ctx, slug="space-game", version="3.0")
    assert result.route == "direct" and result.steps == 2, result.notes
    assert "data/level1.pak" in result.modified_locally
    assert tree_bytes(install) == tree_bytes(builds["3.0"])


def test_update_heals_an_untouched_file_the_user_deleted(ctx, fake_server, builds) -> None:
    install = Path(install_game(ctx, slug="space-game", version="2.0").path)
    (install / "data" / "level1.pak").unlink()  # not changed between 2.0 and 3.0
    update_game(ctx, slug="space-game", version="3.0")
    assert tree_bytes(install) == tree_bytes(builds["3.0"])


def test_verify_finds_modified_missing_and_mode_changes(ctx, builds) -> None:
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    assert verify_game(ctx, slug="space-game").healthy
    (install / "readme.txt").write_bytes(b"Hello from version X\n")  # same size, other bytes
    (install / "data" / "level2.pak").unlink()
    os.chmod(install / "bin" / "game", 0o644)
    (install / "saves").mkdir()
    (install / "saves" / "slot1.sav").write_bytes(b"mine")
    report = verify_game(ctx, slug="space-game")
    assert report.modified == ["readme.txt"]
    assert report.missing == ["data/level2.pak"]
    assert report.wrong_mode == ["bin/game"]
    assert report.extra == ["saves/slot1.sav"]
    assert not report.healthy


def test_repair_heals_at_block_level_and_fetches_missing_files_whole(ctx, fake_server: FakeMist, builds) -> None:
    # given: one big file with a few changed bytes, one missing file, one small modified file
    install = Path(install_game(ctx, slug="space-game", version="3.0").path)
    big = install / "data" / "level2.pak"
    data = bytearray(big.read_bytes())
    data[5000:5010] = b"corrupted!"
    big.write_bytes(bytes(data))
    (install / "data" / "level3.pak").unlink()
    (install / "readme.txt").write_bytes(b"tampered")
    (install / "saves").mkdir()
    (install / "saves" / "slot1.sav").write_bytes(b"mine")
    fake_server.log.clear()
    # when
    result = repair_game(ctx, slug="space-game")
    # then
    assert result.block_level == ["data/level2.pak"]
    assert sorted(result.whole) == ["data/level3.pak", "readme.txt"]
    expected = tree_bytes(builds["3.0"])
    expected["saves/slot1.sav"] = b"mine"  # the user's own files are left alone
    assert tree_bytes(install) == expected
    # only the damaged blocks travelled for the big file: far less than the file itself
    indirect_bytes = fake_server.bytes_sent("/dl/indirect/")
    assert 0 < indirect_bytes < len(data) // 4
    assert fake_server.bytes_sent("/dl/archive/") == 0
    assert verify_game(ctx, slug="space-game").healthy


def test_rollback_restores_the_kept_files_without_downloading(ctx, fake_server: FakeMist, builds) -> None:
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    update_game(ctx, slug="space-game", version="2.0")
    fake_server.log.clear()
    result = rollback_game(ctx, slug="space-game")
    assert result.source == "kept" and result.to_version == "1.0"
    assert tree_bytes(install) == tree_bytes(builds["1.0"])
    assert fake_server.bytes_sent() == 0
    assert ctx.state.require("space-game").version == "1.0"


def test_rollback_without_kept_files_takes_the_planners_route(ctx, fake_server: FakeMist, builds) -> None:
    """The fake planner knows no jumps: it answers indirect for a move back (the live test shows the jump)."""
    ctx.settings.rollback_cap = 0  # nothing may be kept
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    update_game(ctx, slug="space-game", version="2.0")
    fake_server.log.clear()
    result = rollback_game(ctx, slug="space-game")
    assert result.source == "indirect"
    assert tree_bytes(install) == tree_bytes(builds["1.0"])
    assert fake_server.bytes_sent("/dl/archive/") == 0  # no full download
    assert fake_server.bytes_sent("/dl/indirect/") > 0


def test_not_enough_disk_space_stops_before_touching_anything(ctx, fake_server, builds, monkeypatch) -> None:
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    from mist_patcher.core import disk

    monkeypatch.setattr(disk, "free_bytes", lambda path: 1000)
    with pytest.raises(DiskFullError, match=r"not enough disk space.*need .*, have 1000 B"):
        update_game(ctx, slug="space-game")
    assert tree_bytes(install) == tree_bytes(builds["1.0"])
    assert ctx.state.require("space-game").version == "1.0"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 2.5 MB filesystem (tmpfs), so a full disk is a real ENOSPC; skipped where mount is not allowed."""
    import subprocess

    mountpoint = tmp_path / "small-disk"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2560k", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_disk_full_while_staging_discards_the_stage_and_keeps_the_old_version(
    ctx, fake_server: FakeMist, builds, small_disk: Path
) -> None:
    # given: 1.0 (1.2 MB) installed on a 2.5 MB disk, and a planner that under-reports the space
    # needed, so the free-space check passes and the full archive's extraction hits ENOSPC
    install = Path(install_game(ctx, slug="space-game", version="1.0", dest=small_disk / "space").path)
    fake_server.force_route = "full"
    fake_server.disk_bytes_override = 0
    # when
    with pytest.raises(DiskFullError, match=r"not enough disk space on .*: need .*, have "):
        update_game(ctx, slug="space-game", version="3.0")
    # then
    assert tree_bytes(install) == tree_bytes(builds["1.0"])
    assert not stage_dir_for(install).exists()
    assert journal.read_journal(install_root=install) is None
    assert ctx.state.require("space-game").version == "1.0"
    assert verify_game(ctx, slug="space-game").healthy
    assert [p.name for p in small_disk.iterdir()] == ["space"]


def test_recovery_rolls_back_a_crash_while_staging(ctx, builds) -> None:
    # given: a crash left a journal in "staging" and a half-written stage
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    stage = stage_dir_for(install)
    journal.begin(install_root=install, stage_dir=stage, target_version="2.0",
                  written=["data/level1.pak"], removed=["config/defaults.ini"])
    (stage / "data").mkdir(parents=True)
    (stage / "data" / "level1.pak").write_bytes(b"half")
    # when
    [outcome] = recover_all(ctx)
    # then
    assert outcome.outcome == "rolled_back"
    assert tree_bytes(install) == tree_bytes(builds["1.0"])
    assert not stage.exists()
    assert ctx.state.require("space-game").version == "1.0"


def test_recovery_finishes_a_crash_while_committing(ctx, fake_server: FakeMist, builds) -> None:
    # given: all of 2.0 staged, the journal switched to "committing", then the process died
    # after moving only some files
    from mist_patcher.core.staging import ChangeSet

    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    target = fake_server.version("space-game", "2.0").manifest
    changes = ChangeSet.between(ctx.state.manifest("space-game"), target)
    stage = stage_dir_for(install)
    ctx.state.save_pending_manifest("space-game", target)
    j = journal.begin(install_root=install, stage_dir=stage, target_version="2.0", written=changes.written,
                      removed=changes.removed, executable=["bin/game"])
    for rel in changes.written:
        dst = stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((builds["2.0"] / rel).read_bytes())
    j.state = "committing"  # what journal.commit writes first
    journal._write_journal(j)
    first = changes.written[0]
    os.replace(stage / first, install / first)
    # when
    [outcome] = recover_all(ctx)
    # then
    assert outcome.outcome == "rolled_forward"
    assert tree_bytes(install) == tree_bytes(builds["2.0"])
    record = ctx.state.require("space-game")
    assert (record.version, record.previous_version) == ("2.0", "1.0")
    assert ctx.state.manifest("space-game").version == "2.0"


def test_recovery_records_a_switch_that_finished_just_before_the_crash(ctx, fake_server: FakeMist, builds) -> None:
    # given: the files are 2.0 and the journal is gone, but the process died before the install
    # record said so (the window between journal.commit and the record update)
    install = Path(install_game(ctx, slug="space-game", version="1.0").path)
    update_game(ctx, slug="space-game", version="2.0")
    record = ctx.state.require("space-game")
    record.version, record.switching_to = "1.0", "2.0"
    ctx.state.save(record, fake_server.version("space-game", "1.0").manifest)
    ctx.state.save_pending_manifest("space-game", fake_server.version("space-game", "2.0").manifest)
    # when
    [outcome] = recover_all(ctx)
    # then
    assert outcome.outcome == "rolled_forward"
    record = ctx.state.require("space-game")
    assert (record.version, record.switching_to) == ("2.0", "")
    assert ctx.state.manifest("space-game").version == "2.0"
    assert tree_bytes(install) == tree_bytes(builds["2.0"])
