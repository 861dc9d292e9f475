"""Generated game-like builds of any size, written streaming (memory bounded by one asset).

A build is a spec: each file is a list of assets (textures, audio, level records, code, text),
each asset's bytes a pure function of (seed, asset id, revision), so a file can be written again
at any time without keeping it in memory. Big ``.pak`` files end with a table of asset offsets,
like real pack formats, so an inserted asset shifts everything after it and changes the table.

``next_spec`` turns a build into its next version the way game updates do: localized edits inside
assets of a few packs (overwrites, inserted and deleted bytes, new assets in the middle and at the
end), a rebuilt executable, changed and version-renamed libraries, moved and duplicated files,
added and removed files, a new translation made from an existing one. ``change_fraction`` is the
share of the build's bytes in files that change or appear.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

KB, MB = 1 << 10, 1 << 20
_WORDS = (
    b"the of and to in is for on with as by at from this that player level enemy spawn health armor "
    b"weapon damage speed quest item gold door key boss music volume shader texture model light shadow "
    b"camera input jump run attack defend inventory save load menu option sound voice dialogue chapter "
    b"return local function end if then else for while true false nil self table string math vector"
).split()
_LANGS = ["en", "de", "fr", "es", "it", "ja", "ko", "ru", "zh-hans", "pl"]


@dataclass(frozen=True)
class Asset:
    """One piece of a file: ``kind`` is noise (already-compressed media), struct (records) or text."""

    id: int
    kind: str
    size: int
    rev: int = 0


@dataclass(frozen=True)
class FileSpec:
    assets: tuple[Asset, ...]
    table: bool = False  # a pack: asset table at the end
    executable: bool = False

    @property
    def approx_size(self) -> int:
        return sum(a.size for a in self.assets) + (16 * len(self.assets) + 16 if self.table else 0)


@dataclass
class Spec:
    """A whole build: path -> file, plus the seed its bytes come from and what the last update did."""

    seed: int
    files: dict[str, FileSpec]
    next_id: int = 0
    changes: dict[str, int] = field(default_factory=dict)

    @property
    def approx_size(self) -> int:
        return sum(f.approx_size for f in self.files.values())

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id


# --- Bytes ----------------------------------------------------------------------------------------


def _pool(seed: int, asset_id: int) -> list[bytes]:
    """The asset's own vocabulary of record types: its edits reuse it, as edited game data does."""
    rng = random.Random(f"{seed}:{asset_id}:pool")
    return [rng.randbytes(rng.randint(4, 28)) for _ in range(256)]


def _struct(rng: random.Random, n: int, pool: list[bytes]) -> bytes:
    """Records: a word from a small per-asset vocabulary, then a 4-byte field (compresses ~3-4x)."""
    k = n // 18 + 1
    fields = rng.randbytes(4 * k)
    return b"".join(w + fields[4 * i : 4 * i + 4] for i, w in enumerate(rng.choices(pool, k=k)))[:n]


def _text(rng: random.Random, n: int) -> bytes:
    words = rng.choices(_WORDS, k=n // 5 + 1)
    lines = [b" ".join(words[i : i + 11]) for i in range(0, len(words), 11)]
    return b"\n".join(lines)[:n].ljust(n, b"\n")


def asset_bytes(seed: int, asset: Asset) -> bytes:
    """The asset's bytes: revision 0 made from the seed, each later revision a localized edit of the one before."""
    pool = _pool(seed, asset.id) if asset.kind == "struct" else []

    def fresh(rng: random.Random, n: int) -> bytes:
        if asset.kind == "noise":  # already-compressed media: a changed part is all new bytes
            return rng.randbytes(n)
        if asset.kind == "text":
            return _text(rng, n)
        return _struct(rng, n, pool)

    data = fresh(random.Random(f"{seed}:{asset.id}:0"), asset.size)
    for rev in range(1, asset.rev + 1):
        rng = random.Random(f"{seed}:{asset.id}:{rev}")
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):  # overwritten fields
            n = rng.randint(16, 512)
            pos = rng.randrange(max(1, len(buf) - n))
            buf[pos : pos + n] = fresh(rng, n)
        if rng.random() < 0.5:  # inserted bytes shift the rest of the file
            pos = rng.randrange(len(buf) + 1)
            buf[pos:pos] = fresh(rng, rng.randint(64, 4096))
        if rng.random() < 0.3 and len(buf) > 8192:
            n = rng.randint(64, 4096)
            pos = rng.randrange(len(buf) - n)
            del buf[pos : pos + n]
        data = bytes(buf)
    return data


def _file_chunks(seed: int, spec: FileSpec) -> Iterator[bytes]:
    offset = 0
    table = []
    for asset in spec.assets:
        data = asset_bytes(seed, asset)
        table.append((asset.id, offset, len(data)))
        offset += len(data)
        yield data
    if spec.table:
        rows = b"".join(
            i.to_bytes(4, "little") + o.to_bytes(8, "little") + n.to_bytes(4, "little") for i, o, n in table
        )
        yield rows + b"MISTPAK1" + len(table).to_bytes(8, "little")


def write_file(seed: int, spec: FileSpec, dst: Path) -> int:
    """Write one file streaming; return its size."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with open(dst, "wb") as f:
        for chunk in _file_chunks(seed, spec):
            f.write(chunk)
            size += len(chunk)
    os.chmod(dst, 0o755 if spec.executable else 0o644)
    return size


def write_tree(spec: Spec, root: Path, *, previous: tuple[Spec, Path] | None = None) -> int:
    """Write the build into ``root`` (fresh); files identical to one of ``previous`` are copied, not generated."""
    root.mkdir(parents=True, exist_ok=False)
    reuse: dict[FileSpec, Path] = {}
    if previous is not None:
        old_spec, old_root = previous
        for path, fs in old_spec.files.items():
            reuse.setdefault(fs, old_root / path)
    written: dict[FileSpec, Path] = {}
    total = 0
    for path, fs in sorted(spec.files.items()):
        dst = root / path
        src = reuse.get(fs) or written.get(fs)
        if src is not None:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o755 if fs.executable else 0o644)
            total += dst.stat().st_size
        else:
            total += write_file(spec.seed, fs, dst)
            written[fs] = dst
    return total


# --- Specs ------------------------------------------------------------------------------------------


def _assets(
    spec: Spec, rng: random.Random, total: int, *, kinds: tuple[tuple[str, float], ...], lo: int, hi: int
) -> tuple[Asset, ...]:
    out, left = [], total
    names, weights = zip(*kinds, strict=True)
    while left > 0:
        size = min(left, int(lo * (hi / lo) ** rng.random()))  # log-uniform between lo and hi
        out.append(Asset(id=spec.new_id(), kind=rng.choices(names, weights)[0], size=max(size, 1)))
        left -= size
    return tuple(out)


def _split(rng: random.Random, total: int, lo: int, hi: int) -> list[int]:
    sizes, left = [], total
    while left > 0:
        size = min(left, int(lo * (hi / lo) ** rng.random()))
        sizes.append(max(size, 1))
        left -= size
    return sizes


def make_spec(total_bytes: int, *, seed: int = 1) -> Spec:
    """A build of about ``total_bytes``: big packs, media, levels, an executable, libraries, many small text files."""
    rng = random.Random(f"spec:{seed}")
    spec = Spec(seed=seed, files={})
    t = total_bytes
    pack_target = min(max(t // 14, 8 * MB), 150 * MB)
    n_packs = max(3, round(0.58 * t / pack_target))
    for i in range(n_packs):
        name = ["world", "textures", "audio", "models", "shaders", "ui", "cinematics", "terrain"][i % 8]
        spec.files[f"data/{name}{i:02d}.pak"] = FileSpec(
            _assets(spec, rng, int(0.58 * t / n_packs), kinds=(("noise", 0.6), ("struct", 0.4)), lo=16 * KB, hi=2 * MB),
            table=True,
        )
    for i, size in enumerate(_split(rng, int(0.18 * t), 512 * KB, max(min(16 * MB, t // 60), 1 * MB))):
        folder = "music" if i % 3 else "video"
        spec.files[f"media/{folder}/track{i:03d}.ogg"] = FileSpec((Asset(spec.new_id(), "noise", size),))
    for i, size in enumerate(_split(rng, int(0.10 * t), 16 * KB, 1 * MB)):
        spec.files[f"data/levels/act{i % 5}/map{i:04d}.lvl"] = FileSpec((Asset(spec.new_id(), "struct", size),))
    spec.files["bin/game.x86_64"] = FileSpec(
        _assets(spec, rng, int(0.03 * t), kinds=(("struct", 1.0),), lo=16 * KB, hi=256 * KB), executable=True
    )
    libs = ["engine", "physics", "audio", "render", "net", "script", "video", "ui"]
    for name in libs:
        version = f"{rng.randint(1, 4)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}"
        spec.files[f"bin/lib{name}-{version}.so"] = FileSpec(
            _assets(spec, rng, int(0.03 * t / len(libs)), kinds=(("struct", 1.0),), lo=16 * KB, hi=256 * KB),
            executable=True,
        )
    text_sizes = _split(rng, int(0.05 * t), 512, 64 * KB)
    for i, size in enumerate(text_sizes):
        if i % 4 == 0:
            path = f"locale/{_LANGS[i % 3]}/strings{i:05d}.txt"
        elif i % 4 == 1:
            path = f"scripts/mod{i % 17:02d}/script{i:05d}.lua"
        elif i % 4 == 2:
            path = f"config/section{i % 7}/setting{i:05d}.ini"
        else:
            path = f"data/dialogue/chapter{i % 11:02d}/line{i:05d}.json"
        spec.files[path] = FileSpec((Asset(spec.new_id(), "text", size),))
    spec.files["docs/Läsmig – ünïcødé.txt"] = FileSpec((Asset(spec.new_id(), "text", 3000),))
    spec.files["data/empty.cfg"] = FileSpec(())
    return spec


def _edit(
    spec: Spec, fs: FileSpec, rng: random.Random, *, share: float, inserts: int = 0, deletes: int = 0, appends: int = 0
) -> FileSpec:
    """A new revision of a file: ``share`` of its assets edited, some inserted, deleted and appended."""
    assets = list(fs.assets)
    if not assets:
        return fs
    for i in rng.sample(range(len(assets)), max(1, round(share * len(assets)))):
        assets[i] = replace(assets[i], rev=assets[i].rev + 1)
    for _ in range(deletes):
        if len(assets) > 2:
            del assets[rng.randrange(len(assets))]
    sizes = [a.size for a in assets]
    for _ in range(inserts):
        template = rng.choice(assets)
        assets.insert(rng.randrange(len(assets) + 1), Asset(spec.new_id(), template.kind, rng.choice(sizes)))
    for _ in range(appends):
        template = rng.choice(assets)
        assets.append(Asset(spec.new_id(), template.kind, rng.choice(sizes)))
    return replace(fs, assets=tuple(assets))


def next_spec(old: Spec, *, step: int, change_fraction: float = 0.1) -> Spec:
    """The next version of a build (see the module docstring for what an update changes)."""
    rng = random.Random(f"next:{old.seed}:{step}")
    spec = Spec(seed=old.seed, files=dict(old.files), next_id=old.next_id + 10_000_000 * step)
    files = spec.files
    changes = {"changed": 0, "added": 0, "removed": 0, "renamed": 0, "renamed_changed": 0, "duplicated": 0}
    changed_bytes = 0

    def change(path: str, fs: FileSpec) -> None:
        nonlocal changed_bytes
        files[path] = fs
        changed_bytes += fs.approx_size

    def of(prefix: str, suffix: str = "") -> list[str]:
        return sorted(p for p in files if p.startswith(prefix) and p.endswith(suffix))

    # The executable is rebuilt: code inserted (shifting the rest) and edits all over.
    exe = "bin/game.x86_64"
    change(exe, _edit(spec, files[exe], rng, share=0.05, inserts=2))
    changes["changed"] += 1
    libs = of("bin/lib")
    for path in rng.sample(libs, 2):
        change(path, _edit(spec, files[path], rng, share=0.1))
        changes["changed"] += 1
    # A library upgraded: new version number in its name, and new code.
    lib = rng.choice([p for p in libs if files[p] is old.files[p]])
    stem, _, _ = lib.rpartition("-")
    fs = files.pop(lib)
    change(
        f"{stem}-{rng.randint(5, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}.so",
        _edit(spec, fs, rng, share=0.2, inserts=1),
    )
    changes["renamed_changed"] += 1

    levels = of("data/levels/")
    edited = rng.sample(levels, max(1, len(levels) // 30))
    for path in edited:
        change(path, _edit(spec, files[path], rng, share=1.0))
        changes["changed"] += 1
    # A changed level is also shipped under a second name (the same bytes twice).
    files[f"data/levels/bonus/map{step:04d}-copy.lvl"] = files[edited[0]]
    changes["duplicated"] += 1
    spare = [p for p in levels if p not in edited]
    for path in rng.sample(spare, 3):
        del files[path]
        changes["removed"] += 1
    moved = rng.choice([p for p in spare if p in files])
    files[moved.replace("data/levels/", "data/levels/moved/")] = files.pop(moved)
    changes["renamed"] += 1
    for i in range(3):
        size = rng.choice([files[p].approx_size for p in levels if p in files])
        change(f"data/levels/dlc{step}/map{i:04d}.lvl", FileSpec((Asset(spec.new_id(), "struct", size),)))
        changes["added"] += 1

    texts = [p for p in files if p.endswith((".txt", ".lua", ".ini", ".json")) and not p.startswith("docs/")]
    for path in rng.sample(texts, max(1, len(texts) // 30)):
        change(path, _edit(spec, files[path], rng, share=1.0))
        changes["changed"] += 1
    for path in rng.sample(sorted(texts), 5):
        files.pop(path, None)
        changes["removed"] += 1
    # A new translation: every English string file, translated (edited), under a new language.
    for path in sorted(p for p in texts if p.startswith("locale/en/") and p in files):
        change(path.replace("locale/en/", f"locale/new{step}/"), _edit(spec, files[path], rng, share=1.0))
        changes["added"] += 1

    media = of("media/")
    gone = rng.choice(media)
    del files[gone]
    changes["removed"] += 1
    mover = rng.choice([p for p in media if p in files])
    files[mover.replace("media/", "media/remastered/")] = files.pop(mover)
    changes["renamed"] += 1
    change(f"media/music/new{step:03d}.ogg", FileSpec((Asset(spec.new_id(), "noise", old.files[gone].approx_size),)))
    changes["added"] += 1

    # Packs: localized edits, inserted and appended assets, until the changed share is reached.
    budget = change_fraction * old.approx_size
    packs = of("data/", ".pak")
    rng.shuffle(packs)
    for path in packs:
        if changed_bytes >= budget:
            break
        n = len(files[path].assets)
        change(
            path,
            _edit(spec, files[path], rng, share=0.03, inserts=max(1, n // 100), deletes=max(1, n // 200), appends=2),
        )
        changes["changed"] += 1
    spec.changes = changes
    return spec


def single_file_spec(size: int, *, seed: int, path: str = "data/huge.pak") -> Spec:
    """A build holding one big pack (for the 4 GB memory item)."""
    rng = random.Random(f"huge:{seed}")
    spec = Spec(seed=seed, files={})
    spec.files[path] = FileSpec(
        _assets(spec, rng, size, kinds=(("noise", 0.7), ("struct", 0.3)), lo=1 * MB, hi=4 * MB), table=True
    )
    return spec


def next_single_file_spec(old: Spec) -> Spec:
    """The big pack, changed in place: a few assets edited, two inserted, one deleted, two appended."""
    rng = random.Random(f"huge-next:{old.seed}")
    spec = Spec(seed=old.seed, files=dict(old.files), next_id=old.next_id + 1)
    ((path, fs),) = spec.files.items()
    share = 10 / max(len(fs.assets), 1)
    spec.files[path] = _edit(spec, fs, rng, share=share, inserts=2, deletes=1, appends=2)
    spec.changes = {"changed": 1}
    return spec
