"""Test data: structured pseudo-random bytes, edits that shift data, tree builders and snapshots."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mistcore import delta as mdelta
from mistcore.errors import BasisMismatch, IntegrityError, PatchError
from mistcore.fsutil import clone_tree
from mistcore.manifest import scan_directory


def structured_bytes(rng: random.Random, size: int) -> bytes:
    """Bytes with the texture of game data: incompressible runs, repeated records and fills."""
    vocab = [rng.randbytes(rng.randint(8, 64)) for _ in range(48)]
    parts: list[bytes] = []
    total = 0
    while total < size:
        kind = rng.random()
        if kind < 0.4:
            chunk = rng.randbytes(rng.randint(256, 4096))
        elif kind < 0.85:
            chunk = b"".join(rng.choice(vocab) for _ in range(rng.randint(16, 96)))
        else:
            chunk = bytes([rng.randrange(256)]) * rng.randint(64, 2048)
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)[:size]


def mutate(rng: random.Random, data: bytes, *, inserts: int = 3, deletes: int = 1, edits: int = 8) -> bytes:
    """Insert new regions (shifting what follows), delete one, and overwrite a few small spots."""
    buf = bytearray(data)
    for _ in range(inserts):
        at = rng.randrange(len(buf) + 1)
        buf[at:at] = rng.randbytes(rng.randint(100, 3000))
    for _ in range(deletes):
        if len(buf) > 10_000:
            at = rng.randrange(len(buf) - 5000)
            del buf[at : at + rng.randint(500, 4000)]
    for _ in range(edits):
        at = rng.randrange(max(1, len(buf) - 16))
        buf[at : at + 8] = rng.randbytes(8)
    return bytes(buf)


def write_tree(root: Path, files: dict[str, bytes | tuple[bytes, bool]]) -> None:
    """Create files under ``root``; a (bytes, True) value makes the file executable."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, value in files.items():
        data, executable = value if isinstance(value, tuple) else (value, False)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o755 if executable else 0o644)


def snapshot(root: Path, *, ignore: tuple[str, ...] = ()) -> dict[str, tuple[str, bool] | str]:
    """Every file (sha256, executable) and folder ("dir") under root, by relative path."""
    out: dict[str, tuple[str, bool] | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        for d in dirnames:
            out[(rel_dir / d).as_posix()] = "dir"
        for name in filenames:
            rel = (rel_dir / name).as_posix()
            if rel in ignore:
                continue
            p = Path(dirpath) / name
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), bool(os.stat(p).st_mode & stat.S_IXUSR))
    return out


def write_big(path: Path, pieces: list[bytes | tuple[str, int]], *, seed: int) -> None:
    """Write a big file from literal pieces and ("random", n) runs without holding it in memory."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for piece in pieces:
            if isinstance(piece, tuple):
                left = piece[1]
                while left:
                    n = min(left, 1 << 20)
                    f.write(rng.randbytes(n))
                    left -= n
            else:
                f.write(piece)


ELF_X86_64 = b"\x7fELF\x02\x01" + bytes(12) + b"\x3e\x00"


def relinked_library(rng: random.Random, functions: int = 600) -> tuple[bytes, bytes]:
    """An x86-64 shared library before and after a small patch release: function bodies calling each other
    (``call rel32``) and a table of their absolute addresses. The new build inserts 64 bytes of code early on and
    edits one function, so every call crossing the insertion and every later address moves: a file that changed
    a little and moved a lot."""
    vocab = [rng.randbytes(rng.randint(2, 7)) for _ in range(200)]
    funcs = [
        (b"".join(rng.choice(vocab) for _ in range(rng.randint(10, 80))),
         [rng.randrange(functions) for _ in range(rng.randint(1, 6))])
        for _ in range(functions)
    ]

    def link(funcs: list[tuple[bytes, list[int]]], insert_at: int | None, insert: bytes) -> bytes:
        starts, pos = [], len(ELF_X86_64) + 48
        for i, (body, calls) in enumerate(funcs):
            pos += len(insert) if i == insert_at else 0
            starts.append(pos)
            pos += len(body) + 5 * len(calls)
        out = bytearray(ELF_X86_64 + bytes(48))
        for i, (body, calls) in enumerate(funcs):
            if i == insert_at:
                out += insert
            step, at = len(body) // (len(calls) + 1), 0
            start = len(out)
            for target in calls:
                out += body[at : at + step]
                at += step
                out += b"\xe8" + struct.pack("<i", starts[target] - (starts[i] + len(out) - start + 5))
            out += body[at:]
        out += b"".join(struct.pack("<Q", 0x400000 + s) for s in starts)
        return bytes(out)

    old = link(funcs, None, b"")
    edited = list(funcs)
    body, calls = funcs[functions // 2]
    edited[functions // 2] = (body[:20] + rng.randbytes(40) + body[20:], calls)
    return old, link(edited, functions // 6, rng.randbytes(64))


# Instructions of compiled x86-64 code: (bytes before the field, field kind), the field being "" (none), "d8" (a
# stack or struct offset), "i8", "i32" (immediates), "call" (a call to another function), "jcc" or "jmp" (a
# 32-bit jump inside the function), "rip" (a RIP-relative reference to the data section).
_X86_TEMPLATES: list[tuple[bytes, str]] = [
    (b"\x8b\x45", "d8"), (b"\x89\x7d", "d8"), (b"\x48\x8b\x45", "d8"), (b"\x48\x89\x45", "d8"),
    (b"\x8b\x44\x24", "d8"), (b"\x48\x8d\x05", "rip"), (b"\x48\x8b\x05", "rip"), (b"\x8b\x15", "rip"),
    (b"\xe8", "call"), (b"\xe8", "call"), (b"\x0f\x84", "jcc"), (b"\x0f\x85", "jcc"), (b"\xe9", "jmp"),
    (b"\x83\xf8", "i8"), (b"\x48\x83\xc4", "i8"), (b"\xb8", "i32"), (b"\x3d", "i32"), (b"\x89\xc7", ""),
    (b"\x48\x89\xc7", ""), (b"\x31\xc0", ""), (b"\x85\xc0", ""), (b"\x48\x89\xdf", ""), (b"\x53", ""),
    (b"\x5b", ""), (b"\x41\x54", ""), (b"\x0f\xb6\x45", "d8"), (b"\x8b\x94\x88", "d32"),
]
_X86_DATA = 64 << 10


def x86_library(functions: list[list[tuple[int, int]]], data: bytes) -> bytes:
    """An ELF x86-64 shared library (section headers for .text and .data) whose code is ``functions``, each a list
    of (template index, a value for its field), laid out and linked: calls reach their function's start, jumps
    stay inside their function, RIP-relative references point into ``data`` (at least 64 KiB)."""
    header = 64
    starts, pos = [], header
    for body in functions:
        starts.append(pos)
        pos += sum(len(_X86_TEMPLATES[t][0]) + {"": 0, "d8": 1, "i8": 1}.get(_X86_TEMPLATES[t][1], 4) for t, _ in body)
        pos += 2  # pop rbp; ret
    text_end = pos
    data_at = text_end + 16
    code = bytearray()
    for n, body in enumerate(functions):
        for t, value in body:
            prefix, kind = _X86_TEMPLATES[t]
            code += prefix
            end = header + len(code) + {"": 0, "d8": 1, "i8": 1}.get(kind, 4)
            if kind in ("d8", "i8"):
                code.append(value & 0xFF)
            elif kind in ("i32", "d32"):
                code += struct.pack("<I", value & 0xFFFFFFFF)
            elif kind == "call":
                code += struct.pack("<i", starts[value % len(starts)] - end)
            elif kind in ("jcc", "jmp"):
                code += struct.pack("<i", starts[n] + value % 64 - end)
            elif kind == "rip":
                code += struct.pack("<i", data_at + value % _X86_DATA - end)
        code += b"\x5d\xc3"
    shoff = data_at + len(data)

    def section(kind: int, flags: int, offset: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", 0, kind, flags, offset, offset, size, 0, 0, 16, 0)

    elf = bytearray(ELF_X86_64 + bytes(64 - len(ELF_X86_64)))
    struct.pack_into("<Q", elf, 0x28, shoff)
    struct.pack_into("<HHH", elf, 0x3A, 64, 3, 0)
    return bytes(elf + code + bytes(data_at - text_end) + data + bytes(64) + section(1, 6, header, text_end - header)
                 + section(1, 3, data_at, len(data)))


def x86_release_pair(rng: random.Random, functions: int = 400) -> tuple[bytes, bytes]:
    """An x86-64 library and its next upstream release: a third more functions (new code calling old and new
    functions), a tenth of the old ones edited, so every call and reference after the first change moves."""

    def body() -> list[tuple[int, int]]:
        return [(rng.randrange(len(_X86_TEMPLATES)), rng.randrange(1 << 30)) for _ in range(rng.randint(8, 60))]

    # Compiled code repeats itself: functions are drawn from a few hundred idioms (runs of instructions).
    idioms = [body()[:rng.randint(3, 8)] for _ in range(300)]

    def function() -> list[tuple[int, int]]:
        return [step for _ in range(rng.randint(2, 10)) for step in rng.choice(idioms)] + body()[:4]

    old = [function() for _ in range(functions)]
    new = [function() if rng.random() < 0.1 else list(f) for f in old]
    for _ in range(functions // 3):
        new.insert(rng.randrange(len(new) + 1), function())
    data = bytes(rng.randrange(4) for _ in range(_X86_DATA))
    return x86_library(old, data), x86_library(new, data)


def delta_between(work: Path, a: str, b: str, out: str | None = None, **kw: Any) -> mdelta.DeltaManifest:
    """The direct delta from the tree ``work/a`` to ``work/b``, built at ``work/<out>`` (default ``a-b``)."""
    return mdelta.build_direct_delta(
        old_root=work / a,
        old_manifest=scan_directory(work / a, version=a),
        new_root=work / b,
        new_manifest=scan_directory(work / b, version=b),
        out_dir=work / (out or f"{a}-{b}"),
        **kw,
    )


def counting_diffs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the target path of every file the delta builder diffs (the diffs still run)."""
    seen: list[str] = []
    real = mdelta.diff_with_check

    def counting(**kw: Any) -> Any:
        seen.append(kw["target"].path)
        return real(**kw)

    monkeypatch.setattr(mdelta, "diff_with_check", counting)
    return seen


def corrupting(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str) -> None:
    """From now on the encoder ``module.name`` returns its blob with one byte changed a third from its end: a blob
    that decodes to other bytes, or not at all."""
    real = getattr(module, name)

    def broken(*args: Any, **kw: Any) -> bytes:
        blob = real(*args, **kw)
        assert blob is not None
        bad = bytearray(blob)
        bad[-len(blob) // 3] ^= 0x10
        return bytes(bad)

    monkeypatch.setattr(module, name, broken)


def assert_delta_applies(work: Path, delta: str, start: str, target: str) -> None:
    """The delta folder ``work/<delta>`` turns the tree ``work/<start>`` into ``work/<target>`` both ways it is
    used: the server's chain replay (applied in place) and the patcher (bundled, unpacked, staged, committed)."""
    replay, install, unpacked = (work / f"{delta}-{what}" for what in ("replay", "install", "unpacked"))
    clone_tree(work / start, replay)
    mdelta.apply_delta_dir(delta_dir=work / delta, install_root=replay, work_dir=work / f"{delta}-replay-work")
    assert snapshot(replay) == snapshot(work / target)

    clone_tree(work / start, install)
    mdelta.bundle_delta(delta_dir=work / delta, dst=work / f"{delta}.tar.zst")
    manifest = mdelta.unpack_bundle(src=work / f"{delta}.tar.zst", dest=unpacked, max_total_bytes=10**9)
    stage = work / f"{delta}-stage"
    written = mdelta.apply_delta_to_stage(delta=manifest, delta_dir=unpacked, source_root=install, stage_dir=stage)
    mdelta.commit_stage(install_root=install, stage_dir=stage, written=written, removed=manifest.removed)
    assert snapshot(install) == snapshot(work / target)


# Engine tests: every engine module has the same apply_file (see mistcore.engines).


def sha_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def only_files(folder: Path, *names: str) -> None:
    """``folder`` holds exactly these names: nothing half-written was left behind."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)


def apply_engine(engine: ModuleType, work: Path, old: Path | None, patch: Path, data: bytes, **kw: Any) -> None:
    """``engine.apply_file`` of ``patch`` on ``old`` into ``work/out``, expecting exactly ``data``."""
    engine.apply_file(old=old, patch=patch, out=work / "out", expected_size=len(data), expected_sha256=sha_hex(data),
                      **kw)


def assert_bit_flips_refused(work: Path, patch: bytes, apply: Callable[[Path], object], *, trials: int) -> None:
    """``trials`` copies of ``patch`` with 1-4 bits flipped, each written to ``work/bad`` and given to ``apply``:
    every one is refused (IntegrityError or PatchError) and ``work/out`` never appears."""
    rng = random.Random(5)
    for trial in range(trials):
        bad = bytearray(patch)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(len(bad))] ^= 1 << rng.randrange(8)
        (work / "bad").write_bytes(bytes(bad))
        with pytest.raises((IntegrityError, PatchError)):
            apply(work / "bad")
        assert not (work / "out").exists(), trial


def assert_wrong_basis_refused(engine: ModuleType, work: Path, old: Path, new: Path, data: bytes, *,
                               short: bool = True, knows_basis: bool = False) -> None:
    """``engine``'s patch from ``old`` to ``new`` (written to ``work/p``) is refused on a wrong basis, and nothing is
    written: another file of the same size (BasisMismatch when the basis's SHA-256 is known; otherwise the
    result's SHA-256, or BasisMismatch from an engine that checks its basis itself: ``knows_basis``), a file a
    byte short (when ``short``: refused by the basis size the patch declares, before it is read, by
    ``apply_file`` and by ``apply_bytes`` where the engine has one), and no file at all."""
    engine.diff_file(old=old, new=new, out=work / "p")
    other = bytearray(old.read_bytes())
    other[1000:1010] = b"0123456789"  # same size, different bytes
    (work / "other").write_bytes(bytes(other))
    with pytest.raises(BasisMismatch, match="basis"):
        apply_engine(engine, work, work / "other", work / "p", data, old_sha256=sha_hex(old.read_bytes()))
    # an engine that checks its basis itself (``knows_basis``) says so; the others give wrong bytes, refused
    with pytest.raises(BasisMismatch if knows_basis else IntegrityError, match="basis" if knows_basis else "SHA-256"):
        apply_engine(engine, work, work / "other", work / "p", data)
    names = ["new", "old", "other", "p"]
    if short:
        (work / "short").write_bytes(old.read_bytes()[:-1])
        with pytest.raises(BasisMismatch, match="basis"):
            apply_engine(engine, work, work / "short", work / "p", data)
        names.append("short")
        if hasattr(engine, "apply_bytes"):  # the in-memory apply (the builder's decode check) checks it too
            with pytest.raises(IntegrityError, match="basis"):
                engine.apply_bytes(old.read_bytes()[:-1], (work / "p").read_bytes(), expected_size=len(data))
    with pytest.raises(PatchError, match="old file"):
        apply_engine(engine, work, None, work / "p", data)
    only_files(work, *names)


def assert_damaged_blobs_refused(engine: ModuleType, work: Path, old: Path, data: bytes, *, cuts: tuple[int, ...],
                                 trials: int = 60) -> None:
    """``engine``'s blob at ``work/p`` (from ``old`` to ``data``) refused whenever it is damaged, and ``work/out``
    never written: bits flipped (``trials`` copies), cut short at each of ``cuts`` bytes (negative: from the end),
    one byte too many, a patch SHA-256 that does not match, garbage, and a sound blob for another output size."""
    blob = (work / "p").read_bytes()
    name = engine.NAME
    assert_bit_flips_refused(work, blob, lambda bad: apply_engine(engine, work, old, bad, data), trials=trials)
    for cut in cuts:
        (work / "bad").write_bytes(blob[:cut])
        with pytest.raises(PatchError, match=f"truncated|corrupt|not an? {name} blob"):
            apply_engine(engine, work, old, work / "bad", data)
    (work / "bad").write_bytes(blob + b"\0")
    with pytest.raises(PatchError, match="trailing"):
        apply_engine(engine, work, old, work / "bad", data)
    with pytest.raises(IntegrityError, match="corrupt"):
        apply_engine(engine, work, old, work / "p", data, patch_sha256=sha_hex(b"another patch"))
    (work / "bad").write_bytes(b"garbage that is no blob")
    with pytest.raises(PatchError, match=name):
        apply_engine(engine, work, old, work / "bad", data)
    with pytest.raises(PatchError, match="declares"):
        apply_engine(engine, work, old, work / "p", data + b"!")
    assert not (work / "out").exists()
