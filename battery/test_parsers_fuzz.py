"""Every parser of untrusted bytes, fuzzed: only its documented error types, nothing written outside its folder.

Documented errors: mistcore's parsers raise `MistCoreError` subclasses (`ManifestError`,
`UnsafePathError`, `ArchiveError`, `SignatureError`); `extract_tar_zst` also raises
`FileExistsError` when its destination exists (not fuzzed here: the destination is always fresh).
Anything else escaping a parser (ValueError, KeyError, TypeError, tarfile.TarError, ...) fails
the test. What a parser accepts must satisfy the format's invariants and round-trip.
"""

from __future__ import annotations

import copy
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import zstandard
from hypothesis import example, given
from hypothesis import strategies as st

from battery import tally
from battery.strategies import (
    FUZZ,
    FUZZ_MEDIUM,
    any_paths,
    apply_byte_edits,
    build_tar,
    byte_edits,
    dumps,
    hostile_paths,
    json_values,
    listing,
    mutate_doc,
    safe_paths,
    sha256s,
    sizes,
    tar_members,
    version_names,
)
from mistcore.delta import MANIFEST_NAME as DELTA_MANIFEST_NAME
from mistcore.delta import DeltaManifest, unpack_bundle
from mistcore.errors import ManifestError, MistCoreError, SignatureError, UnsafePathError
from mistcore.indirect import SIGNATURES_JSON, IndirectManifest, read_signature_set, signature_set
from mistcore.manifest import MANIFEST_FORMAT, Manifest, validate_relpath, validate_version_name
from mistcore.safetar import extract_tar_zst

# --- Paths and version names ---------------------------------------------------------------------


def _assert_safe_relpath(path: str) -> None:
    """What an accepted path must be: relative, no traversal, inside any root it is joined to."""
    assert path and not path.startswith("/") and "\\" not in path and "\x00" not in path
    parts = PurePosixPath(path).parts
    assert ".." not in parts and "." not in path.split("/") and "" not in path.split("/")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        target = (root / path).resolve()
        assert target.is_relative_to(root.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x")  # creatable, and only inside root
        assert listing(Path(tmp)) - {"root"} == {f"root/{p}" for p in listing(root)}


@FUZZ
@given(path=st.one_of(hostile_paths, st.text(max_size=30), st.binary(max_size=20).map(lambda b: b.decode("latin-1"))))
@example(path="a/../../etc/passwd")
@example(path="\ud800/x")
def test_validate_relpath_accepts_only_safe_paths(path: str) -> None:
    tally.bad_inputs("mistcore.manifest.validate_relpath")
    try:
        accepted = validate_relpath(path)
    except UnsafePathError:
        return
    assert accepted == path
    _assert_safe_relpath(path)


@FUZZ
@given(name=st.one_of(version_names, st.integers(), st.none(), st.binary(max_size=10)))
def test_validate_version_name_accepts_only_url_and_path_safe_names(name: Any) -> None:
    tally.bad_inputs("mistcore.manifest.validate_version_name")
    try:
        accepted = validate_version_name(name)
    except ManifestError:
        return
    assert isinstance(accepted, str) and 1 <= len(accepted) <= 64
    assert "/" not in accepted and "__" not in accepted and accepted not in (".", "..")
    assert not accepted.startswith(".") and accepted.isascii() and accepted.isprintable()
    _assert_safe_relpath(accepted)


# --- Build manifests -----------------------------------------------------------------------------


def _check_manifest(m: Manifest) -> None:
    for record in m.files:
        validate_relpath(record.path)
        _assert_safe_relpath(record.path)
    assert [r.path for r in m.files] == sorted(r.path for r in m.files)
    assert Manifest.from_json(m.to_json()) == m


@st.composite
def manifest_docs(draw: Any) -> dict[str, Any]:
    files = [
        {"path": draw(st.one_of(safe_paths, safe_paths, any_paths)), "size": draw(sizes), "sha256": draw(sha256s),
         "executable": draw(st.one_of(st.booleans(), st.sampled_from([0, 1, "true", None])))}
        for _ in range(draw(st.integers(0, 5)))
    ]
    if draw(st.booleans()):
        files.sort(key=lambda f: str(f["path"]))
    total = sum(f["size"] for f in files if type(f["size"]) is int)
    return {"format": MANIFEST_FORMAT, "version": draw(version_names), "files": files,
            "total_size": draw(st.one_of(st.just(total), sizes))}


@FUZZ_MEDIUM
@given(doc=manifest_docs(), data=st.data())
def test_manifest_from_json_structured(doc: dict[str, Any], data: st.DataObject) -> None:
    tally.bad_inputs("mistcore.manifest.Manifest.from_json")
    doc = mutate_doc(data, doc, ["format", "version", "files", "total_size", "path", "size", "sha256", "executable"])
    try:
        manifest = Manifest.from_json(dumps(doc))
    except MistCoreError:
        return
    _check_manifest(manifest)


@FUZZ
@given(data=st.binary(max_size=600), edits=byte_edits)
@example(data=b'{"files":[],"format":"mist-manifest/1","total_size":0,"version":"1.0"}', edits=[("flip", 1, 0)])
@example(data=b"[" * 100_000, edits=[("flip", 0, 0)])
@example(data=b'{"a":1,"a":2}', edits=[("flip", 0, 0)])
@example(data=b'{"x": NaN}', edits=[("flip", 0, 0)])
@example(data=b"\xff\xfe{}", edits=[("flip", 0, 0)])
def test_manifest_from_json_bytes(data: bytes, edits: list[tuple[str, int, int]]) -> None:
    tally.bad_inputs("mistcore.manifest.Manifest.from_json", 2)
    for raw in (data, apply_byte_edits(data, edits)):
        try:
            manifest = Manifest.from_json(raw)
        except MistCoreError:
            continue
        _check_manifest(manifest)


HUGE_INT_DOCS = [
    b'{"format": ' + b"9" * 5000 + b"}",
    b'{"files":[],"format":"mist-manifest/1","total_size":' + b"1" * 4301 + b',"version":"1.0"}',
]


@pytest.mark.parametrize("raw", HUGE_INT_DOCS, ids=["format", "total_size"])
def test_huge_integer_literals_are_a_manifest_error(raw: bytes) -> None:
    tally.bad_inputs("mistcore.manifest.Manifest.from_json")
    for parse in (Manifest.from_json, DeltaManifest.from_json, IndirectManifest.from_json):
        with pytest.raises(ManifestError):
            parse(raw)


# --- Delta manifests -------------------------------------------------------------------------------


def _op(draw: Any, kind: str, i: int) -> dict[str, Any]:
    sha, size = draw(sha256s), draw(sizes)
    op: dict[str, Any] = {k: None for k in ("target_size", "target_sha256", "source_path", "source_sha256",
                                            "source_size", "engine", "blob", "blob_size", "blob_sha256")}
    op.update(op=kind, path=draw(st.one_of(safe_paths, any_paths)), executable=False)
    if kind != "remove":
        op.update(target_size=size, target_sha256=sha, executable=draw(st.booleans()))
    if kind in ("patch", "copy", "remove"):
        op.update(source_sha256=sha if kind == "copy" else draw(sha256s), source_size=size if kind == "copy" else draw(sizes))
        if kind != "remove":
            op["source_path"] = draw(st.one_of(safe_paths, any_paths))
    if kind in ("patch", "add"):
        engine = draw(st.sampled_from(["hdiff", "hdiff-lzma", "lzma-patch", "x86-split", "zstd-patch", "hdiff-window"])) if kind == "patch" else "zstd"
        prefix = "patches/" if kind == "patch" else "new_files/"
        op.update(engine=draw(st.one_of(st.just(engine), st.sampled_from(["rdiff", "zstd", "sh", None]))),
                  blob=draw(st.one_of(st.just(f"{prefix}{i:06d}.x"), any_paths)),
                  blob_size=draw(sizes), blob_sha256=draw(sha256s))
    return op


@st.composite
def delta_docs(draw: Any) -> dict[str, Any]:
    ops = [_op(draw, draw(st.sampled_from(["patch", "add", "copy", "remove"])), i) for i in range(draw(st.integers(0, 5)))]
    download = sum({o["blob"]: o["blob_size"] for o in ops if o["blob"] and type(o["blob_size"]) is int}.values())
    return {"format": "mist-delta/1", "from_version": draw(version_names), "to_version": draw(version_names),
            "from_content_hash": draw(sha256s), "to_content_hash": draw(sha256s),
            "created_by": draw(st.one_of(st.just("mistcore/0.1.0"), st.text(max_size=300))),
            "download_size": draw(st.one_of(st.just(download), sizes)), "ops": ops}


@FUZZ_MEDIUM
@given(doc=delta_docs(), data=st.data())
def test_delta_manifest_from_json_structured(doc: dict[str, Any], data: st.DataObject) -> None:
    tally.bad_inputs("mistcore.delta.DeltaManifest.from_json")
    doc = mutate_doc(data, doc, ["op", "path", "blob", "engine", "source_path", "ops", "download_size", "format"])
    try:
        delta = DeltaManifest.from_json(dumps(doc))
    except MistCoreError:
        return
    for op in delta.ops:
        for path in (op.path, op.source_path, op.blob):
            if path is not None:
                validate_relpath(path)
        if op.op == "patch":
            assert op.engine in ("hdiff", "hdiff-lzma", "lzma-patch", "x86-split", "zstd-patch", "hdiff-window") and op.blob and op.blob.startswith("patches/")
        if op.op == "add":
            assert op.engine == "zstd" and op.blob and op.blob.startswith("new_files/")
    assert set(delta.removed).isdisjoint(delta.written)
    assert DeltaManifest.from_json(delta.to_json()) == delta


@FUZZ
@given(data=st.binary(max_size=400), edits=byte_edits)
def test_delta_and_indirect_manifest_from_bytes(data: bytes, edits: list[tuple[str, int, int]]) -> None:
    tally.bad_inputs("mistcore.delta.DeltaManifest.from_json")
    tally.bad_inputs("mistcore.indirect.IndirectManifest.from_json")
    raw = apply_byte_edits(data, edits)
    for parse in (DeltaManifest.from_json, IndirectManifest.from_json):
        try:
            parse(raw)
        except MistCoreError:
            pass


@st.composite
def indirect_docs(draw: Any) -> dict[str, Any]:
    ops = []
    for i in range(draw(st.integers(0, 4))):
        engine = draw(st.sampled_from(["rdiff", "zstd", "hdiff", 7]))
        ops.append({
            "path": draw(st.one_of(safe_paths, any_paths)), "engine": engine,
            "blob": draw(st.one_of(st.just(f"{'deltas' if engine == 'rdiff' else 'new_files'}/{i:06d}.x"), any_paths)),
            "blob_size": draw(sizes), "blob_sha256": draw(sha256s),
            "basis_sha256": draw(st.one_of(sha256s, st.none())), "target_size": draw(sizes),
            "target_sha256": draw(sha256s), "executable": draw(st.booleans()),
        })
    return {"format": "mist-indirect/1", "to_version": draw(version_names), "to_content_hash": draw(sha256s),
            "created_by": "mistcore/0.1.0", "ops": ops}


@FUZZ_MEDIUM
@given(doc=indirect_docs(), data=st.data())
def test_indirect_manifest_from_json_structured(doc: dict[str, Any], data: st.DataObject) -> None:
    tally.bad_inputs("mistcore.indirect.IndirectManifest.from_json")
    doc = mutate_doc(data, doc, ["path", "engine", "blob", "basis_sha256", "ops", "to_version"])
    try:
        manifest = IndirectManifest.from_json(dumps(doc))
    except MistCoreError:
        return
    for op in manifest.ops:
        validate_relpath(op.path)
        assert op.blob.startswith("deltas/" if op.engine == "rdiff" else "new_files/")
        assert (op.basis_sha256 is None) == (op.engine == "zstd")
    assert IndirectManifest.from_json(manifest.to_json()) == manifest


# --- Tar extraction ------------------------------------------------------------------------------


def _extract(raw_tar_zst: bytes) -> None:
    """Extract into a fresh folder of a sandbox; afterwards nothing may exist outside that folder."""
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        src = sandbox / "in.tar.zst"
        src.write_bytes(raw_tar_zst)
        dest = sandbox / "out"
        try:
            names = extract_tar_zst(src=src, dest=dest, max_members=20, max_total_bytes=4096)
        except MistCoreError:
            assert listing(sandbox) == {"in.tar.zst"}, "a refused archive left files behind"
            return
        outside = {p for p in listing(sandbox) if not p.startswith("out/") and p not in ("out", "in.tar.zst")}
        assert not outside, f"files written outside the destination: {outside}"
        written = {p for p in listing(dest) if (dest / p).is_file() or (dest / p).is_symlink()}
        assert written == set(names)
        for name in names:
            validate_relpath(name)
            assert (dest / name).is_file() and not (dest / name).is_symlink()


@FUZZ_MEDIUM
@given(members=tar_members(), fmt=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
def test_extract_tar_zst_of_hostile_archives(members: list[dict[str, Any]], fmt: int) -> None:
    tally.bad_inputs("mistcore.safetar.extract_tar_zst")
    try:
        raw = build_tar(members, fmt=fmt)
    except (ValueError, UnicodeError, tarfile.TarError):
        return  # tarfile itself cannot write this (a ustar name too long): nothing to feed
    _extract(zstandard.ZstdCompressor(level=1).compress(raw))


@FUZZ_MEDIUM
@given(edits=byte_edits, compressed=st.booleans())
def test_extract_tar_zst_of_corrupted_archives(edits: list[tuple[str, int, int]], compressed: bool) -> None:
    tally.bad_inputs("mistcore.safetar.extract_tar_zst")
    raw = build_tar([{"name": f"dir/f{i}.bin", "type": tarfile.REGTYPE, "data": bytes([i]) * 300, "linkname": "",
                      "mode": 0o644, "pax": None} for i in range(3)])
    blob = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw)
    # Edit the compressed bytes (zstd must catch it), or the tar inside a valid frame (the tar reader must).
    _extract(apply_byte_edits(blob, edits) if compressed else zstandard.ZstdCompressor().compress(apply_byte_edits(raw, edits)))


# --- Signature uploads (the indirect-update request body) ----------------------------------------

ALLOWED = {"bin/game.exe", "data/a.pak"}


def _read_signatures(raw_tar: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        (sandbox / "up.tar").write_bytes(raw_tar)
        try:
            sigs = read_signature_set(src=sandbox / "up.tar", dest_dir=sandbox / "sigs", allowed_paths=set(ALLOWED),
                                      max_bytes=64 * 1024)
        except SignatureError:
            pass
        else:
            assert set(sigs) <= ALLOWED and set(sigs) == set(sigs.basis_info)
            for sig in sigs.values():
                assert sig.parent == sandbox / "sigs"
        outside = {p for p in listing(sandbox) if p not in ("up.tar", "sigs") and not p.startswith("sigs/")}
        assert not outside, f"files written outside the signature folder: {outside}"
        for name in listing(sandbox / "sigs") if (sandbox / "sigs").exists() else ():
            assert name == SIGNATURES_JSON or (name.endswith(".sig") and name[:-4].isdigit()), name


def _valid_signature_tar() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "game"
        (root / "bin").mkdir(parents=True)
        (root / "data").mkdir()
        (root / "bin" / "game.exe").write_bytes(b"\x7fELF" + bytes(range(256)) * 40)
        (root / "data" / "a.pak").write_bytes(b"pak" * 2000)
        signature_set(root=root, paths=sorted(ALLOWED), out_tar=Path(tmp) / "sigs.tar")
        return (Path(tmp) / "sigs.tar").read_bytes()


VALID_SIGNATURE_TAR = _valid_signature_tar()


def test_the_valid_signature_tar_is_accepted() -> None:
    # The base the corruption tests start from must itself be good, or they test nothing.
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "up.tar").write_bytes(VALID_SIGNATURE_TAR)
        sigs = read_signature_set(src=Path(tmp) / "up.tar", dest_dir=Path(tmp) / "sigs", allowed_paths=set(ALLOWED),
                                  max_bytes=64 * 1024)
        assert set(sigs) == ALLOWED


@FUZZ
@given(edits=byte_edits)
def test_read_signature_set_of_corrupted_uploads(edits: list[tuple[str, int, int]]) -> None:
    tally.bad_inputs("mistcore.indirect.read_signature_set")
    _read_signatures(apply_byte_edits(VALID_SIGNATURE_TAR, edits))


sig_names = st.one_of(
    st.sampled_from([SIGNATURES_JSON, "bin/game.exe.sig", "data/a.pak.sig", "other.sig", "./signatures.json"]),
    any_paths.map(lambda p: p + ".sig"),
    any_paths,
)


@FUZZ_MEDIUM
@given(members=tar_members(names=sig_names), index=st.one_of(json_values, st.just(None)), data=st.data())
def test_read_signature_set_of_hostile_uploads(members: list[dict[str, Any]], index: Any, data: st.DataObject) -> None:
    tally.bad_inputs("mistcore.indirect.read_signature_set")
    if index is None:  # a plausible signatures.json, then mutated
        index = {"format": "mist-sigs/1", "files": {p: {"size": 8000, "sha256": "0" * 64} for p in sorted(ALLOWED)}}
        index = mutate_doc(data, copy.deepcopy(index), ["format", "files", "size", "sha256"] + sorted(ALLOWED))
    members = [*members, {"name": SIGNATURES_JSON, "type": tarfile.REGTYPE, "data": dumps(index), "linkname": "",
                          "mode": 0o644, "pax": None}]
    try:
        raw = build_tar(members)
    except (ValueError, UnicodeError, tarfile.TarError):
        return
    _read_signatures(raw)


# --- Delta bundles (what a patcher unpacks) --------------------------------------------------------


@FUZZ_MEDIUM
@given(manifest=st.one_of(delta_docs().map(dumps), st.binary(max_size=100)), members=tar_members())
def test_unpack_bundle_of_hostile_bundles(manifest: bytes, members: list[dict[str, Any]]) -> None:
    tally.bad_inputs("mistcore.delta.unpack_bundle")
    members = [*members, {"name": DELTA_MANIFEST_NAME, "type": tarfile.REGTYPE, "data": manifest, "linkname": "",
                          "mode": 0o644, "pax": None}]
    try:
        raw = zstandard.ZstdCompressor().compress(build_tar(members))
    except (ValueError, UnicodeError, tarfile.TarError):
        return
    with tempfile.TemporaryDirectory() as tmp:
        sandbox = Path(tmp)
        (sandbox / "b.tar.zst").write_bytes(raw)
        try:
            unpack_bundle(src=sandbox / "b.tar.zst", dest=sandbox / "out", max_total_bytes=1 << 20)
        except MistCoreError:
            assert listing(sandbox) == {"b.tar.zst"}, "a refused bundle left files behind"
            return
        assert all(p == "b.tar.zst" or p == "out" or p.startswith("out/") for p in listing(sandbox))
