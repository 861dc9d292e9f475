"""Manifest format, path and version-name rules, build scanning."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from mistcore import manifest as manifest_mod
from mistcore.errors import ManifestError, UnsafePathError
from mistcore.manifest import (
    FileRecord,
    Manifest,
    diff_manifests,
    scan_directory,
    validate_relpath,
    validate_version_name,
)
from mistcore.tests.helpers import write_tree

SHA_A = "a" * 64
SHA_B = "b" * 64


def _doc(entries: list[dict[str, Any]], **over: Any) -> bytes:
    doc = {
        "format": "mist-manifest/1",
        "version": "1.0",
        "files": entries,
        "total_size": sum(f.get("size", 0) for f in entries if type(f.get("size")) is int),
    }
    doc.update(over)
    return json.dumps(doc).encode()


def _entry(path: Any = "a.txt", size: Any = 1, sha256: Any = SHA_A, executable: Any = False) -> dict[str, Any]:
    return {"path": path, "size": size, "sha256": sha256, "executable": executable}


def test_round_trip_is_stable_and_sorted() -> None:
    m = Manifest(
        version="1.0",
        files=(
            FileRecord("z/ü.bin", 3, SHA_A, True),
            FileRecord("a.txt", 0, SHA_B),
            FileRecord("m/x", 10, SHA_A),
        ),
    )
    data = m.to_json()
    assert [r.path for r in m.files] == ["a.txt", "m/x", "z/ü.bin"]
    back = Manifest.from_json(data)
    assert back == m
    assert back.to_json() == data
    obj = json.loads(data)
    assert obj["format"] == "mist-manifest/1" and obj["total_size"] == 13
    assert list(obj) == sorted(obj)
    assert m.by_path()["z/ü.bin"].executable is True


def test_content_hash_ignores_version_name_but_not_content_or_exec_bit() -> None:
    files = (FileRecord("a", 1, SHA_A), FileRecord("b", 2, SHA_B))
    h = Manifest("1.0", files).content_hash()
    assert Manifest("2.0-beta", tuple(reversed(files))).content_hash() == h
    assert Manifest("1.0", (FileRecord("a", 1, SHA_A, True), files[1])).content_hash() != h
    assert Manifest("1.0", (FileRecord("a", 1, SHA_B), files[1])).content_hash() != h


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_doc([_entry()], format="mist-manifest/2"), "format"),
        (_doc([_entry(size="1")]), "size"),
        (_doc([_entry(size=True)]), "size"),
        (_doc([_entry(size=-1)]), "size"),
        (_doc([_entry(sha256="A" * 64)]), "sha256"),
        (_doc([_entry(sha256="a" * 63)]), "sha256"),
        (_doc([_entry(sha256=None)]), "sha256"),
        (_doc([_entry(executable=1)]), "true or false"),
        (_doc([_entry(path=5)]), "path"),
        (_doc([_entry("a.txt"), _entry("a.txt")]), "duplicate"),
        (_doc([_entry("A.TXT"), _entry("a.txt")]), "case"),
        (_doc([_entry("caf\u00e9"), _entry("cafe\u0301")]), "normalization"),
        (_doc([_entry("../etc/passwd")]), ".."),
        (_doc([_entry("/abs")]), "absolute"),
        (_doc([_entry("a"), _entry("a/b")]), "also a"),
        (_doc([_entry("b"), _entry("a")]), "sorted"),
        (_doc([_entry()], total_size=99), "total_size"),
        (_doc([_entry()], extra=1), "unexpected"),
        (_doc([{"path": "a", "size": 1, "sha256": SHA_A}]), "missing"),
        (_doc([_entry()], version="bad/name"), "version"),
        (_doc([], files={}), "list"),
        (b'{"format": "mist-manifest/1", "format": "x"}', "duplicate JSON key"),
        (b"[1, 2]", "object"),
        (b"\xff\xfe", "JSON"),
        (b'{"a": NaN}', "NaN"),
    ],
)
def test_from_json_rejects(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.from_json(data)


def test_from_json_entry_and_size_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _doc([_entry(f"f{i}") for i in range(5)])
    monkeypatch.setattr(manifest_mod, "MAX_ENTRIES", 4)
    with pytest.raises(ManifestError, match="more than 4"):
        Manifest.from_json(data)
    monkeypatch.setattr(manifest_mod, "MAX_ENTRIES", 10)
    monkeypatch.setattr(manifest_mod, "MAX_JSON_BYTES", len(data) - 1)
    with pytest.raises(ManifestError, match="larger than"):
        Manifest.from_json(data)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/x",
        "C:\\x",
        "c:x",
        "\\\\server\\share",
        "a\\b",
        "..",
        "a/../b",
        "a/./b",
        ".",
        "./a",
        "a/",
        "a//b",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "CON",
        "nul.txt",
        "dir/Com1",
        "LPT9.log",
        "aux",
        "a./b",
        "a/b ",
        "x:y",
        "a<b",
        "what?",
        "a" * 256,
        "\udcff",
    ],
)
def test_validate_relpath_rejects(path: str) -> None:
    with pytest.raises(UnsafePathError):
        validate_relpath(path)


@pytest.mark.parametrize("path", ["a", "a/b/c.txt", ".hidden", "Ünïcødé/文件.dat", "con-fig/console.txt", "a b/c d"])
def test_validate_relpath_accepts(path: str) -> None:
    assert validate_relpath(path) == path


def test_unsafe_path_error_names_the_path() -> None:
    with pytest.raises(UnsafePathError, match=r"evil/\.\./x"):
        validate_relpath("evil/../x")


@pytest.mark.parametrize("name", ["1.0", "v2.3.4-beta+build.7", "A_b", "x" * 64])
def test_version_names_accepted(name: str) -> None:
    assert validate_version_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "1.0.", "a__b", "a/b", "a b", "x" * 65, "é", "CON", 3])
def test_version_names_rejected(name: Any) -> None:
    with pytest.raises(ManifestError):
        validate_version_name(name)


def test_scan_directory_hashes_everything(work: Path) -> None:
    write_tree(work / "b", {"bin/game": (b"#!/bin/sh\n", True), "empty": b"", "ü/文件.dat": b"x" * 3000000})
    calls: list[int] = []
    m = scan_directory(work / "b", version="1.0", progress=calls.append)
    recs = m.by_path()
    assert sorted(recs) == ["bin/game", "empty", "ü/文件.dat"]
    assert recs["bin/game"].executable and not recs["empty"].executable
    assert recs["empty"].size == 0 and recs["ü/文件.dat"].size == 3000000
    assert sum(calls) == m.total_size
    assert Manifest.from_json(m.to_json()) == m


def test_scan_rejects_symlinks(work: Path) -> None:
    write_tree(work / "b", {"real": b"x"})
    os.symlink("real", work / "b" / "link")
    with pytest.raises(UnsafePathError, match="'link'.*symlink"):
        scan_directory(work / "b", version="1.0")


def test_scan_rejects_symlinked_folder(work: Path) -> None:
    write_tree(work / "b", {"real/x": b"x"})
    os.symlink(work, work / "b" / "escape")
    with pytest.raises(UnsafePathError, match="escape"):
        scan_directory(work / "b", version="1.0")


def test_scan_rejects_fifo_and_socket(work: Path) -> None:
    write_tree(work / "b", {"x": b"x"})
    os.mkfifo(work / "b" / "pipe")
    with pytest.raises(UnsafePathError, match="pipe"):
        scan_directory(work / "b", version="1.0")
    os.unlink(work / "b" / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    short = Path("/tmp") / f"mc-{os.getpid()}.sock"
    try:
        sock.bind(str(short))
        os.rename(short, work / "b" / "sock")
        with pytest.raises(UnsafePathError, match="sock"):
            scan_directory(work / "b", version="1.0")
    finally:
        sock.close()


def test_scan_rejects_case_clash(work: Path) -> None:
    write_tree(work / "b", {"Data/a.txt": b"1", "data/A.TXT": b"2"})
    if len(os.listdir(work / "b")) < 2:
        pytest.skip("case-insensitive filesystem")
    with pytest.raises(UnsafePathError, match="case"):
        scan_directory(work / "b", version="1.0")


def test_scan_rejects_unsafe_names_and_empty_build(work: Path) -> None:
    write_tree(work / "b", {"ok/aux.txt": b"1"})
    with pytest.raises(UnsafePathError, match="aux"):
        scan_directory(work / "b", version="1.0")
    (work / "e" / "only" / "folders").mkdir(parents=True)
    with pytest.raises(ManifestError, match="no files"):
        scan_directory(work / "e", version="1.0")


def test_diff_manifests() -> None:
    old = Manifest(
        "1",
        (
            FileRecord("same", 1, SHA_A),
            FileRecord("chg", 1, SHA_A),
            FileRecord("gone", 1, SHA_A),
            FileRecord("exe", 1, SHA_A),
        ),
    )
    new = Manifest(
        "2",
        (
            FileRecord("same", 1, SHA_A),
            FileRecord("chg", 1, SHA_B),
            FileRecord("new", 1, SHA_A),
            FileRecord("exe", 1, SHA_A, True),
        ),
    )
    d = diff_manifests(old, new)
    assert (d.added, d.removed, sorted(d.changed), d.unchanged) == (["new"], ["gone"], ["chg", "exe"], ["same"])
