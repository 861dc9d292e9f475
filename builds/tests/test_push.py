"""Pushing builds: through the command and the upload API; manifests, idempotency, atomicity, bad paths."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from builds import storage
from builds.models import Job, Version
from builds.services import BuildError, push_version
from catalog.models import Game
from mist.testing.gamedata import make_build, tree_bytes
from mist.testing.worker import subprocess_env
from mistcore.manifest import Manifest

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def game(db: None) -> Game:
    return Game.objects.create(slug="space-game", title="Space Game")


def test_push_command_records_manifest_files_and_queues_jobs(game: Game, tmp_path: Path) -> None:
    src = make_build(tmp_path / "build", seed=3)
    out = io.StringIO()
    call_command("push", "space-game", "1.0", str(src), "--notes", "First!", stdout=out)
    text = out.getvalue()
    assert "pushed space-game 1.0" in text and "MB/s" in text
    assert "queued process_version job" in text
    version = Version.objects.get(game=game, name="1.0")
    assert version.status == Version.Status.PENDING and version.notes == "First!"
    expected = tree_bytes(src)
    assert version.file_count == len(expected)
    assert version.total_size == sum(len(b) for b, _ in expected.values())
    # the manifest on disk and in the database agree, with sha256 and the executable bit
    manifest = Manifest.from_json(storage.manifest_path("space-game", "windows", "1.0").read_bytes())
    rows = {f.path: f for f in version.files.all()}
    assert {r.path for r in manifest.files} == set(rows) == set(expected)
    for record in manifest.files:
        content, executable = expected[record.path]
        assert record.sha256 == rows[record.path].sha256 == hashlib.sha256(content).hexdigest()
        assert record.executable == executable == rows[record.path].executable
    assert manifest.by_path()["bin/game.x86_64"].executable
    assert manifest.by_path()["data/empty.cfg"].size == 0
    assert "docs/Läsmig – ünïcødé.txt" in manifest.by_path()
    # the depot is a switched symlink onto the new tree
    assert tree_bytes(storage.depot_dir("space-game", "windows")) == expected
    assert Job.objects.filter(version=version, kind=Job.Kind.PROCESS_VERSION).exists()


def test_second_push_queues_a_direct_delta_and_links_the_parent(game: Game, tmp_path: Path) -> None:
    v1 = make_build(tmp_path / "v1", seed=3)
    push_version(game=game, name="1.0", source=v1)
    (v1 / "config.ini").write_text("changed")
    result = push_version(game=game, name="1.1", source=v1)
    assert result.version.parent.name == "1.0" and result.version.seq == 2
    assert [j.kind for j in result.queued] == [Job.Kind.DIRECT_DELTA]


def test_identical_content_is_refused_naming_the_version(game: Game, tmp_path: Path) -> None:
    src = make_build(tmp_path / "b", seed=4)
    push_version(game=game, name="1.0", source=src)
    with pytest.raises(BuildError, match="identical to version '1.0'"):
        push_version(game=game, name="1.0-again", source=src)
    assert list(game.versions.values_list("name", flat=True)) == ["1.0"]
    assert not storage.tree_dir("space-game", "windows", "1.0-again").exists()


def test_duplicate_and_invalid_version_names(game: Game, tmp_path: Path) -> None:
    src = make_build(tmp_path / "b", seed=5)
    push_version(game=game, name="1.0", source=src)
    with pytest.raises(BuildError, match="already exists"):
        push_version(game=game, name="1.0", source=src)
    for bad in ["", "a/b", "../x", "1__2", ".hidden"]:
        with pytest.raises(BuildError):
            push_version(game=game, name=bad, source=src)


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz", "tar.zst"])
def test_push_from_archives(game: Game, tmp_path: Path, kind: str) -> None:
    src = make_build(tmp_path / "b", seed=6)
    archive = tmp_path / f"build.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for path in sorted(src.rglob("*")):
                if path.is_file():
                    info = zipfile.ZipInfo(path.relative_to(src).as_posix())
                    info.external_attr = (0o100755 if os.access(path, os.X_OK) else 0o100644) << 16
                    zf.writestr(info, path.read_bytes())
    elif kind == "tar.zst":
        from mistcore.safetar import pack_tar_zst

        pack_tar_zst(root=src, paths=None, dst=archive)
    else:
        with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as tf:
            tf.add(src, arcname=".")
    result = push_version(game=game, name="1.0", source=archive)
    assert tree_bytes(storage.depot_dir("space-game", "windows")) == tree_bytes(src)
    assert result.version.file_count == len(tree_bytes(src))


def _malicious_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    with tarfile.open(path, "w") as tf:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if member.isreg():
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
        else:
            tf.addfile(member)
    return path


def _tar_member(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    "make_source, message",
    [
        (lambda d: (d / "a").mkdir() or os.symlink("/etc/passwd", d / "a" / "link"), "symbolic links"),  # type: ignore[func-returns-value]
        (lambda d: ((d / "f").write_text("x"), os.link(d / "f", d / "g")), "hard links"),  # type: ignore[func-returns-value]
        (lambda d: ((d / "f").write_text("x"), os.mkfifo(d / "pipe")), "device files"),  # type: ignore[func-returns-value]
        (lambda d: ((d / "Readme.txt").write_text("a"), (d / "README.TXT").write_text("b")), "differ only by case"),
        (lambda d: (d / "empty-folder").mkdir(), "empty"),
        (lambda d: (d / "CON").write_text("x"), "reserved"),
    ],
    ids=["symlink", "hardlink", "fifo", "case-clash", "empty-build", "windows-reserved"],
)
def test_bad_builds_are_refused_with_the_path_named(
    game: Game, tmp_path: Path, make_source: Any, message: str
) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    make_source(src)
    with pytest.raises(BuildError, match=message):
        push_version(game=game, name="1.0", source=src)
    assert not game.versions.exists()
    assert not [p for p in storage.trees_dir("space-game", "windows").iterdir()] if storage.trees_dir("space-game", "windows").exists() else True


@pytest.mark.parametrize(
    "member, message",
    [
        (_tar_member("../evil.txt"), "evil"),
        (_tar_member("/etc/cron.d/evil"), "evil"),
        (_tar_member("link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (_tar_member("hard", tarfile.LNKTYPE, "fine.txt"), "hard"),
        (_tar_member("dev", tarfile.CHRTYPE), "dev"),
        (_tar_member("FINE.TXT"), "case"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "device", "case-clash"],
)
def test_bad_archives_are_refused(game: Game, tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    archive = _malicious_tar(tmp_path / "bad.tar", member)
    with pytest.raises(BuildError) as excinfo:
        push_version(game=game, name="1.0", source=archive)
    assert message.lower() in str(excinfo.value).lower()
    assert not game.versions.exists()
    assert not (tmp_path / "evil.txt").exists()


def test_zip_with_dotdot_is_refused(game: Game, tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "ok")
        zf.writestr("../../escape.txt", "boo")
    with pytest.raises(BuildError, match="escape"):
        push_version(game=game, name="1.0", source=archive)
    assert not (tmp_path.parent / "escape.txt").exists()


@pytest.mark.django_db(transaction=True)
def test_a_push_killed_mid_copy_leaves_nothing_visible(tmp_path: Path) -> None:
    game = Game.objects.create(slug="killed", title="Killed")
    v1 = make_build(tmp_path / "v1", seed=8)
    push_version(game=game, name="1.0", source=v1)
    before = tree_bytes(storage.depot_dir("killed", "windows"))
    big = make_build(tmp_path / "v2", seed=9, big_file_bytes=150_000_000)
    proc = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "push", "killed", "2.0", str(big)],
        cwd=BASE_DIR, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    # Kill it once part of the big file is staged: watching bytes, not the clock, so a fast or a
    # loaded machine both hit the middle of the copy.
    staged, running_at_kill = 0, False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            staged = sum(
                f.stat().st_size
                for d in storage.trees_dir("killed", "windows").iterdir()
                if d.name.startswith(".staging-")
                for f in d.rglob("*")
                if f.is_file()
            )
        except FileNotFoundError:  # the staging folder was renamed in place under us: the push finished
            continue
        if staged >= 20_000_000:
            running_at_kill = proc.poll() is None
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert running_at_kill, f"push never reached the middle of the copy (staged {staged} bytes): " + (
        proc.stdout.read().decode() if proc.stdout else ""
    )
    assert list(game.versions.values_list("name", flat=True)) == ["1.0"]
    assert tree_bytes(storage.depot_dir("killed", "windows")) == before
    assert not storage.manifest_path("killed", "windows", "2.0").exists()
    # the next push sweeps the leftovers and works
    result = push_version(game=game, name="2.0", source=big)
    assert result.version.name == "2.0"
    assert not [p for p in storage.trees_dir("killed", "windows").iterdir() if p.name.startswith(".staging-")]


def test_remote_push_through_the_upload_api(game: Game, tmp_path: Path, admin_api: Any, friend_api: Any) -> None:
    src = make_build(tmp_path / "b", seed=10)
    archive = tmp_path / "build.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(src, arcname=".")
    data = archive.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    body = {"game": "space-game", "version": "1.0", "filename": "build.tar", "total_size": len(data), "sha256": sha}
    assert friend_api.post("/api/v1/builds/uploads", body, format="json").status_code == 403
    created = admin_api.post("/api/v1/builds/uploads", body, format="json")
    assert created.status_code == 201, created.content
    url = f"/api/v1/builds/uploads/{created.json()['id']}"
    half = len(data) // 2
    r = admin_api.put(url, data[:half], content_type="application/octet-stream",
                      HTTP_CONTENT_RANGE=f"bytes 0-{half - 1}/{len(data)}")
    assert r.status_code == 200 and r.json()["received"] == half
    # a chunk that does not start where the upload ends: 409 says where to resume
    r = admin_api.put(url, data[10:20], content_type="application/octet-stream",
                      HTTP_CONTENT_RANGE=f"bytes 10-19/{len(data)}")
    assert r.status_code == 409 and r.json()["received"] == half
    early = admin_api.post(url + "/finalize")
    assert early.status_code == 400 and "incomplete" in early.json()["detail"]
    assert admin_api.get(url).json()["received"] == half  # resume point survives
    r = admin_api.put(url, data[half:], content_type="application/octet-stream",
                      HTTP_CONTENT_RANGE=f"bytes {half}-{len(data) - 1}/{len(data)}")
    assert r.status_code == 200
    done = admin_api.post(url + "/finalize")
    assert done.status_code == 202, done.content
    assert done.json()["version"]["name"] == "1.0"
    assert tree_bytes(storage.depot_dir("space-game", "windows")) == tree_bytes(src)


def test_upload_with_wrong_sha256_is_refused(game: Game, admin_api: Any) -> None:
    body = {"game": "space-game", "version": "1.0", "filename": "b.tar", "total_size": 4, "sha256": "0" * 64}
    url = f"/api/v1/builds/uploads/{admin_api.post('/api/v1/builds/uploads', body, format='json').json()['id']}"
    admin_api.put(url, b"abcd", content_type="application/octet-stream", HTTP_CONTENT_RANGE="bytes 0-3/4")
    r = admin_api.post(url + "/finalize")
    assert r.status_code == 400 and "sha256" in r.json()["detail"]
    assert not game.versions.exists()


def test_ls_and_new_game_commands(db: None, tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("new_game", "racer", "--title", "Racer", "--private", stdout=out)
    assert "created racer" in out.getvalue() and "[private]" in out.getvalue()
    with pytest.raises(CommandError, match="already exists"):
        call_command("new_game", "racer", "--title", "Again")
    push_version(game=Game.objects.get(slug="racer"), name="0.1", source=make_build(tmp_path / "b", seed=11))
    out = io.StringIO()
    call_command("ls", "racer", stdout=out)
    assert "0.1" in out.getvalue() and "pending" in out.getvalue() and "(base)" in out.getvalue()
    out = io.StringIO()
    call_command("ls", stdout=out)
    assert "racer" in out.getvalue() and "[private]" in out.getvalue()


def test_manifest_api_serves_the_recorded_manifest(game: Game, tmp_path: Path, friend_api: Any) -> None:
    v = push_version(game=game, name="1.0", source=make_build(tmp_path / "b", seed=12)).version
    url = "/api/v1/games/space-game/versions/1.0/manifest"
    assert friend_api.get(url).status_code == 404  # not ready yet: friends do not see it
    Version.objects.filter(pk=v.pk).update(status=Version.Status.READY)
    response = friend_api.get(url)
    assert response.status_code == 200
    assert response.content == storage.manifest_path("space-game", "windows", "1.0").read_bytes()
    assert json.loads(response.content)["version"] == "1.0"


def test_bundle_paths_keep_dotted_version_names_apart() -> None:
    a = storage.delta_bundle_path("g", "windows", "2.0", "2.1")
    b = storage.delta_bundle_path("g", "windows", "2.0", "2.5")
    assert a != b and a.name == "2.0__2.1.tar.zst" and a.parent == storage.delta_dir("g", "windows", "2.0", "2.1").parent


def test_one_version_holds_one_build_per_platform(game: Game, tmp_path: Path, admin_api: Any) -> None:
    # given: the Windows build of 1.0 (the default platform), then a Linux build of the same version
    win = push_version(game=game, name="1.0", source=make_build(tmp_path / "w", seed=20)).version
    out = io.StringIO()
    call_command("push", "space-game", "1.0", str(make_build(tmp_path / "l", seed=21)), "--platform", "linux", stdout=out)
    assert "space-game 1.0 (linux)" in out.getvalue()
    lin = game.versions.get(name="1.0", platform="linux")
    # then: two histories, each starting at seq 1 with its own tree, manifest and depot
    assert (win.platform, win.seq, lin.seq, lin.parent_id) == ("windows", 1, 1, None)
    assert tree_bytes(storage.depot_dir("space-game", "linux")) == tree_bytes(tmp_path / "l")
    assert tree_bytes(storage.depot_dir("space-game", "windows")) == tree_bytes(tmp_path / "w")
    assert storage.manifest_path("space-game", "linux", "1.0").is_file()
    # a second Linux build of 1.0 is refused, an unknown platform too
    with pytest.raises(BuildError, match="linux build of version '1.0' of space-game already exists"):
        push_version(game=game, name="1.0", source=make_build(tmp_path / "l2", seed=22), platform="linux")
    with pytest.raises(BuildError, match="must be one of windows, linux, macos"):
        push_version(game=game, name="2.0", source=tmp_path / "w", platform="amiga")
    # the upload API takes the platform (and refuses an unknown one with a 400)
    body = {"game": "space-game", "version": "1.0", "filename": "b.tar", "total_size": 4, "platform": "macos"}
    created = admin_api.post("/api/v1/builds/uploads", body, format="json")
    assert created.status_code == 201 and created.json()["platform"] == "macos"
    assert admin_api.post("/api/v1/builds/uploads", {**body, "platform": "amiga"}, format="json").status_code == 400
    # the manifest API serves each platform's build
    linux_manifest = admin_api.get("/api/v1/games/space-game/versions/1.0/manifest?platform=linux")
    assert linux_manifest["X-Mist-Platform"] == "linux"
    assert linux_manifest.content == storage.manifest_path("space-game", "linux", "1.0").read_bytes()
    assert admin_api.get("/api/v1/games/space-game/versions/1.0/manifest?platform=amiga").status_code == 400
    detail = admin_api.get("/api/v1/games/space-game?platform=linux").json()
    assert detail["platform"] == "linux" and [v["platform"] for v in detail["versions"]] == ["linux"]
