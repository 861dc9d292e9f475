"""Debian's diff and compression tools, run per file as the baselines Mist is compared with.

``xdelta3 -9 -S djw``, ``bsdiff`` and ``zstd -19 --long=31 --patch-from=OLD`` each turn the old
file into the new one; the harness sums each tool's patch sizes over the same changed files and
takes the smallest total as "best tool". A missing tool is reported once and left out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# Debian package of each program, for the "missing" message.
PACKAGES = {"xdelta3": "xdelta3", "bsdiff": "bsdiff", "zstd": "zstd", "nginx": "nginx-light", "curl": "curl"}
# bsdiff holds ~17 x the old file in memory (suffix array of 64-bit offsets) and can take minutes
# on big repetitive inputs: files over this are not given to it (its total is then incomplete).
BSDIFF_MAX_BYTES = 160 << 20
PER_FILE_TIMEOUT = 1800


def missing(*names: str) -> list[str]:
    """Which of the programs are not on PATH."""
    return [n for n in names if shutil.which(n) is None]


def missing_message(names: Iterable[str]) -> str:
    pkgs = sorted({PACKAGES.get(n, n) for n in names})
    return f"missing {', '.join(names)} (apt-get install -y {' '.join(pkgs)})"


def _xdelta3(old: Path, new: Path, out: Path) -> list[str]:
    cmd = ["xdelta3", "-e", "-9", "-S", "djw", "-f"]
    size = os.path.getsize(old)
    if size > 64 << 20:
        # xdelta3's default source window is 64 MiB: give it the whole old file, as a fair baseline.
        cmd += ["-B", str(min(max(size, 1 << 20), 1 << 31))]
    return [*cmd, "-s", str(old), str(new), str(out)]


def _bsdiff(old: Path, new: Path, out: Path) -> list[str]:
    return ["bsdiff", str(old), str(new), str(out)]


def _zstd_patch(old: Path, new: Path, out: Path) -> list[str]:
    return ["zstd", "-q", "-f", "-19", "--long=31", f"--patch-from={old}", str(new), "-o", str(out)]


TOOLS: dict[str, tuple[str, Callable[[Path, Path, Path], list[str]]]] = {
    "xdelta3 -9 -S djw": ("xdelta3", _xdelta3),
    "bsdiff": ("bsdiff", _bsdiff),
    "zstd -19 --long=31 --patch-from": ("zstd", _zstd_patch),
}


@dataclass
class ToolTotal:
    """One tool's patch bytes summed over the files, or why it could not do all of them."""

    name: str
    total: int = 0
    files: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # label -> this tool's patch bytes for that file

    @property
    def complete(self) -> bool:
        return not self.failed


def _run_one(name: str, old: Path, new: Path, tmp: Path, index: int) -> tuple[int | None, float, str]:
    program, make = TOOLS[name]
    if program == "bsdiff" and max(os.path.getsize(old), os.path.getsize(new)) > BSDIFF_MAX_BYTES:
        return None, 0.0, f"over bsdiff's {BSDIFF_MAX_BYTES >> 20} MiB cap"
    out = tmp / f"{index:06d}.{program}"
    started = time.perf_counter()
    try:
        proc = subprocess.run(make(old, new, out), capture_output=True, timeout=PER_FILE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - started, f"timed out after {PER_FILE_TIMEOUT}s"
    seconds = time.perf_counter() - started
    if proc.returncode != 0 or not out.exists():
        return None, seconds, (proc.stderr or proc.stdout).decode(errors="replace").strip()[-200:]
    size = out.stat().st_size
    out.unlink()
    return size, seconds, ""


def per_file_totals(pairs: list[tuple[str, Path, Path]], *, scratch: Path, workers: int = 2) -> dict[str, ToolTotal]:
    """Run every available tool on every (label, old, new) pair; sum the patch sizes per tool."""
    totals: dict[str, ToolTotal] = {}
    for name, (program, _) in TOOLS.items():
        if missing(program):
            continue
        total = ToolTotal(name=name)
        with tempfile.TemporaryDirectory(dir=scratch, prefix="tools-") as tmp, ThreadPoolExecutor(workers) as pool:
            futures = [
                (label, pool.submit(_run_one, name, old, new, Path(tmp), i))
                for i, (label, old, new) in enumerate(pairs)
            ]
            for label, future in futures:
                size, seconds, error = future.result()
                total.seconds += seconds
                if size is None:
                    total.failed.append(f"{label}: {error}")
                else:
                    total.total += size
                    total.files += 1
                    total.sizes[label] = size
        totals[name] = total
    return totals


def zstd_cli_compress(files: list[Path], *, scratch: Path, level: int = 19, workers: int = 2) -> tuple[int, float]:
    """``zstd -<level>`` on each file (``workers`` at a time, like Mist's delta builder); (bytes, seconds)."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix="zstd-") as tmp:

        def one(item: tuple[int, Path]) -> int:
            i, src = item
            out = Path(tmp) / f"{i:06d}.zst"
            subprocess.run(["zstd", "-q", "-f", f"-{level}", str(src), "-o", str(out)], check=True, capture_output=True)
            size = out.stat().st_size
            out.unlink()
            return size

        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            total = sum(pool.map(one, enumerate(files)))
        return total, time.perf_counter() - started
