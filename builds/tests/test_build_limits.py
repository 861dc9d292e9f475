"""Issue 18 point 7: limits that limit. A build's expanded size is measured from its headers and checked
against MIST_MAX_BUILD_BYTES and the storage disk's free space before any byte is written; a tar name
carrying a NUL byte (which Python's tarfile cuts silently) is refused."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from builds import storage
from builds.models import Version
from builds.services import BuildError, push_version
from catalog.models import Game


@pytest.fixture
def game(db: None) -> Game:
    return Game.objects.create(slug="bomb-game", title="Bomb Game")


def _zeros_tar_zst(path: Path, *, size: int) -> Path:
    """A tar.zst of one file of `size` zero bytes: tiny on disk, large once extracted (a bomb, in small)."""
    cctx = zstandard.ZstdCompressor(level=3)
    with open(path, "wb") as raw, cctx.stream_writer(raw) as out, tarfile.open(fileobj=out, mode="w|") as tf:
        info = tarfile.TarInfo("data.bin")
        info.size = size
        tf.addfile(info, io.BytesIO(bytes(size)))
    return path


def _zeros_zip(path: Path, *, size: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.bin", bytes(size))
    return path


def _nothing_written(game: Game) -> None:
    assert not Version.objects.filter(game=game).exists()
    trees = storage.storage_root() / "games" / game.slug
    written = [p for p in trees.rglob("*") if p.is_file()] if trees.exists() else []
    assert written == [], written


@pytest.mark.parametrize("make", [_zeros_tar_zst, _zeros_zip], ids=["tar.zst", "zip"])
def test_a_build_over_the_ceiling_is_refused_before_a_byte_is_written(
    game: Game, tmp_path: Path, settings: Any, make: Any
) -> None:
    settings.MIST_MAX_BUILD_BYTES = 8 << 20
    bomb = make(tmp_path / f"bomb.{'zip' if make is _zeros_zip else 'tar.zst'}", size=64 << 20)
    assert bomb.stat().st_size < 1 << 20  # it is small on disk
    with pytest.raises(BuildError, match="MIST_MAX_BUILD_BYTES"):
        push_version(game=game, name="1.0", source=bomb)
    _nothing_written(game)


def test_a_build_larger_than_the_free_disk_is_refused_before_a_byte_is_written(
    game: Game, tmp_path: Path, settings: Any
) -> None:
    root = storage.storage_root()
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    settings.MIST_MIN_FREE_BYTES = free - (4 << 20)  # leave this push a 4 MB budget
    bomb = _zeros_tar_zst(tmp_path / "big.tar.zst", size=32 << 20)
    with pytest.raises(BuildError, match="free space"):
        push_version(game=game, name="1.0", source=bomb)
    _nothing_written(game)
    # and the same push fits once the disk has room
    settings.MIST_MIN_FREE_BYTES = 0
    push_version(game=game, name="1.0", source=bomb)
    assert Version.objects.filter(game=game, name="1.0").exists()


def test_a_tar_name_with_a_nul_byte_is_refused(game: Game, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("placeholder")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    data = bytearray(buf.getvalue())
    data[0:100] = b"game.exe\0.txt".ljust(100, b"\0")  # tarfile alone would read "game.exe"
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    assert tarfile.open(fileobj=io.BytesIO(bytes(data))).getnames() == ["game.exe"]  # the silent cut
    archive = tmp_path / "nul.tar"
    archive.write_bytes(bytes(data))
    with pytest.raises(BuildError, match="NUL byte"):
        push_version(game=game, name="1.0", source=archive)
    _nothing_written(game)
