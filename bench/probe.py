"""Child-process entry points the harness measures (time and peak memory of just that work).

    python -m bench.probe delta OLD NEW OUT_DIR [--hdiff-max BYTES] [--reuse DELTA_DIR ...]
                                                   what the worker's direct-delta (or jump-delta) job does
    python -m bench.probe apply DELTA_DIR INSTALL WORK [--no-fsync]     what the patcher does with a direct delta
    python -m bench.probe copy SRC DST                                  shutil.copytree, the baseline

Each prints one JSON line with its own timings (scanning the trees is reported apart, since the
server reads stored manifests instead of scanning).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from mistcore import delta as mdelta
from mistcore.manifest import scan_directory

# The server's default (mist.settings.MIST_HDIFF_MAX_BYTES): bigger files use the windowed engine.
SERVER_HDIFF_MAX_BYTES = 256 << 20


def _delta(old: Path, new: Path, out: Path, hdiff_max: int, reuse: list[Path]) -> dict[str, float]:
    started = time.perf_counter()
    old_manifest = scan_directory(old, version="old")
    new_manifest = scan_directory(new, version="new")
    scanned = time.perf_counter()
    manifest = mdelta.build_direct_delta(
        old_root=old,
        old_manifest=old_manifest,
        new_root=new,
        new_manifest=new_manifest,
        out_dir=out,
        hdiff_max_bytes=hdiff_max,
        workers=2,  # what deltas.services.make_direct_delta uses
        # a forward jump: the push-time deltas between the two versions (deltas.services.make_jump_delta)
        reuse=mdelta.known_blobs(reuse) if reuse else None,
    )
    built = time.perf_counter()
    return {
        "scan_seconds": scanned - started,
        "build_seconds": built - scanned,
        "download_size": manifest.download_size,
    }


def _apply(delta_dir: Path, install: Path, work: Path, no_fsync: bool) -> dict[str, float]:
    if no_fsync:
        # What-if only: how much of the apply time is spent waiting for the disk to confirm writes.
        os.fsync = lambda fd: None
    started = time.perf_counter()
    mdelta.apply_delta_dir(delta_dir=delta_dir, install_root=install, work_dir=work)
    return {"seconds": time.perf_counter() - started}


def _copy(src: Path, dst: Path) -> dict[str, float]:
    started = time.perf_counter()
    shutil.copytree(src, dst)
    return {"seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe")
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("delta")
    d.add_argument("old", type=Path)
    d.add_argument("new", type=Path)
    d.add_argument("out", type=Path)
    d.add_argument("--hdiff-max", type=int, default=SERVER_HDIFF_MAX_BYTES)
    d.add_argument("--reuse", type=Path, nargs="*", default=[])
    a = sub.add_parser("apply")
    a.add_argument("delta_dir", type=Path)
    a.add_argument("install", type=Path)
    a.add_argument("work", type=Path)
    a.add_argument("--no-fsync", action="store_true")
    c = sub.add_parser("copy")
    c.add_argument("src", type=Path)
    c.add_argument("dst", type=Path)
    args = parser.parse_args(argv)
    if args.what == "delta":
        result = _delta(args.old, args.new, args.out, args.hdiff_max, args.reuse)
    elif args.what == "apply":
        result = _apply(args.delta_dir, args.install, args.work, args.no_fsync)
    else:
        result = _copy(args.src, args.dst)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
