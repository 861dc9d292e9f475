"""Benchmark (opt-in: MIST_BENCH=1): a generated game with 5% of its bytes changed, through the real
pipeline. Reports bytes downloaded by the update vs the full archive, and the update's wall time vs
copying the game folder. Size with MIST_BENCH_MB (default 1024)."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from builds.models import Version
from builds.services import push_version
from catalog.models import Game
from mist_patcher.tests.test_e2e_live import PASSWORD, Patcher

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(os.environ.get("MIST_BENCH") != "1", reason="benchmark: set MIST_BENCH=1 to run"),
]

FILE_MB = 64


def _generate(root: Path, total_mb: int) -> None:
    root.mkdir(parents=True)
    for i in range(max(1, total_mb // FILE_MB)):
        (root / f"pak{i:02d}.bin").write_bytes(random.Random(i).randbytes(FILE_MB << 20))


def _change_five_percent(src: Path, dst: Path) -> int:
    """Copy and overwrite 5% of every file's bytes in scattered 64 KiB blocks; return bytes changed."""
    shutil.copytree(src, dst)
    changed = 0
    rng = random.Random(99)
    for path in sorted(dst.iterdir()):
        data = bytearray(path.read_bytes())
        blocks = int(len(data) * 0.05) // 65536
        for offset in rng.sample(range(0, len(data) // 65536), blocks):
            data[offset * 65536 : (offset + 1) * 65536] = rng.randbytes(65536)
            changed += 65536
        path.write_bytes(bytes(data))
    return changed


def test_update_cost_of_a_five_percent_change(tmp_path: Path, worker: Any, live_server: Any, friend: Any,
                                               admin_user: Any) -> None:
    total_mb = int(os.environ.get("MIST_BENCH_MB", "1024"))
    v1, v2 = tmp_path / "src" / "1.0", tmp_path / "src" / "2.0"
    _generate(v1, total_mb)
    changed = _change_five_percent(v1, v2)
    game = Game.objects.create(slug="bench", title="Bench")
    started = time.monotonic()
    for name, src in (("1.0", v1), ("2.0", v2)):
        push_version(game=game, name=name, source=src, user=admin_user)
        worker.wait_for(lambda n=name: Version.objects.get(game=game, name=n).status == Version.Status.READY,
                        timeout=3600, what=f"{name} ready")
    server_seconds = time.monotonic() - started

    patcher = Patcher(tmp_path / "home", live_server.url)
    patcher.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    install = tmp_path / "games" / "bench"
    _, installed, _ = patcher.run("install", "bench", "--version", "1.0", "--dir", str(install), timeout=3600)
    _, plan, _ = patcher.run("update", "bench", "--dry-run")
    t0 = time.monotonic()
    _, updated, _ = patcher.run("update", "bench", timeout=3600)
    update_seconds = time.monotonic() - t0
    t0 = time.monotonic()
    shutil.copytree(install, tmp_path / "copy")
    copy_seconds = time.monotonic() - t0
    _, full_plan, _ = patcher.run("update", "bench", "--version", "1.0", "--dry-run")

    report = {
        "game_bytes": sum(p.stat().st_size for p in v1.iterdir()),
        "changed_bytes": changed,
        "route": updated["route"],
        "update_downloaded_bytes": updated["downloaded_bytes"],
        "full_archive_bytes": installed["archive_size"],
        "update_seconds": round(update_seconds, 1),
        "copy_folder_seconds": round(copy_seconds, 1),
        "server_push_and_delta_seconds": round(server_seconds, 1),
        "plan": {k: plan[k] for k in ("route", "reason", "download_bytes", "disk_bytes", "alternatives")},
        "backward_plan": {k: full_plan[k] for k in ("route", "download_bytes")},
    }
    out = Path(__file__).resolve().parents[2] / "test-artifacts" / "patcher-bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    assert updated["downloaded_bytes"] < installed["archive_size"] / 5
