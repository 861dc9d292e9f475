"""Generated game-like builds for tests and benchmarks: nested folders, binary packs with
localized edits and shifted data, an executable, empty files, unicode names; then versions that
change, add, remove, rename and duplicate files the way real game updates do."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path


def _binary(rng: random.Random, size: int) -> bytes:
    """Compressible-but-not-trivial bytes: repeated records with random fields, like game data."""
    out = bytearray()
    words = [rng.randbytes(rng.randint(4, 24)) for _ in range(64)]
    while len(out) < size:
        out += rng.choice(words)
        out += rng.randbytes(rng.randint(1, 8))
    return bytes(out[:size])


def make_build(root: Path, *, seed: int = 1, scale: int = 1, big_file_bytes: int = 0) -> Path:
    """Write version 1 of a generated game into `root` (created); sizes grow with `scale`."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir()
    exe = root / "bin" / "game.x86_64"
    exe.write_bytes(b"\x7fELF" + _binary(rng, 200_000 * scale))
    os.chmod(exe, 0o755)
    (root / "bin" / "libengine.so.1").write_bytes(_binary(rng, 150_000 * scale))
    data = root / "data" / "levels"
    data.mkdir(parents=True)
    for i in range(6):
        (data / f"level{i:02}.pak").write_bytes(_binary(rng, 40_000 * scale + i * 1000))
    (root / "data" / "textures.pak").write_bytes(_binary(rng, 300_000 * scale))
    (root / "data" / "empty.cfg").write_bytes(b"")
    (root / "docs").mkdir()
    (root / "docs" / "Läsmig – ünïcødé.txt").write_text("Välkommen till spelet!\n" * 20)
    (root / "config.ini").write_text("[game]\nversion=1\nfullscreen=true\n")
    if big_file_bytes:
        (root / "data" / "huge.bin").write_bytes(_binary(rng, big_file_bytes))
    return root


def next_version(src: Path, dst: Path, *, seed: int, step: int) -> Path:
    """Copy `src` to `dst` and change it like an update: edits, shifts, renames, adds, removes."""
    rng = random.Random(seed * 1000 + step)
    shutil.copytree(src, dst)
    exe = dst / "bin" / "game.x86_64"
    blob = bytearray(exe.read_bytes())
    at = rng.randrange(1000, len(blob) - 1000)
    blob[at:at] = rng.randbytes(333)  # inserted code shifts everything after it
    for _ in range(5):
        pos = rng.randrange(len(blob) - 64)
        blob[pos : pos + 16] = rng.randbytes(16)
    exe.write_bytes(bytes(blob))
    os.chmod(exe, 0o755)
    tex = dst / "data" / "textures.pak"
    t = bytearray(tex.read_bytes())
    t[5000:5100] = rng.randbytes(100)
    tex.write_bytes(bytes(t))
    levels = sorted((dst / "data" / "levels").iterdir())
    levels[0].unlink()  # a removed file
    levels[1].rename(levels[1].with_name(f"renamed{step}.pak"))  # a moved file: zero bytes on the wire
    (dst / "data" / "levels" / f"new{step:02}.pak").write_bytes(_binary(rng, 30_000))  # added
    (dst / "data" / f"copy-of-tex-{step}.pak").write_bytes(tex.read_bytes())  # duplicate content
    (dst / "config.ini").write_text(f"[game]\nversion={step + 1}\nfullscreen=true\n")
    huge = dst / "data" / "huge.bin"
    if huge.exists():
        h = bytearray(huge.read_bytes())
        for _ in range(3):
            pos = rng.randrange(len(h) - 4096)
            h[pos : pos + 64] = rng.randbytes(64)
        h[1000:1000] = rng.randbytes(500)
        huge.write_bytes(bytes(h))
    return dst


def tree_bytes(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file's content and executable bit, for byte-for-byte comparisons."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith(".mist-"):
            out[path.relative_to(root).as_posix()] = (path.read_bytes(), bool(path.stat().st_mode & 0o100))
    return out
