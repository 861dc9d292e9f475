"""The small pieces of serving: the range-limited file wrapper and Content-Disposition."""

from __future__ import annotations

from pathlib import Path

import pytest

from downloads.serving import BLOCK_SIZE, RangeFile, content_disposition


def _range_file(path: Path, start: int, length: int) -> tuple[RangeFile, list[int]]:
    closed: list[int] = []
    return RangeFile(open(path, "rb"), start=start, length=length, on_close=closed.append), closed


def test_range_file_stops_at_the_range_end(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 10)
    body, closed = _range_file(path, 100, 50)
    assert body.read(30) == path.read_bytes()[100:130]
    assert body.read(1000) == path.read_bytes()[130:150]
    assert body.read(1000) == b""
    body.close()
    body.close()  # a second close (servers do that) records nothing more
    assert closed == [50]


def test_range_file_never_reads_more_than_a_block(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with open(path, "wb") as f:
        f.truncate(3 * BLOCK_SIZE)
    body, closed = _range_file(path, 0, 3 * BLOCK_SIZE)
    assert len(body.read()) == BLOCK_SIZE
    assert len(body.read(10 * BLOCK_SIZE)) == BLOCK_SIZE
    body.close()
    assert closed == [2 * BLOCK_SIZE]


def test_range_file_of_a_file_that_shrank(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    body, closed = _range_file(path, 90, 50)  # asks past the end: only what exists comes out
    assert body.read(1000) == b"x" * 10
    assert body.read(1000) == b""
    body.close()
    assert closed == [10]


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("game-1.0.tar.zst", 'attachment; filename="game-1.0.tar.zst"'),
        ("été.txt", "attachment; filename=\"ete.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"),
        ('a"b\\c.txt', "attachment; filename=\"a_b_c.txt\"; filename*=UTF-8''a%22b%5Cc.txt"),
        ("日本.bin", "attachment; filename=\"download.bin\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.bin"),
        ("日本", "attachment; filename=\"download\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC"),
        ("my file.txt", "attachment; filename=\"my_file.txt\"; filename*=UTF-8''my%20file.txt"),
    ],
)
def test_content_disposition(name: str, header: str) -> None:
    assert content_disposition(name) == header
    assert header.isascii()
