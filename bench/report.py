"""The result table, the machine description, and their Markdown form for bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass
class Row:
    """One figure: a ratio of two things measured side by side, with its target and the raw numbers."""

    item: str
    figure: str
    data: str
    ratio: float | None
    target: str = ""
    ok: bool | None = None  # None: no target, or not measured
    detail: str = ""

    @property
    def verdict(self) -> str:
        if self.ratio is None:
            return "skipped"
        return {True: "PASS", False: "MISS", None: ""}[self.ok]


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB" if n < 10e9 else f"{n / 1e9:,.2f} GB"


def rate(n_bytes: float, seconds: float) -> str:
    return f"{n_bytes / 1e6 / max(seconds, 1e-9):,.1f} MB/s"


def _first_line(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "missing"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> dict[str, str]:
    """nproc, RAM, CPU model, load, OS, Python and tool versions."""
    cpu = "?"
    mem = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(nproc),
        "ram": mem,
        "cpu": cpu,
        "load average (1/5/15 min) at start": load,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "zstd": _first_line(["zstd", "--version"]),
        "xdelta3": _first_line(["xdelta3", "-V"]),
        "bsdiff": "present" if shutil.which("bsdiff") else "missing",
        "nginx": _first_line(["nginx", "-v"]),
    }


def table(rows: list[Row]) -> str:
    """A fixed-width text table (also valid inside a Markdown code block)."""
    head = ("#", "figure", "data", "ratio", "target", "verdict", "absolute (secondary)")
    cells = [head] + [(r.item, r.figure, r.data, fmt_ratio(r.ratio), r.target, r.verdict, r.detail) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head) - 1)]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(c[i].ljust(widths[i]) for i in range(len(widths))) + "  " + c[-1])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 20)
    return "\n".join(lines)


def markdown(*, rows: list[Row], info: dict[str, str], notes: list[str], command: str, seconds: float) -> str:
    out = ["# Mist benchmark run", "", f"`{command}` took {seconds / 60:.1f} min.", "", "## Machine", ""]
    out += [f"- {k}: {v}" for k, v in info.items()]
    out += ["", "## Results", "", "```", table(rows), "```", ""]
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)
