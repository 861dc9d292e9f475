"""Removing versions re-links history; storage_check reports drift between disk and database."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from builds import storage
from builds.models import Job, Version
from deltas.models import DirectDelta
from deltas.services import DeltaError, make_direct_delta, reconstruct_version, remove_version
from mist.testing.gamedata import tree_bytes
from mistcore import delta as mdelta


def test_removing_a_middle_version_relinks_and_queues_a_new_delta(three_versions: dict[str, Any], tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("rm", "trio", "2", stdout=out)
    assert "3 now follows 1" in out.getvalue() and "queued direct_delta" in out.getvalue()
    v3 = Version.objects.get(name="3")
    assert v3.parent.name == "1" and v3.status == Version.Status.PENDING
    assert not storage.delta_dir("trio", "windows", "1", "2").exists() and not storage.delta_dir("trio", "windows", "2", "3").exists()
    assert Job.objects.filter(kind=Job.Kind.DIRECT_DELTA, version=v3, status=Job.Status.QUEUED).exists()
    make_direct_delta(to_version=v3)  # what the queued job does
    install = tmp_path / "install"
    shutil.copytree(three_versions["sources"]["1"], install)
    mdelta.apply_delta_dir(delta_dir=storage.delta_dir("trio", "windows", "1", "3"), install_root=install, work_dir=tmp_path / "w")
    assert tree_bytes(install) == tree_bytes(three_versions["sources"]["3"])
    assert DirectDelta.objects.count() == 1


def test_removing_the_latest_points_the_depot_back(three_versions: dict[str, Any]) -> None:
    remove_version(version=Version.objects.get(name="3"))
    assert tree_bytes(storage.depot_dir("trio", "windows")) == tree_bytes(three_versions["sources"]["2"])
    assert list(Version.objects.values_list("name", flat=True)) == ["1", "2"]


def test_removing_the_base_or_only_version_needs_force(three_versions: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="is the base of trio"):
        call_command("rm", "trio", "1")
    assert Version.objects.count() == 3
    result = remove_version(version=Version.objects.get(name="1"), force=True)
    assert "2 is the new base" in result.messages[0]
    v2 = Version.objects.get(name="2")
    assert v2.parent is None
    assert [j.kind for j in result.queued] == [Job.Kind.PROCESS_VERSION]
    from builds.services import make_base_archive

    make_base_archive(version=v2)
    shutil.rmtree(storage.tree_dir("trio", "windows", "2"))
    shutil.rmtree(storage.cached_version_dir("trio", "windows", "2"), ignore_errors=True)
    assert tree_bytes(reconstruct_version(version=v2)) == tree_bytes(three_versions["sources"]["2"])
    remove_version(version=Version.objects.get(name="3"))
    with pytest.raises(DeltaError, match="only version"):
        remove_version(version=v2)


def test_storage_check_is_clean_then_reports_each_drift(three_versions: dict[str, Any]) -> None:
    out = io.StringIO()
    call_command("storage_check", stdout=out)
    assert "trio: ok" in out.getvalue() and "storage matches" in out.getvalue()
    # drift everywhere: a depot file, a manifest, a bundle, a missing base archive
    (storage.depot_dir("trio", "windows") / "config.ini").write_text("tampered")
    storage.manifest_path("trio", "windows", "2").write_bytes(b"{}")
    with open(storage.delta_bundle_path("trio", "windows", "2", "3"), "ab") as fh:
        fh.write(b"junk")
    storage.base_archive_path("trio", "windows", "1").unlink()
    out = io.StringIO()
    with pytest.raises(CommandError, match="4 problem"):
        call_command("storage_check", "trio", stdout=out)
    text = out.getvalue()
    assert "depot (3): config.ini does not match" in text
    assert "2: manifest on disk differs" in text
    assert "delta 2__3: bundle does not match" in text
    assert "base archive 1.tar.zst: missing" in text


def test_chain_replay_uses_the_nearest_cached_version(three_versions: dict[str, Any]) -> None:
    v1, v2 = Version.objects.get(name="1"), Version.objects.get(name="2")
    for name in ("1", "2"):
        shutil.rmtree(storage.cached_version_dir("trio", "windows", name), ignore_errors=True)
        shutil.rmtree(storage.tree_dir("trio", "windows", name), ignore_errors=True)
    # with the base archive gone, only a cached v1 can be the start
    rebuilt_v1 = reconstruct_version(version=v1)
    storage.base_archive_path("trio", "windows", "1").rename(storage.base_archive_path("trio", "windows", "1").with_suffix(".gone"))
    assert tree_bytes(reconstruct_version(version=v2)) == tree_bytes(three_versions["sources"]["2"])
    assert rebuilt_v1.is_dir()


def test_chain_replay_detects_a_corrupt_delta(three_versions: dict[str, Any]) -> None:
    for name in ("1", "2"):
        shutil.rmtree(storage.cached_version_dir("trio", "windows", name), ignore_errors=True)
        shutil.rmtree(storage.tree_dir("trio", "windows", name), ignore_errors=True)
    folder = storage.delta_dir("trio", "windows", "1", "2")
    patch = next(p for p in (folder / "patches").iterdir())
    data = bytearray(patch.read_bytes())
    data[len(data) // 2] ^= 0xFF
    patch.write_bytes(bytes(data))
    with pytest.raises(Exception, match="sha256|checksum|corrupt|size|patch"):
        reconstruct_version(version=Version.objects.get(name="2"))
    assert not storage.cached_version_dir("trio", "windows", "2").exists()
