"""Indirect updates: signatures from the client, rdiff bundle from the server, across several versions."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path
from typing import Any

import pytest

from mistcore.errors import IntegrityError, ManifestError, SignatureError
from mistcore.fsutil import clone_tree
from mistcore.indirect import (
    IndirectManifest,
    apply_indirect_to_stage,
    build_indirect_bundle,
    read_signature_set,
    signature_set,
)
from mistcore.journal import commit_stage
from mistcore.manifest import Manifest, diff_manifests, scan_directory
from mistcore.tests.helpers import mutate, snapshot, structured_bytes, write_tree


def _chain(rng: random.Random) -> list[dict[str, Any]]:
    """v1 -> v2 -> v3: each step edits, adds and removes files."""
    v1: dict[str, Any] = {
        "game.exe": (structured_bytes(rng, 400_000), True),
        "data/a.pak": structured_bytes(rng, 300_000),
        "data/b.pak": structured_bytes(rng, 100_000),
        "old_only.txt": b"bye " * 500,
        "same.txt": b"never changes",
    }
    v2 = dict(v1)
    v2["game.exe"] = (mutate(rng, v1["game.exe"][0]), True)
    v2["data/a.pak"] = mutate(rng, v1["data/a.pak"])
    del v2["old_only.txt"]
    v2["data/c.pak"] = structured_bytes(rng, 80_000)
    v3 = dict(v2)
    v3["game.exe"] = (mutate(rng, v2["game.exe"][0]), True)
    v3["data/b.pak"] = rng.randbytes(100_000)  # rewritten: rdiff cannot help, zstd wins
    v3["data/c.pak"] = mutate(rng, v2["data/c.pak"])
    v3["new/ünï.bin"] = structured_bytes(rng, 50_000)
    return [v1, v2, v3]


@pytest.fixture
def chain(work: Path, rng: random.Random) -> list[Manifest]:
    manifests = []
    for i, files in enumerate(_chain(rng), start=1):
        write_tree(work / f"v{i}", files)
        manifests.append(scan_directory(work / f"v{i}", version=f"{i}.0"))
    return manifests


def _update_plan(local: Manifest, target: Manifest) -> tuple[list[str], list[str]]:
    d = diff_manifests(local, target)
    return sorted(d.added + d.changed), d.removed


def test_multi_version_jump(work: Path, chain: list[Manifest]) -> None:
    v1, _, v3 = chain
    clone_tree(work / "v1", work / "install")
    wanted, removed = _update_plan(v1, v3)
    # client
    size, sha = signature_set(root=work / "install", paths=wanted, out_tar=work / "sigs.tar")
    assert size == (work / "sigs.tar").stat().st_size and len(sha) == 64
    # server
    sigs = read_signature_set(
        src=work / "sigs.tar", dest_dir=work / "server_sigs", allowed_paths=set(wanted), max_bytes=10 << 20
    )
    assert sorted(sigs) == sorted(p for p in wanted if p in v1.by_path())  # new files have no signature
    assert sigs.basis_info["game.exe"]["sha256"] == v1.by_path()["game.exe"].sha256
    manifest = build_indirect_bundle(
        signatures=sigs,
        basis_info=sigs.basis_info,
        target_root=work / "v3",
        target_manifest=v3,
        paths=wanted,
        out=work / "bundle.tar.zst",
    )
    engines = {op.path: op.engine for op in manifest.ops}
    assert engines == {
        "game.exe": "rdiff",
        "data/a.pak": "rdiff",
        "data/b.pak": "zstd",
        "data/c.pak": "zstd",
        "new/ünï.bin": "zstd",
    }
    assert (work / "bundle.tar.zst").stat().st_size < v3.total_size // 3
    # client
    written = apply_indirect_to_stage(
        bundle=work / "bundle.tar.zst",
        install_root=work / "install",
        stage_dir=work / "stage",
        max_total_bytes=10 << 20,
    )
    assert sorted(written) == wanted
    commit_stage(install_root=work / "install", stage_dir=work / "stage", written=written, removed=removed)
    assert snapshot(work / "install") == snapshot(work / "v3")
    assert sorted(p.name for p in work.iterdir()) == sorted(
        ["v1", "v2", "v3", "install", "sigs.tar", "server_sigs", "bundle.tar.zst", "stage"]
    )


def test_a_known_basis_gets_the_direct_engines_and_beats_librsync(work: Path, chain: list[Manifest]) -> None:
    """The server holds the client's exact basis (v1's files): those get HDiffPatch / zstd --patch-from against
    it instead of librsync; a wrong server copy (sha256 mismatch) falls back to rdiff; the result is v3."""
    v1, _, v3 = chain
    clone_tree(work / "v1", work / "install")
    wanted, removed = _update_plan(v1, v3)
    signature_set(root=work / "install", paths=wanted, out_tar=work / "sigs.tar")
    sigs = read_signature_set(src=work / "sigs.tar", dest_dir=work / "s", allowed_paths=set(wanted), max_bytes=10**7)
    blind = build_indirect_bundle(signatures=sigs, basis_info=sigs.basis_info, target_root=work / "v3",
                                  target_manifest=v3, paths=wanted, out=work / "blind.tar.zst")
    known = {path: work / "v1" / path for path in sigs}
    (work / "rotten").mkdir()
    (work / "rotten" / "a.pak").write_bytes(b"not the client's file" * 10)
    known["data/a.pak"] = work / "rotten" / "a.pak"  # a copy that is not what its sha256 says: not used
    manifest = build_indirect_bundle(signatures=sigs, basis_info=sigs.basis_info, target_root=work / "v3",
                                     target_manifest=v3, paths=wanted, out=work / "known.tar.zst",
                                     known_bases=known)
    engines = {op.path: op.engine for op in manifest.ops}
    assert engines["game.exe"] in ("hdiff", "hdiff-lzma", "lzma-patch", "zstd-patch"), engines
    assert engines["data/a.pak"] == "rdiff" and engines["new/ünï.bin"] == "zstd"  # no basis: whole
    by_path = {op.path: op for op in manifest.ops}
    blind_ops = {op.path: op for op in blind.ops}
    assert by_path["game.exe"].blob_size < blind_ops["game.exe"].blob_size
    assert (work / "known.tar.zst").stat().st_size < (work / "blind.tar.zst").stat().st_size
    assert by_path["game.exe"].basis_sha256 == v1.by_path()["game.exe"].sha256
    written = apply_indirect_to_stage(bundle=work / "known.tar.zst", install_root=work / "install",
                                      stage_dir=work / "stage", max_total_bytes=10 << 20)
    commit_stage(install_root=work / "install", stage_dir=work / "stage", written=written, removed=removed)
    assert snapshot(work / "install") == snapshot(work / "v3")


def test_a_file_missing_locally_is_diffed_against_a_similar_local_file(work: Path, rng: random.Random) -> None:
    """A library renamed with a new build hash: the client signs its old one in its place (similar_bases), the
    delta is small, and applying it with the same mapping rebuilds the new file."""
    from mistcore.delta import similar_bases

    old_lib = structured_bytes(rng, 300_000)
    write_tree(work / "v1", {"lib/libfoo-1a2b3c4d.so.1": (old_lib, True), "readme.txt": b"hello"})
    write_tree(work / "v2", {"lib/libfoo-9f8e7d6c.so.1": (mutate(rng, old_lib), True), "readme.txt": b"hello"})
    v1, v2 = scan_directory(work / "v1", version="1.0"), scan_directory(work / "v2", version="2.0")
    clone_tree(work / "v1", work / "install")
    wanted, removed = _update_plan(v1, v2)
    assert wanted == ["lib/libfoo-9f8e7d6c.so.1"]
    bases = similar_bases(v1, [v2.by_path()[p] for p in wanted])
    assert bases == {"lib/libfoo-9f8e7d6c.so.1": "lib/libfoo-1a2b3c4d.so.1"}
    signature_set(root=work / "install", paths=wanted, out_tar=work / "sigs.tar", bases=bases)
    sigs = read_signature_set(src=work / "sigs.tar", dest_dir=work / "s", allowed_paths=set(wanted), max_bytes=10**7)
    assert sigs.basis_info[wanted[0]]["sha256"] == v1.by_path()["lib/libfoo-1a2b3c4d.so.1"].sha256
    manifest = build_indirect_bundle(signatures=sigs, basis_info=sigs.basis_info, target_root=work / "v2",
                                     target_manifest=v2, paths=wanted, out=work / "b.tar.zst")
    [op] = manifest.ops
    assert op.engine == "rdiff" and op.blob_size < 300_000 // 4
    written = apply_indirect_to_stage(bundle=work / "b.tar.zst", install_root=work / "install",
                                      stage_dir=work / "stage", max_total_bytes=10 << 20, bases=bases)
    commit_stage(install_root=work / "install", stage_dir=work / "stage", written=written, removed=removed)
    assert snapshot(work / "install") == snapshot(work / "v2")


def test_changed_local_file_is_named(work: Path, chain: list[Manifest]) -> None:
    v1, v2, _ = chain
    clone_tree(work / "v1", work / "install")
    wanted, _ = _update_plan(v1, v2)
    signature_set(root=work / "install", paths=wanted, out_tar=work / "sigs.tar")
    sigs = read_signature_set(src=work / "sigs.tar", dest_dir=work / "s", allowed_paths=set(wanted), max_bytes=10**7)
    build_indirect_bundle(
        signatures=sigs,
        basis_info=sigs.basis_info,
        target_root=work / "v2",
        target_manifest=v2,
        paths=wanted,
        out=work / "b.tar.zst",
    )
    (work / "install" / "game.exe").unlink()
    (work / "install" / "game.exe").write_bytes(b"modified after the signature was made")
    with pytest.raises(IntegrityError, match="game.exe") as err:
        apply_indirect_to_stage(
            bundle=work / "b.tar.zst", install_root=work / "install", stage_dir=work / "stage", max_total_bytes=10**7
        )
    assert err.value.path == "game.exe"


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


def test_read_signature_set_rejects(work: Path, chain: list[Manifest]) -> None:
    v1 = chain[0]
    clone_tree(work / "v1", work / "install")
    signature_set(root=work / "install", paths=["game.exe"], out_tar=work / "good.tar")
    with tarfile.open(work / "good.tar") as tf:
        good = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}  # type: ignore[union-attr]
    sig, index = good["game.exe.sig"], good["signatures.json"]
    size = v1.by_path()["game.exe"].size
    cases = {
        "sig without index entry": {"signatures.json": index, "game.exe.sig": sig, "other.sig": sig},
        "not requested": {"signatures.json": index, "game.exe.sig": sig, "data/a.pak.sig": sig},
        "traversal": {"signatures.json": index, "../game.exe.sig": sig},
        "truncated": {"signatures.json": index, "game.exe.sig": sig[:-7]},
        "bad magic": {"signatures.json": index, "game.exe.sig": b"XXXX" + sig[4:]},
        "no index": {"game.exe.sig": sig},
        "index without sig": {"signatures.json": index},
        "size lie": {
            "signatures.json": index.replace(str(size).encode(), str(size * 50).encode()),
            "game.exe.sig": sig,
        },
        "bad index": {"signatures.json": b'{"format": "mist-sigs/1"}', "game.exe.sig": sig},
        "too big": {"signatures.json": index, "game.exe.sig": sig + bytes(36 * 100_000)},
    }
    for i, (name, members) in enumerate(cases.items()):
        with pytest.raises(SignatureError):
            read_signature_set(
                src=_tar(work / f"{i}.tar", members),
                dest_dir=work / f"d{i}",
                allowed_paths={"game.exe", "other"},
                max_bytes=1 << 20,
            )
        assert not (work / "game.exe").exists(), name
    ok = read_signature_set(
        src=_tar(work / "ok.tar", {"signatures.json": index, "game.exe.sig": sig}),
        dest_dir=work / "dok",
        allowed_paths={"game.exe"},
        max_bytes=1 << 20,
    )
    assert list(ok) == ["game.exe"]
    assert json.loads((work / "dok" / "signatures.json").read_bytes())["format"] == "mist-sigs/1"


def test_indirect_manifest_round_trip_and_rejects() -> None:
    op = {
        "path": "a",
        "engine": "rdiff",
        "blob": "deltas/000000.rdiff",
        "blob_size": 5,
        "blob_sha256": "a" * 64,
        "basis_sha256": "b" * 64,
        "target_size": 9,
        "target_sha256": "c" * 64,
        "executable": False,
    }
    doc = {
        "format": "mist-indirect/1",
        "to_version": "3.0",
        "to_content_hash": "d" * 64,
        "created_by": "t",
        "ops": [op],
    }
    m = IndirectManifest.from_json(json.dumps(doc).encode())
    assert IndirectManifest.from_json(m.to_json()) == m and m.download_size == 5
    for bad in (
        {"engine": "hdiff"},
        {"basis_sha256": None},
        {"blob": "new_files/x.zst"},
        {"path": "../a"},
        {"engine": "zstd"},
        {"target_size": -1},
    ):
        with pytest.raises(ManifestError):
            IndirectManifest.from_json(json.dumps({**doc, "ops": [{**op, **bad}]}).encode())
