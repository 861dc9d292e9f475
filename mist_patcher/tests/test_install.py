"""Install from a (fake, real-HTTP) server: download, safe extraction, verification, resume."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mist_patcher.core.errors import ConfigError, PatcherError
from mist_patcher.core.install import install_game, uninstall_game
from mist_patcher.core.repair import verify_game
from mist_patcher.tests.conftest import tree_bytes
from mist_patcher.tests.fakeserver import FakeMist


def test_install_latest_matches_the_build_byte_for_byte(ctx, fake_server: FakeMist, builds) -> None:
    # when
    result = install_game(ctx, slug="space-game")
    # then
    folder = Path(result.path)
    assert result.version == "3.0"
    assert tree_bytes(folder) == tree_bytes(builds["3.0"])
    assert os.stat(folder / "bin" / "game").st_mode & stat.S_IXUSR
    assert not os.stat(folder / "readme.txt").st_mode & stat.S_IXUSR
    record = ctx.state.require("space-game")
    assert (record.version, record.complete) == ("3.0", True)
    assert ctx.state.manifest("space-game").version == "3.0"
    assert result.downloaded == fake_server.version("space-game", "3.0").archive.size
    # the archive is not kept once the install is verified
    assert not list(ctx.state.downloads_dir.glob("*.tar.zst*"))


def test_install_a_chosen_version_into_a_chosen_folder(ctx, builds, tmp_path: Path) -> None:
    result = install_game(ctx, slug="space-game", version="1.0", dest=tmp_path / "My Games" / "space")
    assert result.path == str(tmp_path / "My Games" / "space")
    assert tree_bytes(Path(result.path)) == tree_bytes(builds["1.0"])


def test_dry_run_changes_nothing(ctx, fake_server: FakeMist) -> None:
    result = install_game(ctx, slug="space-game", dry_run=True)
    assert result.dry_run and result.archive_size == fake_server.version("space-game", "3.0").archive.size
    assert ctx.state.get("space-game") is None
    assert not Path(result.path).exists()
    assert fake_server.bytes_sent() == 0


def test_unknown_version_and_busy_folder_are_refused_cleanly(ctx, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no version '9.9'.*available: 1.0, 2.0, 3.0"):
        install_game(ctx, slug="space-game", version="9.9")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        install_game(ctx, slug="space-game", dest=occupied)
    assert (occupied / "mine.txt").read_text() == "keep me"
    assert ctx.state.get("space-game") is None


def test_second_install_is_refused(ctx) -> None:
    install_game(ctx, slug="space-game", version="1.0")
    with pytest.raises(PatcherError, match="already installed"):
        install_game(ctx, slug="space-game")


def test_interrupted_download_resumes_with_a_range_request(ctx, fake_server: FakeMist) -> None:
    # given: half of the archive already downloaded by an earlier, interrupted run
    archive = fake_server.version("space-game", "3.0").archive
    data = archive.path.read_bytes()
    dest = ctx.state.download_path("space-game-3.0.tar.zst")
    half = len(data) // 2
    dest.with_name(dest.name + ".part").write_bytes(data[:half])
    import json

    dest.with_name(dest.name + ".part.json").write_text(
        json.dumps({"url": "/dl/archive/space-game/3.0", "sha256": archive.sha256})
    )
    # when
    result = install_game(ctx, slug="space-game")
    # then: only the missing half crossed the wire
    assert result.downloaded == len(data) - half
    ranged = [e for e in fake_server.log if e.path == "/dl/archive/space-game/3.0"]
    assert ranged[-1].range == f"bytes={half}-" and ranged[-1].status == 206


def test_uninstall_removes_folder_and_state(ctx) -> None:
    result = install_game(ctx, slug="space-game", version="1.0")
    uninstall_game(ctx, slug="space-game")
    assert not Path(result.path).exists()
    assert ctx.state.get("space-game") is None
    with pytest.raises(PatcherError, match="not installed"):
        verify_game(ctx, slug="space-game")


def test_extract_a_local_archive_and_refuse_a_hostile_one(tmp_path: Path, builds) -> None:
    import io
    import tarfile

    import zstandard

    from mist_patcher.core.archive import extract_archive
    from mistcore.errors import ArchiveError
    from mistcore.manifest import scan_directory
    from mistcore.safetar import pack_tar_zst

    # given: a version's archive made the way the server makes it
    manifest = scan_directory(builds["1.0"], version="1.0")
    archive = tmp_path / "1.0.tar.zst"
    pack_tar_zst(root=builds["1.0"], paths=None, dst=archive, level=3)
    events = []  # type: ignore[var-annotated]
    # when
    names = extract_archive(src=archive, dest=tmp_path / "game", manifest=manifest, progress=events.append)
    # then
    assert sorted(names) == sorted(r.path for r in manifest.files)
    assert tree_bytes(tmp_path / "game") == tree_bytes(builds["1.0"])
    assert events[-1].phase == "extract" and events[-1].done == manifest.total_size

    # a member escaping with ".." is refused and nothing is left behind
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    hostile = tmp_path / "hostile.tar.zst"
    hostile.write_bytes(zstandard.ZstdCompressor().compress(raw.getvalue()))
    with pytest.raises(ArchiveError, match=r"\.\."):
        extract_archive(src=hostile, dest=tmp_path / "victim", manifest=manifest)
    assert not (tmp_path / "victim").exists() and not (tmp_path / "evil.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".victim")] == []
