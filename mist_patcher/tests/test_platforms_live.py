"""Builds per platform, end to end: one version pushed for Windows and Linux, each patcher installs
and updates its own build byte for byte, and never fetches the other platform's bytes.

Real server (live_server), real worker, the real CLI in subprocesses (see test_e2e_live).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from builds.models import Version
from builds.services import push_version
from catalog.models import Game
from downloads.models import DownloadRecord
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mist_patcher.tests.test_e2e_live import PASSWORD, Patcher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NAMES = ("1.0", "1.1")


@pytest.fixture
def per_platform(tmp_path: Path, worker: Any, admin_user: Any) -> dict[str, dict[str, Path]]:
    """Versions 1.0 and 1.1 of one game, each with a Windows and a Linux build of different bytes."""
    game = Game.objects.create(slug="crossplay", title="Crossplay")
    builds: dict[str, dict[str, Path]] = {}
    for platform, seed in (("windows", 11), ("linux", 12)):
        first = make_build(tmp_path / "src" / platform / "1.0", seed=seed)
        builds[platform] = {
            "1.0": first,
            "1.1": next_version(first, tmp_path / "src" / platform / "1.1", seed=seed, step=1),
        }
    for name in NAMES:
        for platform in ("windows", "linux"):
            push_version(game=game, name=name, source=builds[platform][name], user=admin_user, platform=platform)
    for version in Version.objects.filter(game=game):
        worker.wait_for(
            lambda pk=version.pk: Version.objects.get(pk=pk).status == Version.Status.READY,
            timeout=180,
            what=f"{version} ready",
        )
    return builds


def _patcher(home: Path, live_server: Any) -> Patcher:
    p = Patcher(home, live_server.url)
    p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    return p


def test_each_platform_installs_and_updates_its_own_build(
    per_platform: dict[str, dict[str, Path]],
    tmp_path: Path,
    live_server: Any,
    friend: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for platform in ("linux", "windows"):
        # given: a patcher of that platform (MIST_PATCHER_PLATFORM stands in for the OS of its machine)
        monkeypatch.setenv("MIST_PATCHER_PLATFORM", platform)
        patcher = _patcher(tmp_path / f"home-{platform}", live_server)
        game_dir = tmp_path / "games" / platform
        _, listing, _ = patcher.run("list")
        assert listing["games"][0]["platforms"] == ["windows", "linux"]
        DownloadRecord.objects.all().delete()
        # when: install 1.0 (full archive), then update to 1.1 (direct delta)
        _, installed, _ = patcher.run("install", "crossplay", "--version", "1.0", "--dir", str(game_dir))
        assert installed["platform"] == platform
        assert tree_bytes(game_dir) == tree_bytes(per_platform[platform]["1.0"])
        _, updated, _ = patcher.run("update", "crossplay")
        # then: byte-identical to that platform's build, and every byte served was that platform's
        assert (updated["to_version"], updated["route"]) == ("1.1", "direct")
        assert tree_bytes(game_dir) == tree_bytes(per_platform[platform]["1.1"])
        records = list(DownloadRecord.objects.filter(user=friend))
        assert {r.kind for r in records} == {"archive", "direct"}
        assert {r.platform for r in records} == {platform}
        ours = {v.name: v for v in Version.objects.filter(platform=platform).select_related("archive")}
        assert sorted(r.size for r in records) == sorted([ours["1.0"].archive.size, ours["1.1"].update_size])


def test_a_missing_platform_build_is_a_clear_refusal_and_platform_overrides(
    per_platform: dict[str, dict[str, Path]],
    tmp_path: Path,
    live_server: Any,
    friend: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a macOS patcher: no macOS build, so the install says which platforms exist
    monkeypatch.setenv("MIST_PATCHER_PLATFORM", "macos")
    patcher = _patcher(tmp_path / "home-mac", live_server)
    code, result, err = patcher.run("install", "crossplay", "--dir", str(tmp_path / "mac"), ok=False)
    said = err + json.dumps(result)
    assert code != 0 and "no macos build" in said and "windows, linux" in said
    # --platform windows installs the Windows build anyway (to run under Wine or Proton)
    _, installed, _ = patcher.run("install", "crossplay", "--platform", "windows", "--dir", str(tmp_path / "mac"))
    assert installed["platform"] == "windows"
    assert tree_bytes(tmp_path / "mac") == tree_bytes(per_platform["windows"]["1.1"])
