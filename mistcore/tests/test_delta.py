"""Direct deltas: build, bundle, unpack, stage, commit; the result is exactly the new tree."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from mistcore.delta import (
    MANIFEST_NAME,
    DeltaManifest,
    DeltaOp,
    apply_delta_dir,
    apply_delta_to_stage,
    build_direct_delta,
    bundle_delta,
    commit_stage,
    unpack_bundle,
)
from mistcore.errors import ArchiveError, IntegrityError, ManifestError
from mistcore.fsutil import clone_tree, sha256_bytes
from mistcore.manifest import scan_directory
from mistcore.tests.helpers import mutate, snapshot, structured_bytes, write_tree
from mistcore.zstdio import compress_bytes


def make_versions(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two versions of a small game exercising every kind of op."""
    game = structured_bytes(rng, 300_000)
    lib = structured_bytes(rng, 150_000)
    level2 = structured_bytes(rng, 120_000)
    dupe = structured_bytes(rng, 40_000)
    old: dict[str, Any] = {
        "bin/game": (game, True),
        "data/level1.pak": structured_bytes(rng, 200_000),
        "data/level2.pak": level2,
        "lib/libfoo-1.2.so": lib,
        "docs/readme.txt": b"read me " * 100,
        "ünïcødé/naïve.txt": b"caf\xc3\xa9 " * 300,
        "empty.txt": b"",
        "tools/run.sh": (b"#!/bin/sh\necho hi\n", False),
        "config.json": json.dumps({"seed": rng.random(), "name": "old"}).encode(),
        "save": b"a file that becomes a folder",
    }
    new = dict(old)
    del new["data/level2.pak"], new["lib/libfoo-1.2.so"], new["docs/readme.txt"], new["save"]
    new.update(
        {
            "bin/game": (mutate(rng, game), True),  # changed: hdiff patch
            "data/levels/level2.pak": level2,  # moved: copy, nothing sent
            "data/level2-backup.pak": level2,  # duplicate of a moved file: copy
            "lib/libfoo-1.3.so": mutate(rng, lib, inserts=1),  # renamed and changed: patch from 1.2
            "ünïcødé/naïve.txt": b"caf\xc3\xa9 " * 300 + "ß".encode() * 10,
            "new_empty": b"",  # added empty file
            "tools/run.sh": (b"#!/bin/sh\necho hi\n", True),  # only the exec bit changed: copy
            "assets/a.bin": dupe,  # new content twice: one blob
            "assets/sub/b.bin": dupe,
            "assets/noise.bin": rng.randbytes(30_000),  # incompressible: zstd add
            "config.json": json.dumps({"name": "new", "v": [rng.random() for _ in range(5)]}).encode(),
            "save/slot1": b"a folder where a file was",
        }
    )
    return old, new


@pytest.fixture(scope="module")
def version_data() -> tuple[dict[str, Any], dict[str, Any]]:
    return make_versions(random.Random(1234))


@pytest.fixture
def versions(work: Path, version_data: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    old, new = version_data
    write_tree(work / "v1", old)
    write_tree(work / "v2", new)
    m1 = scan_directory(work / "v1", version="1.0")
    m2 = scan_directory(work / "v2", version="1.1")
    return {"old": old, "new": new, "m1": m1, "m2": m2}


def _build(work: Path, v: dict[str, Any], **kw: Any) -> DeltaManifest:
    return build_direct_delta(
        old_root=work / "v1",
        old_manifest=v["m1"],
        new_root=work / "v2",
        new_manifest=v["m2"],
        out_dir=work / "delta",
        level=9,
        **kw,
    )


def test_build_chooses_the_right_ops(work: Path, versions: dict[str, Any]) -> None:
    delta = _build(work, versions)
    ops = {op.path: op for op in delta.ops}
    kinds = {path: (op.op, op.engine, op.source_path) for path, op in ops.items()}
    assert kinds["bin/game"] == ("patch", "hdiff", "bin/game")
    assert kinds["data/levels/level2.pak"] == ("copy", None, "data/level2.pak")
    assert kinds["data/level2-backup.pak"] == ("copy", None, "data/level2.pak")
    assert kinds["lib/libfoo-1.3.so"] == ("patch", "hdiff", "lib/libfoo-1.2.so")
    assert kinds["tools/run.sh"] == ("copy", None, "tools/run.sh")
    assert kinds["assets/noise.bin"][:2] == ("add", "zstd")
    # Rewritten small text: zstd with the old file as dictionary beats hdiff and the whole file.
    assert kinds["config.json"][:2] == ("patch", "zstd-patch")
    assert kinds["new_empty"] == ("copy", None, "empty.txt")  # empty content exists already
    assert {p for p, op in ops.items() if op.op == "remove"} == {
        "data/level2.pak",
        "lib/libfoo-1.2.so",
        "docs/readme.txt",
        "save",
    }
    assert "data/level1.pak" not in ops and "empty.txt" not in ops
    assert ops["assets/a.bin"].blob == ops["assets/sub/b.bin"].blob  # duplicate content sent once
    blobs = sorted(p.relative_to(work / "delta").as_posix() for p in (work / "delta").rglob("*") if p.is_file())
    assert blobs == sorted({op.blob for op in delta.ops if op.blob} | {MANIFEST_NAME})
    assert delta.download_size == sum(os.path.getsize(work / "delta" / b) for b in blobs if b != MANIFEST_NAME)
    # Efficiency: far less than shipping every new or changed file zstd-compressed.
    changed = [p for p, op in ops.items() if op.op != "remove"]
    zstd_total = sum(len(compress_bytes((work / "v2" / p).read_bytes(), 19)) for p in changed)
    print(f"download {delta.download_size} bytes vs zstd -19 of changed files {zstd_total}")
    assert delta.download_size < zstd_total * 0.5
    for op in delta.ops:
        if op.op in ("patch", "add"):
            assert op.blob_size is not None and op.target_size is not None  # ratio for the efficiency report


def test_manifest_json_round_trip(work: Path, versions: dict[str, Any]) -> None:
    delta = _build(work, versions)
    data = (work / "delta" / MANIFEST_NAME).read_bytes()
    assert data == delta.to_json()
    back = DeltaManifest.from_json(data)
    assert back == delta and back.to_json() == data
    assert back.from_content_hash == versions["m1"].content_hash()
    assert json.loads(data)["format"] == "mist-delta/1"


def test_apply_gives_exactly_the_new_tree(work: Path, versions: dict[str, Any]) -> None:
    _build(work, versions)
    clone_tree(work / "v1", work / "install")
    before = snapshot(work / "v1")
    delta = apply_delta_dir(delta_dir=work / "delta", install_root=work / "install", work_dir=work / "tmp")
    assert snapshot(work / "install") == snapshot(work / "v2")
    assert snapshot(work / "v1") == before  # hardlinked clone: the source tree was never written
    assert scan_directory(work / "install", version="1.1").content_hash() == delta.to_content_hash
    assert not (work / "tmp" / "stage").exists()


def test_bundle_round_trip(work: Path, versions: dict[str, Any]) -> None:
    delta = _build(work, versions)
    size, sha = bundle_delta(delta_dir=work / "delta", dst=work / "d.tar.zst")
    assert size == (work / "d.tar.zst").stat().st_size and len(sha) == 64
    assert size < delta.download_size + 20_000
    back = unpack_bundle(src=work / "d.tar.zst", dest=work / "unpacked", max_total_bytes=10**8)
    assert back == delta
    clone_tree(work / "v1", work / "install")
    apply_delta_dir(delta_dir=work / "unpacked", install_root=work / "install", work_dir=work / "tmp")
    assert snapshot(work / "install") == snapshot(work / "v2")


def test_a_small_bundle_is_packed_harder(work: Path, versions: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to BUNDLE_STRONG_MAX_BYTES a bundle is zstd level 19 (its manifest and tar headers still compress),
    above it level 3 (the blobs are compressed already); both unpack to the same delta."""
    from mistcore import delta as mdelta
    from mistcore.safetar import pack_tar_zst

    delta = _build(work, versions)
    strong, _ = bundle_delta(delta_dir=work / "delta", dst=work / "strong.tar.zst")
    monkeypatch.setattr(mdelta, "BUNDLE_STRONG_MAX_BYTES", 0)
    fast, _ = bundle_delta(delta_dir=work / "delta", dst=work / "fast.tar.zst")
    assert fast == pack_tar_zst(root=work / "delta", paths=None, dst=work / "l3.tar.zst", level=3)[0]
    assert strong == pack_tar_zst(root=work / "delta", paths=None, dst=work / "l19.tar.zst", level=19)[0] < fast
    for name in ("strong", "fast"):
        assert unpack_bundle(src=work / f"{name}.tar.zst", dest=work / name, max_total_bytes=10**8) == delta


def test_unpack_bundle_rejects_extras_and_missing_blobs(work: Path, versions: dict[str, Any]) -> None:
    from mistcore.safetar import pack_tar_zst

    _build(work, versions)
    (work / "delta" / "extra.txt").write_bytes(b"x")
    bundle_delta(delta_dir=work / "delta", dst=work / "d.tar.zst")
    with pytest.raises(ArchiveError, match="extra.txt"):
        unpack_bundle(src=work / "d.tar.zst", dest=work / "u1", max_total_bytes=10**8)
    assert not (work / "u1").exists()
    pack_tar_zst(root=work / "delta", paths=[MANIFEST_NAME], dst=work / "d2.tar.zst")
    with pytest.raises(ArchiveError, match="missing"):
        unpack_bundle(src=work / "d2.tar.zst", dest=work / "u2", max_total_bytes=10**8)
    with pytest.raises(ArchiveError, match="limit"):
        unpack_bundle(src=work / "d.tar.zst", dest=work / "u3", max_total_bytes=1000)


def test_windowed_engine_for_big_files(work: Path, versions: dict[str, Any]) -> None:
    delta = _build(work, versions, hdiff_max_bytes=100_000, window=64 << 10)
    ops = {op.path: op for op in delta.ops}
    assert ops["bin/game"].engine == "hdiff-window" and str(ops["bin/game"].blob).endswith(".hdiffw")
    clone_tree(work / "v1", work / "install")
    apply_delta_dir(delta_dir=work / "delta", install_root=work / "install", work_dir=work / "tmp")
    assert snapshot(work / "install") == snapshot(work / "v2")


def test_stage_refuses_a_modified_source_and_leaves_install_alone(work: Path, versions: dict[str, Any]) -> None:
    delta = _build(work, versions)
    clone_tree(work / "v1", work / "install")
    os.unlink(work / "install" / "bin/game")
    (work / "install" / "bin/game").write_bytes(b"locally modified")
    before = snapshot(work / "install")
    with pytest.raises(IntegrityError, match="bin/game"):
        apply_delta_dir(delta_dir=work / "delta", install_root=work / "install", work_dir=work / "tmp")
    assert snapshot(work / "install") == before
    with pytest.raises(IntegrityError):
        apply_delta_to_stage(
            delta=delta, delta_dir=work / "delta", source_root=work / "install", stage_dir=work / "stage"
        )


def test_stage_refuses_a_corrupt_blob(work: Path, versions: dict[str, Any]) -> None:
    delta = _build(work, versions)
    blob = work / "delta" / next(str(op.blob) for op in delta.ops if op.engine == "hdiff")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    clone_tree(work / "v1", work / "install")
    with pytest.raises(IntegrityError, match="SHA-256"):
        apply_delta_to_stage(
            delta=delta, delta_dir=work / "delta", source_root=work / "install", stage_dir=work / "stage"
        )


def test_stage_resumes_and_commit_is_idempotent(work: Path, versions: dict[str, Any]) -> None:
    delta = _build(work, versions)
    clone_tree(work / "v1", work / "install")
    progress: list[int] = []
    written = apply_delta_to_stage(
        delta=delta,
        delta_dir=work / "delta",
        source_root=work / "install",
        stage_dir=work / "stage",
        progress=progress.append,
    )
    assert sorted(written) == sorted(delta.written)
    assert sum(progress) == sum(op.target_size or 0 for op in delta.ops)
    # A second staging run keeps the verified files.
    assert (
        apply_delta_to_stage(
            delta=delta, delta_dir=work / "delta", source_root=work / "install", stage_dir=work / "stage"
        )
        == written
    )
    removed = delta.removed
    commit_stage(install_root=work / "install", stage_dir=work / "stage", written=written, removed=removed)
    commit_stage(install_root=work / "install", stage_dir=work / "stage", written=written, removed=removed)
    assert snapshot(work / "install") == snapshot(work / "v2")


@pytest.fixture(scope="module")
def delta_doc(
    tmp_path_factory: pytest.TempPathFactory, version_data: tuple[dict[str, Any], dict[str, Any]]
) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("delta_doc")
    write_tree(work / "v1", version_data[0])
    write_tree(work / "v2", version_data[1])
    v = {"m1": scan_directory(work / "v1", version="1.0"), "m2": scan_directory(work / "v2", version="1.1")}
    _build(work, v)
    doc: dict[str, Any] = json.loads((work / "delta" / MANIFEST_NAME).read_bytes())
    return doc


def _op_index(doc: dict[str, Any], kind: str) -> int:
    return next(i for i, op in enumerate(doc["ops"]) if op["op"] == kind)


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda d: d.update(format="mist-delta/0"), "format"),
        (lambda d: d.update(download_size=1), "download_size"),
        (lambda d: d["ops"][_op_index(d, "patch")].update(engine="bsdiff"), "engine"),
        (lambda d: d["ops"][_op_index(d, "patch")].update(engine="zstd"), "patch op"),
        (lambda d: d["ops"][_op_index(d, "add")].update(blob="../../etc/passwd"), r"\.\."),
        (lambda d: d["ops"][_op_index(d, "add")].update(blob="patches/x.zst"), "new_files"),
        (lambda d: d["ops"][_op_index(d, "copy")].update(blob="patches/1"), "no blob"),
        (lambda d: d["ops"][_op_index(d, "copy")].update(source_sha256="0" * 64), "content"),
        (lambda d: d["ops"][_op_index(d, "remove")].update(target_size=5), "no target_size"),
        (lambda d: d["ops"][0].update(op="rename"), "unknown op"),
        (lambda d: d["ops"][0].update(path="/abs"), "absolute"),
        (lambda d: d["ops"].append(dict(d["ops"][_op_index(d, "add")])), "duplicate"),
        (lambda d: d["ops"][0].pop("blob"), "missing"),
        (lambda d: d.update(from_version="a__b"), "version"),
    ],
)
def test_delta_manifest_rejects(delta_doc: dict[str, Any], mutation: Any, message: str) -> None:
    doc = json.loads(json.dumps(delta_doc))
    DeltaManifest.from_json(json.dumps(doc).encode())  # valid before the mutation
    mutation(doc)
    if "download_size" in doc and message != "download_size":
        blobs = {op["blob"]: op["blob_size"] for op in doc["ops"] if op.get("blob")}
        doc["download_size"] = sum(v for v in blobs.values() if isinstance(v, int))
    with pytest.raises(ManifestError, match=message):
        DeltaManifest.from_json(json.dumps(doc).encode())


def test_ops_are_typed() -> None:
    op = DeltaOp(op="remove", path="a", source_sha256="a" * 64, source_size=1)
    assert op.to_dict()["target_sha256"] is None


def test_a_guessed_basis_is_diffed_only_when_it_is_related(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """New names are matched to old files by name pattern and size. A renamed original is diffed against; an
    unrelated file that merely looks like one (another level of the same size) is not: the builder measures
    that first with a fast zstd patch (milliseconds) instead of spending every engine's time on it."""
    from mistcore.engines import zpatch
    from mistcore.tests.helpers import assert_delta_applies, counting_diffs

    rng = random.Random(77)
    level7, level2 = structured_bytes(rng, 400_000), structured_bytes(rng, 250_000)
    write_tree(work / "v1", {"data/level07.pak": level7, "data/level02.pak": level2})
    fresh = structured_bytes(random.Random(78), 390_000)
    write_tree(work / "v2", {"data/level09.pak": fresh, "data/level12.pak": mutate(rng, level2)})
    assert zpatch.basis_ratio(level7, fresh) > 0.97
    assert zpatch.basis_ratio(level2, mutate(rng, level2)) < 0.1
    diffed = counting_diffs(monkeypatch)
    delta = build_direct_delta(old_root=work / "v1", old_manifest=scan_directory(work / "v1", version="1"),
                               new_root=work / "v2", new_manifest=scan_directory(work / "v2", version="2"),
                               out_dir=work / "delta", level=19)
    ops = {op.path: op for op in delta.ops}
    assert (ops["data/level12.pak"].op, ops["data/level12.pak"].source_path) == ("patch", "data/level02.pak")
    assert (ops["data/level12.pak"].blob_size or 0) < 20_000
    assert (ops["data/level09.pak"].op, ops["data/level09.pak"].engine) == ("add", "zstd")
    assert diffed == ["data/level12.pak"]  # the unrelated guess was never diffed
    assert_delta_applies(work, "delta", "v1", "v2")


def _diff_one(work: Path, old: bytes, new: bytes, name: str) -> tuple[str, bytes]:
    from mistcore import delta as mdelta
    from mistcore.manifest import FileRecord

    (work / f"{name}.old").write_bytes(old)
    (work / f"{name}.new").write_bytes(new)
    engine, out = mdelta.diff_with_check(
        basis=FileRecord(path=name, size=len(old), sha256=sha256_bytes(old), executable=False),
        old_file=work / f"{name}.old",
        target=FileRecord(path=name, size=len(new), sha256=sha256_bytes(new), executable=False),
        new_file=work / f"{name}.new", out_stem=work / f"{name}.patch", hdiff_max_bytes=512 << 20,
        zpatch_max_bytes=4 << 20, window=64 << 20, level=19)
    return engine, out.read_bytes()


def test_a_large_diff_is_compressed_on_two_threads_to_the_same_patch(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One big changed file's compressions run at once; the patch chosen is byte for byte the serial one's."""
    from mistcore import delta as mdelta

    rng = random.Random(5)
    old = structured_bytes(rng, 2_000_000)
    new = old[:500_000] + structured_bytes(rng, 1_500_000) + old[500_000:]  # a diff over PARALLEL_MIN_BYTES
    seen: list[int] = []
    real = mdelta._run_all

    def spy(calls: Any, *, threads: int) -> Any:
        seen.append(threads)
        return real(calls, threads=threads)

    monkeypatch.setattr(mdelta, "_run_all", spy)
    parallel = _diff_one(work, old, new, "a")
    monkeypatch.setattr(mdelta, "PARALLEL_MIN_BYTES", 1 << 40)
    serial = _diff_one(work, old, new, "b")
    assert seen == [2, 1]
    assert parallel == serial and parallel[0] in ("hdiff", "zstd-patch")


def test_the_lzma_engines_are_tried_on_executables_and_small_files_only(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lzma-patch (LZMA passes over the new file and the diff) wins on native code; on a big data file it only
    costs. Where it runs on a big executable, zstd-patch does not; where this machine cannot encode it,
    hdiff-lzma takes its place."""
    from mistcore.engines import hdiffx, lzpatch, zpatch

    tried: list[tuple[str, int, bool]] = []
    real_lz, real_hx = lzpatch.smallest, hdiffx.encode

    def spy_lz(old: bytes, new: bytes, raw: bytes | None, **kw: Any) -> bytes | None:
        tried.append((lzpatch.NAME, len(new), kw["as_file"]))
        return real_lz(old, new, raw, **kw)

    def spy_hx(raw: bytes, **kw: Any) -> bytes:
        tried.append((hdiffx.NAME, kw["new_size"], False))
        return real_hx(raw, **kw)

    real_zp = zpatch.diff_bytes

    def spy_zp(old: bytes, new: bytes, **kw: Any) -> bytes:
        tried.append((zpatch.NAME, len(new), False))
        return real_zp(old, new, **kw)

    monkeypatch.setattr(lzpatch, "smallest", spy_lz)
    monkeypatch.setattr(hdiffx, "encode", spy_hx)
    monkeypatch.setattr(zpatch, "diff_bytes", spy_zp)
    rng = random.Random(6)
    big = structured_bytes(rng, 1_300_000)
    small = structured_bytes(rng, 200_000)
    elf = b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x03\x00\x3e\x00" + big[20:]  # an x86-64 shared object

    def nudged(data: bytes) -> bytes:  # a byte changed every ~1 KB: a diff that compresses well
        buf = bytearray(data)
        for at in range(100, len(buf), 1021):
            buf[at] ^= 0x5A
        return bytes(buf)

    _diff_one(work, big, nudged(big), "data")
    assert tried == [(zpatch.NAME, len(big), False)]
    tried.clear()
    _diff_one(work, small, nudged(small), "small")
    _diff_one(work, elf, nudged(elf), "lib")
    # the small file is compressed whole too (cheap); the library only as a diff (hdiff's patch is far under
    # 1/LZMA_FILE_SHARE of it, where the diff always won), and without zstd-patch (an executable over 256 KiB)
    assert tried == [(zpatch.NAME, 200_000, False), (lzpatch.NAME, 200_000, True), (lzpatch.NAME, len(elf), False)]
    tried.clear()
    monkeypatch.setattr(lzpatch, "_lib", False)  # as on a machine without a loadable liblzma
    assert not lzpatch.available()
    engine, _ = _diff_one(work, elf, nudged(elf), "lib2")
    assert tried == [(zpatch.NAME, len(elf), False), (lzpatch.NAME, len(elf), False), (hdiffx.NAME, len(elf), False)]
    assert engine != lzpatch.NAME
