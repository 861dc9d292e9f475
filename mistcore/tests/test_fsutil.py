"""Atomic files and folders, bounded copies, hardlink clones."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from mistcore.errors import IntegrityError, UnsafePathError
from mistcore.fsutil import atomic_dir, atomic_write, clone_tree, copy_stream, link_or_copy, sha256_file
from mistcore.tests.helpers import snapshot, write_tree


def test_sha256_file_streams(work: Path) -> None:
    data = os.urandom(3 << 20)
    (work / "f").write_bytes(data)
    assert sha256_file(work / "f") == hashlib.sha256(data).hexdigest()


def test_copy_stream_counts_hashes_and_caps() -> None:
    data = os.urandom(2_500_000)
    out = io.BytesIO()
    progress: list[int] = []
    assert copy_stream(io.BytesIO(data), out, progress=progress.append) == (len(data), hashlib.sha256(data).hexdigest())
    assert out.getvalue() == data and sum(progress) == len(data)
    assert copy_stream(io.BytesIO(data), None, limit=len(data))[0] == len(data)
    with pytest.raises(IntegrityError, match="limit"):
        copy_stream(io.BytesIO(data), io.BytesIO(), limit=len(data) - 1)


def test_atomic_write_replaces_only_on_success(work: Path) -> None:
    target = work / "f.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"
        assert [p.name for p in work.iterdir() if p.name.startswith(".f.bin.tmp-")]
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in work.iterdir()) == ["f.bin"]
    with atomic_write(work / "t.txt", "w") as f:
        f.write("héllo")
    assert (work / "t.txt").read_text(encoding="utf-8") == "héllo"


def test_atomic_dir(work: Path) -> None:
    dest = work / "out"
    with atomic_dir(dest) as tmp:
        (tmp / "a").write_bytes(b"1")
        assert not dest.exists()
    assert (dest / "a").read_bytes() == b"1"
    with pytest.raises(FileExistsError), atomic_dir(dest) as tmp:
        (tmp / "b").write_bytes(b"2")
    with atomic_dir(dest, replace=True) as tmp:
        (tmp / "c").write_bytes(b"3")
    assert sorted(p.name for p in dest.iterdir()) == ["c"]
    with pytest.raises(ValueError), atomic_dir(work / "other") as tmp:
        (tmp / "x").write_bytes(b"x")
        raise ValueError
    assert sorted(p.name for p in work.iterdir()) == ["out"]


def test_clone_tree_hardlinks_and_keeps_exec_bits(work: Path) -> None:
    write_tree(work / "src", {"bin/run": (b"#!", True), "data/a": b"a", "empty": b""})
    (work / "src" / "empty_dir").mkdir()
    clone_tree(work / "src", work / "dst")
    assert snapshot(work / "dst") == snapshot(work / "src")
    assert os.stat(work / "dst/data/a").st_ino == os.stat(work / "src/data/a").st_ino
    with pytest.raises(FileExistsError):
        clone_tree(work / "src", work / "dst")
    os.symlink("data", work / "src" / "link")
    with pytest.raises(UnsafePathError, match="link"):
        clone_tree(work / "src", work / "dst2")


def test_link_or_copy(work: Path) -> None:
    (work / "a").write_bytes(b"x")
    link_or_copy(work / "a", work / "b")
    assert (work / "b").read_bytes() == b"x"
    with pytest.raises(FileExistsError):
        link_or_copy(work / "a", work / "b")
