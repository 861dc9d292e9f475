"""Command line: ``python -m bench [--quick] [--only 1,2] [--workdir DIR] [--keep-data]``.

Prints progress, then one table; the same table and the machine description go to a Markdown
file (``--markdown``, default ``<workdir>/last-run.md``) to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import time
from pathlib import Path

from bench import items, report, tools
from bench.proc import stop_all
from bench.server import REPO

ALL_ITEMS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
TITLES = {
    1: "direct-update bytes / full .tar.zst",
    2: "Mist patch bytes / best of xdelta3, bsdiff, zstd --patch-from (per file)",
    3: "indirect-update bytes / changed files zstd -19",
    4: "delta generation time / zstd -19 time (1 GB build, 10% changed)",
    5: "patch apply throughput / copytree",
    6: "archive download: gunicorn + X-Accel nginx / nginx direct",
    7: "peak memory, 4 GiB changed file (worker delta, patcher apply)",
    8: "API p50/p99 with 50 clients (games list, update plan)",
    9: "push throughput / copytree, and its peak memory (2 GB build)",
    10: "remote push (mist-patcher admin push): bytes sent / changed files and / full build, time / local push",
    11: "switch: every route of a jump A -> B (forward and backward) / the best tool between exactly A and B",
    12: "object storage (MIST_STORAGE=s3): download via presigned URL / straight from S3, worker delta time s3 / fs",
}


def _items(text: str) -> set[int]:
    try:
        chosen = {int(x) for x in text.split(",") if x.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--only takes item numbers like 1,2,6; got {text!r}") from None
    bad = chosen - set(ALL_ITEMS)
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"items are 1 to 12; got {text!r}")
    return chosen


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./dev bench",
        description="Mist's benchmarks: each figure a ratio measured side by side in this run.",
        epilog="Items:\n" + "\n".join(f"  {n}. {t}" for n, t in TITLES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="100 MB data only: skips the 4 GiB item and the 2 GB data (a smoke run of a few minutes)",
    )
    parser.add_argument("--only", type=_items, default=set(ALL_ITEMS), metavar="N,M", help="run only these items")
    parser.add_argument(
        "--workdir", type=Path, default=REPO / "bench" / "out", help="scratch and cached data (default bench/out)"
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=REPO / "var" / "bench-corpus",
        help="where the real release pair is downloaded (default var/bench-corpus)",
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the generated 1 GB and 2 GB data sets for the next run"
    )
    parser.add_argument(
        "--markdown", type=Path, default=None, help="write the results as Markdown here (default <workdir>/last-run.md)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {text}", flush=True)

    ctx = items.Context(
        work=args.workdir, corpus=args.corpus.resolve(), quick=args.quick, keep_data=args.keep_data, say=say
    )
    info = report.machine()
    say(
        "machine: "
        + ", ".join(
            f"{k} {v}" for k, v in info.items() if k in ("nproc", "ram", "cpu", "load average (1/5/15 min) at start")
        )
    )
    absent = tools.missing("xdelta3", "bsdiff", "zstd", "nginx", "curl")
    if absent:
        ctx.note(f"{tools.missing_message(absent)}: the comparisons needing them are skipped")
    else:
        say("tools: xdelta3, bsdiff, zstd, nginx and curl found")
    if args.quick:
        ctx.note("--quick: 100 MB generated data and the real pair only; item 7 (4 GiB) and the 2 GB data are skipped")
    wanted = sorted(args.only)
    try:
        for n in wanted:
            if n in (6, 8, 9, 10):
                continue
            say(f"item {n}: {TITLES[n]}")
            if n == 7 and args.quick:
                ctx.rows.append(report.Row("7", TITLES[7], "-", None, detail="skipped by --quick"))
                continue
            items._run(ctx, str(n), functools.partial(items.ITEMS[n], ctx))
            if n == 5 and not args.quick and not {6, 9} & set(wanted):
                ctx.drop("gen-2G")  # no later item needs it: free 4 GB before the 4 GiB item
        server = {6, 8, 9, 10} & set(wanted)
        if server:
            say(f"items {', '.join(map(str, sorted(server)))}: scratch server (PostgreSQL, worker, gunicorn, nginx)")
            items._run(ctx, ",".join(map(str, sorted(server))), lambda: items.server_items(ctx, server))
    except KeyboardInterrupt:
        say("interrupted: stopping everything started")
        ctx.errors += 1
    finally:
        stop_all()
        if not args.quick:
            for name in ("gen-1G", "gen-2G"):
                ctx.drop(name)
        shutil.rmtree(args.workdir / "deltas", ignore_errors=True)
    seconds = time.monotonic() - started
    ctx.rows = [r for _, r in sorted(enumerate(ctx.rows), key=lambda ir: (int(ir[1].item.split(",")[0]), ir[0]))]
    say(f"done in {seconds / 60:.1f} min")
    info["load average (1/5/15 min) at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(report.table(ctx.rows))
    if ctx.notes:
        print()
        for note in ctx.notes:
            print(f"note: {note}")
    command = "./dev bench " + " ".join(sys.argv[1:] if argv is None else argv)
    md = args.markdown or args.workdir / "last-run.md"
    md.write_text(report.markdown(rows=ctx.rows, info=info, notes=ctx.notes, command=command.strip(), seconds=seconds))
    print(f"\nMarkdown written to {md}")
    return 1 if ctx.errors else 0
