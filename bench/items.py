"""The nine benchmark items. Each appends rows (ratios measured side by side) to the context.

Data sets (built on the spot, cached under the work folder between runs):

- ``gen-100M`` / ``gen-2G``: generated game builds (``bench.gamegen``) and their next version
  with 10% of the bytes in changed or added files; ``gen-1G`` for the throughput item;
- ``pygame-ce``: two consecutive real releases (``bench/get_release_pair.sh``, from PyPI);
- a 4 GiB single pack and its next version for the memory item, deleted right after.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import hdiffpatch
import requests
import zstandard

from bench import gamegen, objects, switch, tools
from bench.proc import Measured, ProcError, run_measured
from bench.report import Row, mb, rate
from bench.server import ADMIN, FRIEND, REPO, Stack, postgres_problem
from mistcore import delta as mdelta
from mistcore import indirect as mindirect
from mistcore.fsutil import HashingWriter
from mistcore.manifest import Manifest, scan_directory
from mistcore.safetar import pack_tar_zst

# Bump when bench.gamegen changes what it writes, so cached data sets are rebuilt.
GEN_VERSION = 2
# What the server uses for full archives (downloads.services.ARCHIVE_LEVEL / ARCHIVE_THREADS).
ARCHIVE_LEVEL = 10
ARCHIVE_THREADS = 2
GIB = 1 << 30
SIZES = {"gen-100M": 100_000_000, "gen-1G": 1_000_000_000, "gen-2G": 2_000_000_000}
SEEDS = {"gen-100M": 1, "gen-1G": 3, "gen-2G": 2}


@dataclass
class Pair:
    """An old build and its next version."""

    name: str
    old: Path
    new: Path
    note: str = ""
    _manifests: tuple[Manifest, Manifest] | None = None

    def manifests(self) -> tuple[Manifest, Manifest]:
        if self._manifests is None:
            self._manifests = (scan_directory(self.old, version="old"), scan_directory(self.new, version="new"))
        return self._manifests

    def changed_paths(self) -> tuple[list[str], list[str]]:
        """(paths in both versions whose content differs, paths only in the new version)."""
        old, new = self.manifests()
        o, n = old.by_path(), new.by_path()
        changed = sorted(p for p, r in n.items() if p in o and o[p].sha256 != r.sha256)
        added = sorted(p for p in n if p not in o)
        return changed, added


@dataclass
class DeltaRun:
    dir: Path
    manifest: mdelta.DeltaManifest
    bundle_size: int
    build_seconds: float
    max_rss: int


@dataclass
class Context:
    """Options, results and caches shared by the items."""

    work: Path
    corpus: Path
    quick: bool
    keep_data: bool
    say: Callable[[str], None]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: int = 0
    _pairs: dict[str, Pair | None] = field(default_factory=dict)
    _deltas: dict[str, DeltaRun] = field(default_factory=dict)

    def row(self, row: Row) -> None:
        self.rows.append(row)
        self.say(
            f"  -> {row.item} {row.figure} [{row.data}]: {row.ratio if row.ratio is None else round(row.ratio, 4)} {row.verdict} {row.detail}"
        )

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
        self.say(f"  note: {text}")

    # --- data sets ---------------------------------------------------------------------------------

    def generated(self, name: str) -> Pair:
        if name not in self._pairs:
            self._pairs[name] = _generated_pair(self, name)
        pair = self._pairs[name]
        assert pair is not None
        return pair

    def pygame(self) -> Pair | None:
        if "pygame-ce" not in self._pairs:
            self._pairs["pygame-ce"] = _pygame_pair(self)
        return self._pairs["pygame-ce"]

    def main_pairs(self) -> list[Pair]:
        """The data sets of items 1, 2, 3 and 5."""
        names = ["gen-100M"] if self.quick else ["gen-100M", "gen-2G"]
        pairs: list[Pair] = [self.generated(n) for n in names]
        real = self.pygame()
        if real is not None:
            pairs.append(real)
        return pairs

    def drop(self, name: str) -> None:
        """Forget and (unless --keep-data) delete a big generated data set once no item needs it."""
        self._pairs.pop(name, None)
        run = self._deltas.pop(name, None)
        if run is not None:
            shutil.rmtree(run.dir, ignore_errors=True)
            run.dir.with_suffix(".tar.zst").unlink(missing_ok=True)
        if not self.keep_data and SIZES.get(name, 0) > 200_000_000:
            shutil.rmtree(self.work / "data" / name, ignore_errors=True)

    # --- the direct delta, built once per data set -----------------------------------------------------

    def delta(self, pair: Pair) -> DeltaRun:
        if pair.name not in self._deltas:
            out = self.work / "deltas" / pair.name
            shutil.rmtree(out, ignore_errors=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            self.say(f"  building the direct delta of {pair.name} (python -m bench.probe delta)")
            m = probe(self, "delta", pair.old, pair.new, out, log_name=f"delta-{pair.name}")
            info = last_json(m)
            manifest = mdelta.DeltaManifest.from_json((out / mdelta.MANIFEST_NAME).read_bytes())
            bundle = out.with_suffix(".tar.zst")
            size, _ = mdelta.bundle_delta(delta_dir=out, dst=bundle)
            self._deltas[pair.name] = DeltaRun(out, manifest, size, info["build_seconds"], m.max_rss)
        return self._deltas[pair.name]


def probe(ctx: Context, *args: Any, log_name: str, timeout: float = 4 * 3600) -> Measured:
    """Run ``python -m bench.probe <args>`` measured (wall time, peak RSS)."""
    logs = ctx.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bench.probe", *[str(a) for a in args]]
    return run_measured(cmd, cwd=REPO, timeout=timeout, log=logs / f"{log_name}.log").check(f"bench.probe {args[0]}")


def last_json(m: Measured) -> dict[str, Any]:
    for line in reversed(m.output.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise ProcError(f"no JSON result in:\n{m.output[-2000:]}")


def _generated_pair(ctx: Context, name: str) -> Pair:
    base = ctx.work / "data" / name
    stamp = base / "stamp.json"
    want = {"gen": GEN_VERSION, "bytes": SIZES[name], "seed": SEEDS[name], "change_fraction": 0.1}
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        if saved.get("params") == want:
            ctx.say(f"  reusing {name} from {base}")
            return Pair(name, base / "old", base / "new", note=saved["note"])
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    started = time.perf_counter()
    ctx.say(f"  generating {name} ({mb(SIZES[name])} game and its next version) in {base}")
    spec = gamegen.make_spec(SIZES[name], seed=SEEDS[name])
    gamegen.write_tree(spec, base / "old")
    spec2 = gamegen.next_spec(spec, step=1, change_fraction=0.1)
    gamegen.write_tree(spec2, base / "new", previous=(spec, base / "old"))
    changes = ", ".join(f"{n} {k}" for k, n in spec2.changes.items())
    note = f"{len(spec.files)} files -> {len(spec2.files)} files; update: {changes}"
    stamp.write_text(json.dumps({"params": want, "note": note}))
    ctx.say(f"  {name}: {note} ({time.perf_counter() - started:.0f}s)")
    return Pair(name, base / "old", base / "new", note=note)


def _pygame_pair(ctx: Context) -> Pair | None:
    root = ctx.corpus / "pygame-ce"
    if not all((root / side).is_dir() for side in ("old", "new", "older")):
        ctx.say(f"  downloading the pygame-ce release pair into {ctx.corpus} (bench/get_release_pair.sh)")
        proc = subprocess.run(
            ["bash", str(REPO / "bench" / "get_release_pair.sh"), str(ctx.corpus)],
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            ctx.note(
                f"pygame-ce pair unavailable (download failed: {proc.stderr.strip()[-300:]}); real-data rows skipped"
            )
            return None
    return Pair("pygame-ce", root / "old", root / "new", note="pygame-ce 2.5.6 -> 2.5.7 wheels, unzipped")


# --- 1. direct update vs full archive ------------------------------------------------------------------


def item1(ctx: Context) -> None:
    for pair in ctx.main_pairs():
        run = ctx.delta(pair)
        _, new = pair.manifests()
        with tempfile.TemporaryDirectory(dir=ctx.work, prefix="archive-") as tmp:
            started = time.perf_counter()
            full, _ = pack_tar_zst(
                root=pair.new, paths=None, dst=Path(tmp) / "full.tar.zst", level=ARCHIVE_LEVEL, threads=ARCHIVE_THREADS
            )
            seconds = time.perf_counter() - started
        counts: dict[str, int] = {}
        for op in run.manifest.ops:
            counts[op.op] = counts.get(op.op, 0) + 1
        ops = " ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        ctx.row(
            Row(
                "1",
                "direct update / full .tar.zst",
                pair.name,
                run.bundle_size / full,
                detail=f"update {mb(run.bundle_size)} vs archive {mb(full)} (zstd {ARCHIVE_LEVEL}, {seconds:.0f}s) "
                f"of {mb(new.total_size)}; ops: {ops}",
            )
        )


# --- 2. Mist patches vs the best of xdelta3 / bsdiff / zstd --patch-from ----------------------------------


def _what_if(pair: Pair, run: DeltaRun, paths: list[str], sources: dict[str, str]) -> int:
    """Mist's bytes for these files if its hdiff patches were LZMA2 and a zstd patch-from engine competed."""
    ops = {op.path: op for op in run.manifest.ops}
    total = 0
    for path in paths:
        op = ops[path]
        best = op.blob_size or 0
        if op.op == "patch" and op.engine == "hdiff" and op.blob:
            blob = (run.dir / op.blob).read_bytes()
            for config in (hdiffpatch.Lzma2Config(level=9, window=23), hdiffpatch.LzmaConfig(level=9, window=23)):
                best = min(best, len(hdiffpatch.recompress(blob, config)))
        old_file, new_file = pair.old / sources[path], pair.new / path
        if op.op != "copy" and max(old_file.stat().st_size, new_file.stat().st_size) <= 64 << 20:
            old_bytes, new_bytes = old_file.read_bytes(), new_file.read_bytes()
            params = zstandard.ZstdCompressionParameters.from_level(
                19,
                source_size=len(new_bytes),
                dict_size=len(old_bytes),
                window_log=max(20, min(31, (len(old_bytes) + len(new_bytes)).bit_length())),
                enable_ldm=True,
            )
            dictionary = zstandard.ZstdCompressionDict(old_bytes, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
            best = min(
                best, len(zstandard.ZstdCompressor(dict_data=dictionary, compression_params=params).compress(new_bytes))
            )
        total += best
    return total


def _compare_tools(
    ctx: Context, pair: Pair, run: DeltaRun, paths: list[str], sources: dict[str, str], *, figure: str, target: bool
) -> None:
    ops = {op.path: op for op in run.manifest.ops}
    mist = sum(ops[p].blob_size or 0 for p in paths)
    engines: dict[str, int] = {}
    for p in paths:
        engines[ops[p].engine or ops[p].op] = engines.get(ops[p].engine or ops[p].op, 0) + 1
    pairs = [(p, pair.old / sources[p], pair.new / p) for p in paths]
    started = time.perf_counter()
    totals = tools.per_file_totals(pairs, scratch=ctx.work)
    ctx.say(f"  tools on {len(pairs)} files of {pair.name}: {time.perf_counter() - started:.0f}s")
    complete = {n: t for n, t in totals.items() if t.complete}
    for n, t in totals.items():
        if not t.complete:
            ctx.note(
                f"{n} could not do {len(t.failed)} of {len(pairs)} files of {pair.name} ({t.failed[0]}); left out of 'best tool'"
            )
    listing = ", ".join(
        f"{n.split()[0]} {mb(t.total)}" + ("" if t.complete else " (incomplete)") for n, t in totals.items()
    )
    what = " ".join(f"{n} {k}" for k, n in sorted(engines.items()))
    if not complete:
        ctx.row(
            Row(
                "2",
                figure,
                pair.name,
                None,
                "<= 0.9" if target else "",
                None,
                f"no tool available or complete ({tools.missing_message(['xdelta3', 'bsdiff', 'zstd'])})",
            )
        )
        return
    best_name, best = min(complete.items(), key=lambda kv: kv[1].total)
    ratio = mist / max(best.total, 1)
    ctx.row(
        Row(
            "2",
            figure,
            pair.name,
            ratio,
            "<= 0.9" if target else "",
            (ratio <= 0.9) if target else None,
            f"Mist {mb(mist)} ({what}) vs best {best_name.split()[0]} {mb(best.total)}; {listing}; {len(paths)} files",
        )
    )
    if target:
        wi = _what_if(pair, run, paths, sources)
        ctx.row(
            Row(
                "2",
                "  what-if: LZMA2 patches + zstd patch-from engine",
                pair.name,
                wi / max(best.total, 1),
                "<= 0.9",
                wi / max(best.total, 1) <= 0.9,
                f"Mist {mb(wi)} if each file took the smallest of its hdiff patch recompressed LZMA/LZMA2 and a zstd "
                "raw-dictionary (patch-from) blob (measured here, not what Mist ships)",
            )
        )


def item2(ctx: Context) -> None:
    have = [n for n in ("xdelta3", "bsdiff", "zstd") if not tools.missing(n)]
    if len(have) < 3:
        ctx.note(
            f"item 2 runs without {tools.missing_message([n for n in ('xdelta3', 'bsdiff', 'zstd') if n not in have])}"
        )
    for pair in ctx.main_pairs():
        run = ctx.delta(pair)
        changed, added = pair.changed_paths()
        ctx.say(f"  item 2 on {pair.name}: {len(changed)} changed files")
        _compare_tools(
            ctx,
            pair,
            run,
            changed,
            {p: p for p in changed},
            figure="Mist patches / best tool (same-path changed files)",
            target=True,
        )
        # Renamed-and-changed files: the tools get the same basis Mist's similar-file matching chose.
        ops = {op.path: op for op in run.manifest.ops}
        renamed = [p for p in added if ops[p].op == "patch" and ops[p].source_path]
        whole = [p for p in added if ops[p].op == "add"]
        if renamed:
            _compare_tools(
                ctx,
                pair,
                run,
                renamed,
                {p: str(ops[p].source_path) for p in renamed},
                figure="  renamed+changed files (Mist's chosen basis)",
                target=False,
            )
        if added:
            ctx.note(
                f"{pair.name}: of {len(added)} added paths, {len(renamed)} were patched from a similar old file, "
                f"{len(whole)} sent whole ({mb(sum(ops[p].blob_size or 0 for p in whole))}), the rest copied"
            )


# --- 3. indirect update vs the changed files compressed -------------------------------------------------------


def _zstd19_sizes(root: Path, paths: list[str]) -> int:
    def one(path: str) -> int:
        cctx = zstandard.ZstdCompressor(level=19)
        counter = HashingWriter(None)  # counts the compressed bytes, stores nothing
        with open(root / path, "rb") as f, cctx.stream_writer(cast(IO[bytes], counter), closefd=False) as w:
            shutil.copyfileobj(f, w, 1 << 20)
        return counter.count

    with ThreadPoolExecutor(2) as pool:
        return sum(pool.map(one, paths))


def item3(ctx: Context) -> None:
    for pair in ctx.main_pairs():
        changed, added = pair.changed_paths()
        paths = changed + added
        _, new_manifest = pair.manifests()
        with tempfile.TemporaryDirectory(dir=ctx.work, prefix="indirect-") as tmp_name:
            tmp = Path(tmp_name)
            started = time.perf_counter()
            sig_size, _ = mindirect.signature_set(root=pair.old, paths=paths, out_tar=tmp / "sigs.tar")
            sig_seconds = time.perf_counter() - started
            sigs = mindirect.read_signature_set(
                src=tmp / "sigs.tar", dest_dir=tmp / "sigs", allowed_paths=set(paths), max_bytes=512 << 20
            )
            started = time.perf_counter()
            mindirect.build_indirect_bundle(
                signatures=sigs,
                basis_info=sigs.basis_info,
                target_root=pair.new,
                target_manifest=new_manifest,
                paths=paths,
                out=tmp / "bundle.tar.zst",
            )
            bundle_seconds = time.perf_counter() - started
            bundle = (tmp / "bundle.tar.zst").stat().st_size
        compressed = _zstd19_sizes(pair.new, paths)
        ratio = (sig_size + bundle) / max(compressed, 1)
        ctx.row(
            Row(
                "3",
                "indirect (signatures up + bundle down) / changed files zstd -19",
                pair.name,
                ratio,
                detail=f"signatures {mb(sig_size)} ({sig_seconds:.1f}s) + bundle {mb(bundle)} ({bundle_seconds:.0f}s) "
                f"vs {mb(compressed)} for {len(paths)} changed/added files",
            )
        )


# --- 4. delta generation throughput vs zstd -19 of the changed files -------------------------------------------


def item4(ctx: Context) -> None:
    if tools.missing("zstd"):
        ctx.row(
            Row(
                "4",
                "delta generation time / zstd -19 of changed files",
                "-",
                None,
                detail=tools.missing_message(["zstd"]),
            )
        )
        return
    name = "gen-100M" if ctx.quick else "gen-1G"
    if ctx.quick:
        ctx.note("--quick: item 4 runs on the 100 MB build instead of the 1 GB one")
    pair = ctx.generated(name)
    changed, added = pair.changed_paths()
    _, new = pair.manifests()
    files = [pair.new / p for p in changed + added]
    changed_bytes = sum(f.stat().st_size for f in files)
    # Side by side: zstd, then Mist, then zstd again (the mean brackets Mist's run); when an earlier
    # item just built this delta, one zstd run right after it.
    built = name in ctx._deltas
    zbytes, zstd_seconds = tools.zstd_cli_compress(files, scratch=ctx.work)
    run = ctx.delta(pair)
    if not built:
        zbytes, z2 = tools.zstd_cli_compress(files, scratch=ctx.work)
        zstd_seconds = (zstd_seconds + z2) / 2
    ratio = run.build_seconds / zstd_seconds
    ctx.row(
        Row(
            "4",
            "delta generation time / zstd -19 of changed files",
            name,
            ratio,
            detail=f"Mist {rate(new.total_size, run.build_seconds)} of build ({run.build_seconds:.0f}s, peak RSS {mb(run.max_rss)}); "
            f"zstd -19 (2 at a time) {zstd_seconds:.0f}s for {mb(changed_bytes)} changed/added -> {mb(zbytes)}",
        )
    )
    if not ctx.quick:
        ctx.drop(name)


# --- 5. applying a direct delta vs copying the game folder -----------------------------------------------


def item5(ctx: Context) -> None:
    for pair in ctx.main_pairs():
        run = ctx.delta(pair)
        _, new = pair.manifests()
        rounds = 2 if new.total_size < 500_000_000 else 1
        times: dict[str, list[float]] = {"copy": [], "apply": [], "apply-nofsync": []}
        written = sum(1 for op in run.manifest.ops if op.op != "remove")
        with tempfile.TemporaryDirectory(dir=ctx.work, prefix="apply-") as tmp_name:
            tmp = Path(tmp_name)
            for _ in range(rounds):
                times["copy"].append(
                    last_json(probe(ctx, "copy", pair.old, tmp / "copy", log_name=f"copy-{pair.name}"))["seconds"]
                )
                shutil.rmtree(tmp / "copy")
                for kind in ("apply", "apply-nofsync"):
                    install = tmp / "install"
                    shutil.copytree(pair.old, install)  # the player's game folder
                    flags = ["--no-fsync"] if kind == "apply-nofsync" else []
                    m = probe(ctx, "apply", run.dir, install, tmp / "work", *flags, log_name=f"apply-{pair.name}")
                    times[kind].append(last_json(m)["seconds"])
                    if scan_directory(install, version="new").content_hash() != new.content_hash():
                        raise ProcError(f"{pair.name}: the patched folder does not match the new version")
                    shutil.rmtree(install)
                    shutil.rmtree(tmp / "work", ignore_errors=True)
        copy_s, apply_s, nofsync_s = (min(times[k]) for k in ("copy", "apply", "apply-nofsync"))
        ctx.row(
            Row(
                "5",
                "patch apply throughput / copytree",
                pair.name,
                copy_s / apply_s,
                detail=f"apply {rate(new.total_size, apply_s)} ({apply_s:.2f}s, {written} files written), copytree "
                f"{rate(new.total_size, copy_s)} ({copy_s:.2f}s) of {mb(new.total_size)}; best of {rounds}",
            )
        )
        ctx.row(
            Row(
                "5",
                "  what-if: apply without fsync / copytree",
                pair.name,
                copy_s / nofsync_s,
                detail=f"apply {nofsync_s:.2f}s with os.fsync a no-op (measured here, not what the patcher does): "
                f"{100 * (apply_s - nofsync_s) / apply_s:.0f}% of the apply time is fsync",
            )
        )


# --- 7. peak memory for one 4 GiB changed file -----------------------------------------------------------------


def item7(ctx: Context) -> None:
    size = 4 * GIB
    need = 3 * size + 2 * GIB
    free = shutil.disk_usage(ctx.work).free
    if free < need:
        ctx.row(
            Row(
                "7",
                "peak RSS / file size (4 GiB file)",
                "-",
                None,
                detail=f"needs {mb(need)} free in {ctx.work}, has {mb(free)}",
            )
        )
        return
    base = ctx.work / "data" / "huge-4G"
    shutil.rmtree(base, ignore_errors=True)
    try:
        ctx.say(f"  writing a 4 GiB pack and its next version (streaming) in {base}")
        spec = gamegen.single_file_spec(size, seed=4)
        gamegen.write_tree(spec, base / "old")
        spec2 = gamegen.next_single_file_spec(spec)
        gamegen.write_tree(spec2, base / "new", previous=None)
        ctx.say("  building the delta (windowed engine above MIST_HDIFF_MAX_BYTES = 256 MiB)")
        d = probe(ctx, "delta", base / "old", base / "new", base / "delta", log_name="delta-4G")
        manifest = mdelta.DeltaManifest.from_json((base / "delta" / mdelta.MANIFEST_NAME).read_bytes())
        engines = sorted({op.engine for op in manifest.ops if op.engine})
        info = last_json(d)
        shutil.rmtree(base / "new")  # the patcher only has the old folder
        a = probe(ctx, "apply", base / "delta", base / "old", base / "work", log_name="apply-4G")
        apply_s = last_json(a)["seconds"]
        target = "peak < 1 GiB"
        ctx.row(
            Row(
                "7",
                "worker delta: peak RSS / file size",
                "4 GiB pack",
                d.max_rss / size,
                target,
                d.max_rss < GIB,
                f"peak RSS {mb(d.max_rss)}; {info['build_seconds']:.0f}s ({rate(size, info['build_seconds'])}); "
                f"engine {', '.join(engines)}; patch {mb(manifest.download_size)}",
            )
        )
        ctx.row(
            Row(
                "7",
                "patcher apply: peak RSS / file size",
                "4 GiB pack",
                a.max_rss / size,
                target,
                a.max_rss < GIB,
                f"peak RSS {mb(a.max_rss)}; {apply_s:.0f}s ({rate(size, apply_s)})",
            )
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- 6, 8, 9: the server --------------------------------------------------------------------------------------------


def _download(url: str, headers: dict[str, str], expect: int) -> tuple[float, float, dict[str, str]]:
    """(seconds to GET the whole body, seconds to the first byte, response headers); curl to /dev/null when present."""
    if shutil.which("curl"):
        with tempfile.NamedTemporaryFile("r") as head:
            cmd = [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-D",
                head.name,
                "-w",
                "%{http_code} %{size_download} %{time_total} %{time_starttransfer}",
            ]
            for k, v in headers.items():
                cmd += ["-H", f"{k}: {v}"]
            out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=1800).stdout.split()
            lines = head.read().splitlines()
        got = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip() for ln in lines if ":" in ln}
        status, size, seconds, first = int(out[0]), int(out[1]), float(out[2]), float(out[3])
    else:
        started = time.perf_counter()
        with requests.get(url, headers=headers, stream=True, timeout=600) as resp:
            first = time.perf_counter() - started
            size = sum(len(c) for c in resp.iter_content(1 << 20))
            status, got = resp.status_code, {k.lower(): v for k, v in resp.headers.items()}
        seconds = time.perf_counter() - started
    if status != 200 or size != expect:
        body = ""
        if size < 100_000:  # an error page: fetch it again to say what went wrong
            try:
                body = requests.get(url, headers=headers, timeout=60).text[:300]
            except requests.RequestException as exc:
                body = str(exc)
        raise ProcError(f"GET {url}: status {status}, {size} bytes (expected 200 and {expect}) {body}")
    return seconds, first, got


def _item6(ctx: Context, st: Stack, token: str, *, slug: str, version: str, archive: dict[str, Any]) -> None:
    size = int(archive["size"])
    relpath = f"archives/{slug}/{version}.tar.zst"
    if not (st.cache / relpath).is_file() or (st.cache / relpath).stat().st_size != size:
        matches = [p for p in st.cache.rglob("*.tar.zst") if p.stat().st_size == size]
        if not matches:
            raise ProcError(f"cannot find the archive of {slug} {version} under {st.cache}")
        relpath = matches[0].relative_to(st.cache).as_posix()
    auth = {"Authorization": f"Bearer {token}"}
    targets = {
        "nginx direct": (f"http://127.0.0.1:{st.direct_port}/direct/{relpath}", {}),
        "gunicorn + X-Accel nginx": (f"http://127.0.0.1:{st.nginx_port}/dl/archive/{slug}/{version}", auth),
        "plain gunicorn": (st.url("plain", f"/dl/archive/{slug}/{version}"), auth),
    }
    *_, headers = _download(*targets["gunicorn + X-Accel nginx"], size)
    if headers.get("x-mist-served-by") != "nginx-accel":
        ctx.note(
            "the X-Accel download did not carry X-Mist-Served-By: nginx-accel (is deploy/nginx/mist.conf current?)"
        )
    rounds = 7 if size < 200e6 else 4
    times: dict[str, list[float]] = {k: [] for k in targets}
    firsts: dict[str, list[float]] = {k: [] for k in targets}
    for _ in range(rounds):  # interleaved, so a busy moment hits all three alike
        for name, (url, hdrs) in targets.items():
            total, first, _ = _download(url, hdrs, size)
            times[name].append(total)
            firsts[name].append(first)
    med = {k: statistics.median(v) for k, v in times.items()}
    ttfb = {k: statistics.median(v) * 1000 for k, v in firsts.items()}
    base = med["nginx direct"]
    label = f"{slug} {version} archive {mb(size)}"
    for name in ("gunicorn + X-Accel nginx", "plain gunicorn"):
        accel = name.startswith("gunicorn +")
        ctx.row(
            Row(
                "6",
                f"download: {name} / nginx direct",
                label,
                base / med[name],
                ">= 0.9" if accel else "",
                (base / med[name] >= 0.9) if accel else None,
                f"{rate(size, med[name])} vs nginx {rate(size, base)}; first byte after {ttfb[name]:.0f} ms vs "
                f"{ttfb['nginx direct']:.0f} ms (median of {rounds}, curl, loopback)",
            )
        )
    if size < 200e6:
        ctx.note(
            f"item 6 on a {mb(size)} archive: the app's fixed cost per request (auth, database) weighs more than on a "
            "multi-GB game archive"
        )


def _tree_rss(root_pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc); 0 where unreadable."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _concurrent_downloads(url: str, headers: dict[str, str], clients: int) -> tuple[float, list[str]]:
    """``clients`` curl downloads at once, each piped into sha256sum; (wall seconds, the digests)."""
    cmd = ["curl", "-sS", "--fail", "-o", "-"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    started = time.perf_counter()
    pipes = []
    for _ in range(clients):
        curl = subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        digest = subprocess.Popen(["sha256sum"], stdin=curl.stdout, stdout=subprocess.PIPE, text=True)
        assert curl.stdout is not None
        curl.stdout.close()  # sha256sum owns the read end now
        pipes.append((curl, digest))
    digests = []
    for curl, digest in pipes:
        out, _ = digest.communicate(timeout=3600)
        digests.append(out.split()[0] if curl.wait(timeout=60) == 0 and out else "curl failed")
    return time.perf_counter() - started, digests


def _item6_concurrent(ctx: Context, st: Stack, token: str, admin: str, *, clients: int = 20) -> None:
    """Issue 7's target: twenty concurrent downloads of a 1 GB artifact, right sha256, flat server memory."""
    if tools.missing("curl"):
        ctx.row(Row("6", f"{clients} concurrent downloads", "-", None, detail=tools.missing_message(["curl"])))
        return
    size = 1_000_000_000
    source = ctx.work / "data" / "one-gb"
    if not (source / "game.pak").is_file() or (source / "game.pak").stat().st_size != size:
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        ctx.say("  writing a 1 GB incompressible build for the concurrent downloads")
        with open(source / "game.pak", "wb") as f:
            left = size
            while left:
                n = min(left, 8 << 20)
                f.write(os.urandom(n))
                left -= n
    st.new_game("bench-1g")
    st.push("bench-1g", "1.0", source)
    arch = st.wait_for("accel", admin, slug="bench-1g", version="1.0", timeout=3600)
    relpath = next(p for p in st.cache.rglob("*.tar.zst") if p.stat().st_size == int(arch["size"]))
    relpath_s = relpath.relative_to(st.cache).as_posix()
    auth = {"Authorization": f"Bearer {token}"}
    accel_service, _ = st.gunicorns["accel"]
    plain_service, _ = st.gunicorns["plain"]
    routes = {
        "nginx direct": (f"http://127.0.0.1:{st.direct_port}/direct/{relpath_s}", {}, None),
        "gunicorn + X-Accel nginx": (
            f"http://127.0.0.1:{st.nginx_port}/dl/archive/bench-1g/1.0",
            auth,
            accel_service.proc.pid,
        ),
        "plain gunicorn": (st.url("plain", "/dl/archive/bench-1g/1.0"), auth, plain_service.proc.pid),
    }
    results: dict[str, tuple[float, int, int, int]] = {}
    for name, (url, hdrs, pid) in routes.items():
        before = _tree_rss(pid) if pid else 0
        peak = [before]
        done = threading.Event()

        def sample(pid: int | None = pid, done: threading.Event = done, peak: list[int] = peak) -> None:
            while pid and not done.wait(0.2):
                peak[0] = max(peak[0], _tree_rss(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        seconds, digests = _concurrent_downloads(url, hdrs, clients)
        done.set()
        sampler.join()
        good = sum(d == arch["sha256"] for d in digests)
        results[name] = (seconds, good, before, peak[0])
        ctx.say(f"  {clients} x {mb(size)} via {name}: {seconds:.1f}s, {good}/{clients} sha256 ok")
    base = results["nginx direct"][0]
    total = clients * int(arch["size"])
    for name in ("gunicorn + X-Accel nginx", "plain gunicorn"):
        seconds, good, before, peak_rss = results[name]
        ctx.row(
            Row(
                "6",
                f"{clients} concurrent downloads: {name} / nginx direct",
                f"1 GB archive x {clients}",
                base / seconds,
                f"{clients}/{clients} sha256 ok, memory flat",
                good == clients and peak_rss - before < 64 << 20,
                f"{good}/{clients} sha256 ok; {rate(total, seconds)} aggregate vs nginx {rate(total, base)}; "
                f"gunicorn RSS {mb(before)} before, peak {mb(peak_rss)} (+{mb(max(0, peak_rss - before))})",
            )
        )
    shutil.rmtree(source, ignore_errors=True)


def _latency(
    url: str, *, method: str, headers: dict[str, str], body: Any, clients: int, per_client: int, limit: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = threading.Barrier(clients)
    deadline = [0.0]

    def client() -> None:
        session = requests.Session()
        mine: list[float] = []
        bad = 0
        start.wait()
        if not deadline[0]:
            deadline[0] = time.monotonic() + limit
        for _ in range(per_client):
            if time.monotonic() > deadline[0]:
                break
            t = time.perf_counter()
            try:
                resp = session.request(method, url, headers=headers, json=body, timeout=60)
                ok = resp.status_code == 200 and len(resp.content) > 0
            except requests.RequestException:
                ok = False
            mine.append(time.perf_counter() - t)
            bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad
        session.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _item8(ctx: Context, st: Stack, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    per_client, limit = (10, 45.0) if ctx.quick else (100, 180.0)
    plan = requests.post(
        st.url("accel", "/api/v1/games/bench/updates"), json={"from_version": "1.0"}, headers=auth, timeout=30
    )
    if plan.status_code != 200:
        raise ProcError(f"update plan answered {plan.status_code}: {plan.text[:300]}")
    route = plan.json().get("route")
    detail = requests.get(st.url("accel", "/api/v1/games/bench"), headers=auth, timeout=30).json()
    files = max((v.get("file_count") or 0 for v in detail.get("versions", [])), default=0)
    games = requests.get(st.url("accel", "/api/v1/games"), headers=auth, timeout=30).json().get("games", [])
    endpoints = {
        "GET /healthz (baseline)": ("GET", st.url("accel", "/healthz"), {}, None),
        "GET /api/v1/games": ("GET", st.url("accel", "/api/v1/games"), auth, None),
        "POST /api/v1/games/bench/updates": (
            "POST",
            st.url("accel", "/api/v1/games/bench/updates"),
            auth,
            {"from_version": "1.0"},
        ),
    }
    results = {}
    single: dict[str, float] = {}
    for name, (method, url, headers, body) in endpoints.items():
        # One client alone first: the service time, without queueing behind 49 others.
        lat, _ = _latency(url, method=method, headers=headers, body=body, clients=1, per_client=20, limit=30)
        single[name] = _pct(lat, 0.5)
        lat, errors = _latency(
            url, method=method, headers=headers, body=body, clients=50, per_client=per_client, limit=limit
        )
        if errors:
            ctx.note(f"item 8: {errors} of {len(lat)} requests to {name} failed")
        results[name] = (lat, errors)
        ctx.say(
            f"  {name}: {len(lat)} requests, p50 {_pct(lat, 0.5) * 1000:.0f} ms, p99 {_pct(lat, 0.99) * 1000:.0f} ms"
        )
    endpoints_base = "GET /healthz (baseline)"
    base, _ = results[endpoints_base]
    for name in list(endpoints)[1:]:
        lat, errors = results[name]
        extra = (
            f"; {len(games)} games listed" if "updates" not in name else f"; route {route}, {files} files per version"
        )
        ctx.row(
            Row(
                "8",
                f"{name}: p50 / healthz p50",
                "50 clients",
                _pct(lat, 0.5) / _pct(base, 0.5),
                detail=f"p50 {_pct(lat, 0.5) * 1000:.0f} ms, p99 {_pct(lat, 0.99) * 1000:.0f} ms "
                f"(healthz p50 {_pct(base, 0.5) * 1000:.0f} ms, p99 {_pct(base, 0.99) * 1000:.0f} ms); "
                f"one client alone: p50 {single[name] * 1000:.0f} ms (healthz {single[endpoints_base] * 1000:.0f} ms); "
                f"{len(lat)} requests, {errors} errors{extra}",
            )
        )


def _item9(ctx: Context, st: Stack, *, slug: str, version: str, source: Path, label: str) -> None:
    """``manage.py push`` against a plain copytree of the same build, one right after the other."""
    with tempfile.TemporaryDirectory(dir=ctx.work, prefix="pushcopy-") as tmp:
        copy_s = last_json(probe(ctx, "copy", source, Path(tmp) / "copy", log_name=f"copy-push-{label}"))["seconds"]
    size = sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
    push = st.push(slug, version, source)
    ctx.row(
        Row(
            "9",
            "push throughput / copytree",
            label,
            copy_s / push.seconds,
            detail=f"push {rate(size, push.seconds)} ({push.seconds:.0f}s, peak RSS {mb(push.max_rss)}) vs copytree "
            f"{rate(size, copy_s)} of {mb(size)}",
        )
    )


def _changed_bytes(old: Path, new: Path) -> int:
    """Bytes of the files of `new` whose content is not anywhere in `old` (what a file-level push must send)."""
    import hashlib

    def digest(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()

    have = {digest(f) for f in old.rglob("*") if f.is_file()}
    return sum(f.stat().st_size for f in new.rglob("*") if f.is_file() and digest(f) not in have)


def _item10(ctx: Context, st: Stack, *, pair: Pair, label: str) -> None:
    """Issue 16: `mist-patcher admin push` of a next version over HTTP against `manage.py push` of the same build."""
    slug = f"remote-{label.lower().replace('.', '-')}"[:60]
    local_slug = f"local-{label.lower().replace('.', '-')}"[:60]
    st.new_game(slug)
    st.new_game(local_slug)
    st.push(slug, "1.0", pair.old)
    st.push(local_slug, "1.0", pair.old)
    (ctx.work / "logs").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ctx.work, prefix="admin-home-") as home:
        env = {**os.environ, "MIST_PATCHER_HOME": home, "MIST_SERVER": st.url("accel", "")}
        cli = [sys.executable, "-m", "mist_patcher.cli.main", "--json", "--quiet"]
        login = subprocess.run([*cli, "admin", "login", "--username", ADMIN[0], "--password-stdin"],
                               input=ADMIN[1] + "\n", env=env, capture_output=True, text=True, timeout=120)
        if login.returncode != 0:
            raise RuntimeError(f"admin login failed: {login.stdout} {login.stderr[-500:]}")
        remote = run_measured([*cli, "admin", "push", slug, "1.1", str(pair.new)], env=env, cwd=REPO,
                              timeout=7200, log=ctx.work / "logs" / f"remote-push-{label}.log").check("admin push")
    result = json.loads(remote.output.strip().splitlines()[-1])
    local = st.push(local_slug, "1.1", pair.new)
    changed = _changed_bytes(pair.old, pair.new)
    sent = result["sent_bytes"]
    ctx.row(Row("10", "remote push bytes sent / changed files", label, sent / max(changed, 1), target="<= 1.1",
                ok=sent <= 1.1 * changed,
                detail=f"{mb(sent)} sent for {mb(changed)} of new or changed files ({result['needed_files']} of "
                       f"{result['files']} files)"))
    ctx.row(Row("10", "remote push bytes sent / full build", label, sent / max(result["total_bytes"], 1),
                target="<= 0.3", ok=sent <= 0.3 * result["total_bytes"], detail=f"build {mb(result['total_bytes'])}"))
    phases = result.get("phases", {})
    ctx.row(Row("10", "remote push time / local manage.py push", label, remote.seconds / max(local.seconds, 1e-9),
                detail=f"remote {remote.seconds:.1f}s (phases: "
                       + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items())
                       + f"; {result.get('block_files', 0)} large files as deltas; peak RSS {mb(remote.max_rss)}) "
                         f"vs local {local.seconds:.1f}s"))
    unchanged_s = phases.get("hash", 0.0) + phases.get("plan", 0.0)
    if unchanged_s > 0:
        per_s = result["total_bytes"] / unchanged_s
        ctx.row(Row("10", "remote push: build hashed and planned per second / 100 MB/s", label, per_s / 100e6,
                    target=">= 1", ok=per_s >= 100e6,
                    detail=f"{rate(result['total_bytes'], unchanged_s)}: the client hashes all "
                           f"{mb(result['total_bytes'])} ({phases.get('hash', 0):.2f}s) and the server compares the "
                           f"manifest ({phases.get('plan', 0):.2f}s); what an unchanged file costs on the wire is 0"))


def server_items(ctx: Context, wanted: set[int]) -> None:
    problem = postgres_problem()
    gunicorn = Path(sys.executable).with_name("gunicorn")
    if problem is None and not gunicorn.exists():
        problem = f"missing {gunicorn} (pip install gunicorn)"
    if problem is None and 6 in wanted and tools.missing("nginx"):
        ctx.row(Row("6", "download via X-Accel / nginx direct", "-", None, detail=tools.missing_message(["nginx"])))
        wanted = wanted - {6}
    if problem is not None:
        for item in sorted(wanted):
            ctx.row(Row(str(item), "server item", "-", None, detail=problem))
        return
    pair = ctx.generated("gen-100M")
    scratch = Path(tempfile.mkdtemp(dir=ctx.work, prefix="server-"))
    with Stack(scratch=scratch, log=ctx.say, keep_logs=ctx.work / "logs" / "server") as st:
        st.setup()
        st.new_game("bench")
        ctx.say("  pushing gen-100M 1.0 and 1.1 with manage.py push; the worker makes the delta and the archive")
        st.push("bench", "1.0", pair.old)
        st.start_worker()
        if 9 in wanted:
            _item9(ctx, st, slug="bench", version="1.1", source=pair.new, label="gen-100M")
        else:
            st.push("bench", "1.1", pair.new)
        st.start_gunicorn("accel", accel=True)
        st.start_gunicorn("plain", accel=False)
        if 6 in wanted:
            st.start_nginx(upstream_port=st.gunicorns["accel"][1])
        admin = st.token("accel", ADMIN)
        friend = st.token("accel", FRIEND)
        started = time.perf_counter()
        archive = st.wait_for("accel", admin, slug="bench", version="1.1", timeout=3600)
        ctx.say(f"  worker done with 1.1 (delta + archive) {time.perf_counter() - started:.0f}s after the push")
        if 8 in wanted:
            _run(ctx, "8", lambda: _item8(ctx, st, friend))
        if 6 in wanted:
            _run(ctx, "6", lambda: _item6(ctx, st, friend, slug="bench", version="1.1", archive=archive))
        if not ctx.quick and (9 in wanted or 6 in wanted):
            big = ctx.generated("gen-2G")
            st.new_game("bench-big")
            if 9 in wanted:
                _run(ctx, "9", lambda: _item9(ctx, st, slug="bench-big", version="1.0", source=big.old, label="gen-2G"))
            else:
                st.push("bench-big", "1.0", big.old)
            if 6 in wanted:

                def big_download() -> None:
                    arch = st.wait_for("accel", admin, slug="bench-big", version="1.0", timeout=7200)
                    _item6(ctx, st, friend, slug="bench-big", version="1.0", archive=arch)

                _run(ctx, "6", big_download)
        if not ctx.quick and 6 in wanted:
            _run(ctx, "6", lambda: _item6_concurrent(ctx, st, friend, admin))
        if 10 in wanted:
            _run(ctx, "10", lambda: _item10(ctx, st, pair=pair, label="gen-100M"))
            real = _pygame_pair(ctx)
            if real is not None:
                _run(ctx, "10", lambda: _item10(ctx, st, pair=real, label=real.name))
            if not ctx.quick:
                _run(ctx, "10", lambda: _item10(ctx, st, pair=ctx.generated("gen-1G"), label="gen-1G"))


def _run(ctx: Context, item: str, fn: Callable[[], None]) -> None:
    """Run one item; a failure becomes an error row and the run goes on."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - report every failure and keep going
        ctx.errors += 1
        ctx.say(traceback.format_exc())
        ctx.row(
            Row(
                item,
                "ERROR",
                "-",
                None,
                detail=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
            )
        )


ITEMS: dict[int, Callable[[Context], None]] = {
    1: item1, 2: item2, 3: item3, 4: item4, 5: item5, 7: item7, 11: switch.item11, 12: objects.item12,
}
