"""Deterministic packing and hostile-archive extraction."""

from __future__ import annotations

import io
import os
import random
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from mistcore.errors import ArchiveError
from mistcore.safetar import extract_tar_zst, iter_tar_zst, pack_tar_zst
from mistcore.tests.helpers import snapshot, structured_bytes, write_tree


def _tar_zst(path: Path, build: Callable[[tarfile.TarFile], object], *, fmt: int = tarfile.PAX_FORMAT) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tf:
        build(tf)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(raw.getvalue()))
    return path


def _file(tf: tarfile.TarFile, name: str, data: bytes = b"data", mode: int = 0o644) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    tf.addfile(ti, io.BytesIO(data))
    return ti


def _special(tf: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = linkname
    tf.addfile(ti)
    return ti


def test_pack_is_deterministic_and_round_trips(work: Path, rng: random.Random) -> None:
    files: dict[str, bytes | tuple[bytes, bool]] = {
        "bin/game": (structured_bytes(rng, 200_000), True),
        "empty": b"",
        "ünï/cødé/文件.txt": b"hello",
        "deep/" * 20 + "long-name-" + "x" * 120: b"long path",
    }
    write_tree(work / "src", files)
    first = pack_tar_zst(root=work / "src", paths=None, dst=work / "a.tar.zst", extra_files={"meta.json": b"{}"})
    os.utime(work / "src" / "empty", (1, 1))
    os.chmod(work / "src" / "empty", 0o600)  # only the executable bit is carried
    second = pack_tar_zst(root=work / "src", paths=None, dst=work / "b.tar.zst", extra_files={"meta.json": b"{}"})
    assert first == second
    assert (work / "a.tar.zst").read_bytes() == (work / "b.tar.zst").read_bytes()
    names = extract_tar_zst(src=work / "a.tar.zst", dest=work / "out", max_total_bytes=10**7)
    assert sorted(names) == sorted([*files, "meta.json"])
    (work / "out" / "meta.json").unlink()
    assert snapshot(work / "out") == snapshot(work / "src")
    with tarfile.open(
        fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress((work / "a.tar.zst").read_bytes()))
    ) as tf:
        for ti in tf.getmembers():
            assert (ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname) == (0, 0, 0, "", "")
            assert ti.mode in (0o644, 0o755)


def test_pack_selected_paths_and_iterate(work: Path) -> None:
    write_tree(work / "src", {"a": b"1", "b/c": (b"22", True), "skip": b"no"})
    pack_tar_zst(root=work / "src", paths=["b/c", "a"], dst=work / "x.tar.zst")
    seen = [
        (n, s, r.read(), r.executable)
        for n, s, r in iter_tar_zst(work / "x.tar.zst", max_members=10, max_total_bytes=100)
    ]
    assert seen == [("a", 1, b"1", False), ("b/c", 2, b"22", True)]


def test_leading_dot_slash_and_folder_entries_are_accepted(work: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        _special(tf, ".", tarfile.DIRTYPE)
        _special(tf, "./dir", tarfile.DIRTYPE)
        _file(tf, "./dir/f", b"x", mode=0o775)

    _tar_zst(work / "t.tar.zst", build, fmt=tarfile.GNU_FORMAT)
    assert extract_tar_zst(src=work / "t.tar.zst", dest=work / "out", max_total_bytes=100) == ["dir/f"]
    assert os.stat(work / "out/dir/f").st_mode & 0o777 == 0o755


MALICIOUS: dict[str, Callable[[tarfile.TarFile], object]] = {
    "parent": lambda tf: _file(tf, "../x"),
    "nested parent": lambda tf: _file(tf, "a/../../x"),
    "absolute": lambda tf: _file(tf, "/etc/x"),
    "windows absolute": lambda tf: _file(tf, "C:\\x"),
    "backslash": lambda tf: _file(tf, "a\\..\\x"),
    "reserved": lambda tf: _file(tf, "NUL.txt"),
    "symlink": lambda tf: _special(tf, "link", tarfile.SYMTYPE, "/etc/passwd"),
    "hardlink": lambda tf: (_file(tf, "a"), _special(tf, "b", tarfile.LNKTYPE, "a")),
    "char device": lambda tf: _special(tf, "dev", tarfile.CHRTYPE),
    "block device": lambda tf: _special(tf, "blk", tarfile.BLKTYPE),
    "fifo": lambda tf: _special(tf, "fifo", tarfile.FIFOTYPE),
    "duplicate": lambda tf: (_file(tf, "a"), _file(tf, "a")),
    "case duplicate": lambda tf: (_file(tf, "Readme"), _file(tf, "README")),
    "file then folder": lambda tf: (_file(tf, "a"), _file(tf, "a/b")),
    "dot dir traversal": lambda tf: _special(tf, "../up", tarfile.DIRTYPE),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_members_are_refused(work: Path, case: str) -> None:
    _tar_zst(work / "evil.tar.zst", MALICIOUS[case])
    with pytest.raises(ArchiveError):
        extract_tar_zst(src=work / "evil.tar.zst", dest=work / "out", max_total_bytes=10**6)
    assert sorted(p.name for p in work.iterdir()) == ["evil.tar.zst"]  # no dest, no temp folder
    assert not (work.parent / "x").exists()


def test_error_names_the_member(work: Path) -> None:
    _tar_zst(work / "evil.tar.zst", lambda tf: (_file(tf, "ok"), _file(tf, "../../escape.txt")))
    with pytest.raises(ArchiveError, match="escape.txt"):
        extract_tar_zst(src=work / "evil.tar.zst", dest=work / "out", max_total_bytes=10**6)


def test_member_count_and_size_caps(work: Path) -> None:
    _tar_zst(work / "many.tar.zst", lambda tf: [_file(tf, f"f{i}") for i in range(6)])
    with pytest.raises(ArchiveError, match="more than 5 members"):
        extract_tar_zst(src=work / "many.tar.zst", dest=work / "o1", max_members=5, max_total_bytes=10**6)
    _tar_zst(work / "big.tar.zst", lambda tf: [_file(tf, f"f{i}", bytes(1000)) for i in range(3)])
    with pytest.raises(ArchiveError, match="limit of 2500"):
        extract_tar_zst(src=work / "big.tar.zst", dest=work / "o2", max_total_bytes=2500)
    with pytest.raises(ArchiveError, match="per-file limit"):
        extract_tar_zst(src=work / "big.tar.zst", dest=work / "o3", max_total_bytes=10**6, max_file_bytes=999)
    assert extract_tar_zst(src=work / "big.tar.zst", dest=work / "o4", max_total_bytes=3000) == ["f0", "f1", "f2"]


def test_size_bomb_refused_from_the_header(work: Path) -> None:
    # A member declaring 256 MiB of zeros: a tiny download, refused before anything is written.
    raw = work / "bomb.tar.zst"
    with (
        open(raw, "wb") as f,
        zstandard.ZstdCompressor(level=1).stream_writer(f) as zw,
        tarfile.open(fileobj=zw, mode="w|") as tf,
    ):
        ti = tarfile.TarInfo("zeros")
        ti.size = 256 << 20

        class Zeros:
            def read(self, n: int) -> bytes:
                return bytes(n)

        tf.addfile(ti, Zeros())  # type: ignore[arg-type]
    assert raw.stat().st_size < 1 << 20
    start = time.monotonic()
    with pytest.raises(ArchiveError, match="limit"):
        extract_tar_zst(src=raw, dest=work / "out", max_total_bytes=10 << 20)
    assert time.monotonic() - start < 2 and not (work / "out").exists()


def test_huge_pax_header_refused(work: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        ti = tarfile.TarInfo("a")
        ti.pax_headers = {"comment": "x" * (2 << 20)}
        tf.addfile(ti, io.BytesIO(b""))

    _tar_zst(work / "pax.tar.zst", build)
    with pytest.raises(ArchiveError, match="metadata header"):
        extract_tar_zst(src=work / "pax.tar.zst", dest=work / "out", max_total_bytes=10**9)


def test_truncated_and_corrupt_archives(work: Path, rng: random.Random) -> None:
    write_tree(work / "src", {f"f{i}": structured_bytes(rng, 50_000) for i in range(4)})
    pack_tar_zst(root=work / "src", paths=None, dst=work / "ok.tar.zst", level=3)
    data = (work / "ok.tar.zst").read_bytes()
    for i, cut in enumerate([10, len(data) // 2, len(data) - 30, len(data) - 1]):
        (work / "cut.tar.zst").write_bytes(data[:cut])
        with pytest.raises(ArchiveError):
            extract_tar_zst(src=work / "cut.tar.zst", dest=work / f"out{i}", max_total_bytes=10**7)
        assert not (work / f"out{i}").exists()
    (work / "plain.tar.zst").write_bytes(b"\0" * 1000)
    with pytest.raises(ArchiveError):
        extract_tar_zst(src=work / "plain.tar.zst", dest=work / "outp", max_total_bytes=10**7)
    assert sorted(p.name for p in work.iterdir()) == ["cut.tar.zst", "ok.tar.zst", "plain.tar.zst", "src"]


def test_dest_must_not_exist(work: Path) -> None:
    _tar_zst(work / "t.tar.zst", lambda tf: _file(tf, "a"))
    (work / "out").mkdir()
    with pytest.raises(FileExistsError):
        extract_tar_zst(src=work / "t.tar.zst", dest=work / "out", max_total_bytes=100)
