"""Crash safety: whatever moment an update dies, recovery leaves exactly the old or the new version."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mistcore import journal
from mistcore.delta import MANIFEST_NAME, DeltaManifest, apply_delta_to_stage, build_direct_delta
from mistcore.errors import MistCoreError
from mistcore.manifest import scan_directory
from mistcore.tests.helpers import snapshot, write_tree


def _versions(rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    old: dict[str, Any] = {}
    for i in range(120):
        folder = f"d{i % 11}/sub{i % 3}" if i % 3 else f"gone{i % 5}"
        old[f"{folder}/f{i}.dat"] = (rng.randbytes(rng.randint(0, 3000)), i % 11 == 0)
    new = {}
    for i, (path, (data, exe)) in enumerate(sorted(old.items())):
        if path.startswith("gone"):
            continue  # whole folders disappear
        if i % 4 == 0:
            new[path] = (data + rng.randbytes(50), exe)
        elif i % 4 == 1:
            new[path] = (data, not exe)
        else:
            new[path] = (data, exe)
    for i in range(50):
        new[f"added/n{i % 7}/x{i}.bin"] = (rng.randbytes(rng.randint(1, 2000)), i % 2 == 0)
    new["gone1"] = (b"a file where a folder was", False)
    return old, new


@pytest.fixture
def fast(work: Path) -> Iterator[Path]:
    """A scratch folder on tmpfs when there is one: these tests fsync thousands of times, and a
    SIGKILL (unlike a power cut) never loses what fsync protects, so durability is not under test."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield work
        return
    path = Path(tempfile.mkdtemp(prefix="mistcore-test-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("journal")
    old, new = _versions(random.Random(99))
    write_tree(base / "v1", old)
    write_tree(base / "v2", new)
    m1 = scan_directory(base / "v1", version="1.0")
    m2 = scan_directory(base / "v2", version="2.0")
    build_direct_delta(
        old_root=base / "v1", old_manifest=m1, new_root=base / "v2", new_manifest=m2, out_dir=base / "delta", level=1
    )
    return {"base": base, "old": snapshot(base / "v1"), "new": snapshot(base / "v2")}


def _fresh_install(prepared: dict[str, Any], work: Path) -> tuple[Path, Path, DeltaManifest]:
    install = work / "install"
    shutil.copytree(prepared["base"] / "v1", install)
    delta = DeltaManifest.from_json((prepared["base"] / "delta" / MANIFEST_NAME).read_bytes())
    return install, work / "stage", delta


def _begin(install: Path, stage: Path, delta: DeltaManifest) -> None:
    journal.begin(
        install_root=install,
        stage_dir=stage,
        target_version=delta.to_version,
        written=delta.written,
        removed=delta.removed,
        executable=[op.path for op in delta.ops if op.executable],
    )


def test_update_then_commit(prepared: dict[str, Any], fast: Path) -> None:
    install, stage, delta = _fresh_install(prepared, fast)
    _begin(install, stage, delta)
    assert journal.read_journal(install_root=install).state == "staging"  # type: ignore[union-attr]
    with pytest.raises(MistCoreError, match="unfinished"):
        _begin(install, stage, delta)
    apply_delta_to_stage(delta=delta, delta_dir=prepared["base"] / "delta", source_root=install, stage_dir=stage)
    journal.commit(install_root=install)
    assert snapshot(install) == prepared["new"]
    assert not stage.exists()
    assert journal.recover(install_root=install) == "clean"


def test_crash_while_staging_rolls_back(prepared: dict[str, Any], fast: Path) -> None:
    install, stage, delta = _fresh_install(prepared, fast)
    _begin(install, stage, delta)
    apply_delta_to_stage(delta=delta, delta_dir=prepared["base"] / "delta", source_root=install, stage_dir=stage)
    assert journal.recover(install_root=install) == "rolled_back"
    assert snapshot(install) == prepared["old"]
    assert not stage.exists()


def test_stage_inside_install_is_refused(prepared: dict[str, Any], fast: Path) -> None:
    install, _, delta = _fresh_install(prepared, fast)
    with pytest.raises(MistCoreError, match="outside"):
        _begin(install, install / ".stage", delta)


def test_foreign_stage_folder_is_never_deleted(prepared: dict[str, Any], fast: Path) -> None:
    install, stage, delta = _fresh_install(prepared, fast)
    stage.mkdir()
    (stage / "precious.txt").write_bytes(b"not ours")
    # A journal pointing at a folder begin() did not mark (damaged or hand-edited) deletes nothing.
    (fast / "stage2").mkdir()
    _begin(install, fast / "stage2", delta)
    (fast / "stage2" / journal.STAGE_MARKER).unlink()
    data = journal.journal_path(install).read_bytes().replace(str(fast / "stage2").encode(), str(stage).encode())
    journal.journal_path(install).write_bytes(data)
    assert journal.recover(install_root=install) == "rolled_back"
    assert (stage / "precious.txt").read_bytes() == b"not ours"


def test_case_only_rename_commits_twice(fast: Path) -> None:
    write_tree(fast / "install", {"Data/README.TXT": b"old"})
    write_tree(fast / "stage", {"Data/readme.txt": b"new"})
    for _ in range(2):
        journal.commit_stage(
            install_root=fast / "install",
            stage_dir=fast / "stage",
            written=["Data/readme.txt"],
            removed=["Data/README.TXT"],
        )
    assert snapshot(fast / "install") == {
        "Data": "dir",
        "Data/readme.txt": snapshot(fast / "install")["Data/readme.txt"],
    }
    assert (fast / "install" / "Data" / "readme.txt").read_bytes() == b"new"


class _Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


@pytest.mark.parametrize("where", ["_move_into_place", "_prune_empty_parents"])
def test_crash_at_every_step_of_the_commit_rolls_forward(
    prepared: dict[str, Any], fast: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    real = getattr(journal, where)
    total = len(prepared["new"])
    for crash_after in [0, 1, 2, 7, 30, total // 2, total]:
        run = fast / f"run{crash_after}"
        run.mkdir()
        install, stage, delta = _fresh_install(prepared, run)
        _begin(install, stage, delta)
        apply_delta_to_stage(delta=delta, delta_dir=prepared["base"] / "delta", source_root=install, stage_dir=stage)
        calls = {"n": 0}

        def dying(*args: Any, _real: Any = real, _calls: dict[str, int] = calls, _at: int = crash_after) -> Any:
            if _calls["n"] == _at:
                raise _Crash
            _calls["n"] += 1
            return _real(*args)

        monkeypatch.setattr(journal, where, dying)
        try:
            journal.commit(install_root=install)
        except _Crash:
            pass
        monkeypatch.setattr(journal, where, real)
        result = journal.recover(install_root=install)
        assert snapshot(install) == prepared["new"], (where, crash_after, result)
        assert not stage.exists() and journal.read_journal(install_root=install) is None


_UPDATER = r"""
import sys, time
from pathlib import Path
from mistcore import journal
from mistcore.delta import MANIFEST_NAME, DeltaManifest, apply_delta_to_stage

delta_dir, install, stage = map(Path, sys.argv[1:4])
delta = DeltaManifest.from_json((delta_dir / MANIFEST_NAME).read_bytes())
print("ready", flush=True)
journal.begin(install_root=install, stage_dir=stage, target_version=delta.to_version, written=delta.written,
              removed=delta.removed, executable=[op.path for op in delta.ops if op.executable])
apply_delta_to_stage(delta=delta, delta_dir=delta_dir, source_root=install, stage_dir=stage)
start = time.monotonic()
print("staged", flush=True)
journal.commit(install_root=install)
print(f"committed {time.monotonic() - start:.6f}", flush=True)
"""


def _start_updater(prepared: dict[str, Any], install: Path, stage: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.Popen(
        [sys.executable, "-c", _UPDATER, str(prepared["base"] / "delta"), str(install), str(stage)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_at_random_points_leaves_old_or_new(prepared: dict[str, Any], fast: Path) -> None:
    # One clean run tells how long staging and committing take on this machine.
    (fast / "clean").mkdir()
    install, stage, _ = _fresh_install(prepared, fast / "clean")
    proc = _start_updater(prepared, install, stage)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    assert proc.stdout.readline().strip() == "staged"
    staging = time.monotonic() - t0
    committing = float(proc.stdout.readline().split()[1])
    assert proc.wait(timeout=60) == 0
    assert snapshot(install) == prepared["new"]

    rng = random.Random(2024)
    outcomes: list[str] = []
    for trial in range(8):
        run = fast / f"t{trial}"
        run.mkdir()
        install, stage, _ = _fresh_install(prepared, run)
        proc = _start_updater(prepared, install, stage)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        if trial % 2:
            # Aim inside the commit, the delicate part.
            assert proc.stdout.readline().strip() == "staged"
            time.sleep(rng.uniform(0, committing * 1.2))
        else:
            time.sleep(rng.uniform(0, staging + committing))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        outcomes.append(journal.recover(install_root=install))
        tree = snapshot(install)
        assert tree in (prepared["old"], prepared["new"]), (trial, outcomes[-1])
        if outcomes[-1] == "rolled_forward":
            assert tree == prepared["new"]
        assert journal.read_journal(install_root=install) is None
    print("recoveries:", outcomes, f"(staging {staging:.3f}s, commit {committing:.3f}s)")


def test_corrupt_journal_is_reported(work: Path) -> None:
    (work / "install").mkdir()
    (work / "install" / journal.JOURNAL_NAME).write_text(json.dumps({"format": "nope"}))
    with pytest.raises(MistCoreError):
        journal.recover(install_root=work / "install")
