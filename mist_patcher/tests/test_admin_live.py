"""Issue 16: the admin pushes from another machine with ``mist-patcher admin``, sending only what changed.
The CLI in a subprocess against the live server and a real worker; bytes counted server-side."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from builds import storage
from builds.models import UploadSession, Version
from catalog.models import Game
from conftest import bearer_client, password_of
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mist_patcher.tests.test_e2e_live import Patcher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _admin(tmp_path: Path, server: str, admin_user: Any) -> Patcher:
    p = Patcher(tmp_path / "admin-home", server)
    code, result, _ = p.run("admin", "login", "--username", "admin", "--password-stdin",
                            stdin=password_of(admin_user) + "\n")
    assert result["scope"] == "admin"
    return p


def test_remote_push_sends_only_what_changed(live_server: Any, worker: Any, admin_user: Any, friend: Any,
                                             tmp_path: Path) -> None:
    p = _admin(tmp_path, live_server.url, admin_user)
    code, created, _ = p.run("admin", "new-game", "comet", "--title", "Comet")
    assert created["slug"] == "comet" and Game.objects.filter(slug="comet").exists()
    code, dup, _ = p.run("admin", "new-game", "comet", ok=False)
    assert code == 1 and "already exists" in dup["error"]

    # a first push from a folder of the admin's PC: everything goes up
    v1 = make_build(tmp_path / "pc" / "v1", seed=61, big_file_bytes=6_000_000)
    code, first, _ = p.run("admin", "push", "comet", "1.0", str(v1), "--platform", "linux", "--notes", "First",
                           "--wait", "180")
    assert first["status"] == "ready" and first["needed_files"] == first["files"] and first["basis_version"] is None
    assert tree_bytes(storage.tree_dir("comet", "linux", "1.0")) == tree_bytes(v1)

    # the second push sends only the new or changed files, and the server rebuilds the whole tree
    v2 = next_version(v1, tmp_path / "pc" / "v2", seed=61, step=1)
    code, second, _ = p.run("admin", "push", "comet", "1.1", str(v2), "--platform", "linux", "--wait", "180")
    assert second["status"] == "ready" and second["basis_version"] == "1.0"
    assert 0 < second["needed_files"] < second["files"]
    upload = UploadSession.objects.get(version__name="1.1")
    assert upload.received == upload.total_size == second["upload_bytes"] == second["sent_bytes"]
    changed = sum(f.stat().st_size for f in _changed_files(v1, v2))
    assert second["needed_bytes"] <= changed
    assert upload.total_size <= 1.1 * changed, (upload.total_size, changed)
    assert upload.total_size < second["total_bytes"]
    # the 6 MB file with a few changed blocks went up as a librsync delta against the server's copy, not whole
    assert upload.layout == "rdiff" and second["block_files"] == 1
    assert upload.total_size < 0.1 * changed, (upload.total_size, changed)
    version = Version.objects.get(game__slug="comet", name="1.1", platform="linux")
    assert version.notes == "" and version.parent.name == "1.0"
    # what the server serves afterwards is the admin's build, byte for byte
    served = tree_bytes(storage.tree_dir("comet", "linux", "1.1"))
    assert served == tree_bytes(v2)
    listed = bearer_client(friend).get("/api/v1/games/comet?platform=linux")
    assert [v["name"] for v in listed.json()["versions"]] == ["1.0", "1.1"]

    code, report, _ = p.run("admin", "delta-report", "comet", "1.1", "--platform", "linux")
    assert report["from_version"] == "1.0" and report["files"] and report["bundle_size"] > 0

    # ls and rm, remotely
    code, games, _ = p.run("admin", "ls")
    assert [g["slug"] for g in games["games"]] == ["comet"]
    code, versions, _ = p.run("admin", "ls", "comet", "--platform", "linux")
    assert [(v["name"], v["status"]) for v in versions["versions"]] == [("1.0", "ready"), ("1.1", "ready")]
    code, refused, _ = p.run("admin", "rm", "comet", "1.0", "--platform", "linux", ok=False)
    assert code == 1 and "force" in refused["error"]
    code, removed, _ = p.run("admin", "rm", "comet", "1.1", "--platform", "linux")
    assert "1.1" in removed["removed"]
    assert not Version.objects.filter(game__slug="comet", name="1.1").exists()
    code, missing, _ = p.run("admin", "rm", "comet", "9.9", "--platform", "linux", ok=False)
    assert code == 1 and "no linux build" in missing["error"]


def _changed_files(old: Path, new: Path) -> list[Path]:
    out = []
    old_hashes = {hashlib.sha256(f.read_bytes()).hexdigest() for f in old.rglob("*") if f.is_file()}
    for f in new.rglob("*"):
        if f.is_file() and hashlib.sha256(f.read_bytes()).hexdigest() not in old_hashes:
            out.append(f)
    return out


def test_a_push_killed_halfway_resumes_and_a_corrupt_chunk_is_refused(live_server: Any, worker: Any,
                                                                       admin_user: Any, tmp_path: Path) -> None:
    p = _admin(tmp_path, live_server.url, admin_user)
    p.run("admin", "new-game", "nova", "--title", "Nova")
    build = make_build(tmp_path / "pc" / "v1", seed=62, big_file_bytes=8_000_000)
    proc = p.popen("admin", "push", "nova", "1.0", str(build), MIST_PATCHER_UPLOAD_CHUNK=str(256 * 1024))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        session = UploadSession.objects.filter(game__slug="nova").first()
        if session is not None and session.received >= 1 << 20:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    session = UploadSession.objects.get(game__slug="nova")
    assert 0 < session.received < session.total_size and session.status == "open"
    assert not Version.objects.filter(game__slug="nova").exists()

    # a chunk that arrives damaged is refused and changes nothing
    admin_api = bearer_client(admin_user)
    good = b"\0" * 1000
    response = admin_api.put(f"/api/v1/builds/uploads/{session.pk}", data=good, content_type="application/octet-stream",
                             HTTP_CONTENT_RANGE=f"bytes {session.received}-{session.received + 999}/{session.total_size}",
                             HTTP_X_MIST_CHUNK_SHA256=hashlib.sha256(b"\1" * 1000).hexdigest())
    assert response.status_code == 400 and "corrupted" in response.json()["detail"]
    assert UploadSession.objects.get(pk=session.pk).received == session.received

    code, resumed, _ = p.run("admin", "push", "nova", "1.0", str(build), "--wait", "180")
    assert resumed["resumed_from"] == session.received
    assert resumed["sent_bytes"] == resumed["upload_bytes"] - session.received
    assert resumed["status"] == "ready"
    assert tree_bytes(storage.tree_dir("nova", "windows", "1.0")) == tree_bytes(build)
    assert not list((p.home / "pushes").iterdir())  # nothing left of the push on the admin's PC


def test_a_friend_cannot_use_the_admin_commands(live_server: Any, admin_user: Any, friend: Any,
                                                tmp_path: Path) -> None:
    Game.objects.create(slug="comet", title="Comet")
    p = Patcher(tmp_path / "friend-home", live_server.url)
    code, refused, _ = p.run("admin", "login", "--username", "friend", "--password-stdin",
                             stdin=password_of(friend) + "\n", ok=False)
    assert code == 1 and "not an admin" in refused["error"]
    p.run("login", "--username", "friend", "--password-stdin", stdin=password_of(friend) + "\n")
    build = make_build(tmp_path / "b", seed=63)
    for argv in (("admin", "push", "comet", "1.0", str(build)), ("admin", "new-game", "evil"),
                 ("admin", "rm", "comet", "1.0"), ("admin", "resync-steam", "comet")):
        code, result, _ = p.run(*argv, ok=False)
        assert code == 1 and "not an admin" in result["error"], (argv, result)
    assert not UploadSession.objects.exists() and not Game.objects.filter(slug="evil").exists()
    signatures = bearer_client(friend).post("/api/v1/builds/uploads/signatures", {
        "game": "comet", "basis_version": "1.0", "paths": ["data/huge.bin"]}, content_type="application/json")
    assert signatures.status_code == 403


def test_a_block_level_upload_that_does_not_rebuild_the_build_is_refused_with_the_file_named(
        live_server: Any, worker: Any, admin_user: Any, tmp_path: Path) -> None:
    from mistcore import indirect
    from mistcore.fsutil import sha256_file
    from mistcore.manifest import scan_directory

    p = _admin(tmp_path, live_server.url, admin_user)
    p.run("admin", "new-game", "vega", "--title", "Vega")
    v1 = make_build(tmp_path / "pc" / "v1", seed=64, big_file_bytes=3_000_000)
    p.run("admin", "push", "vega", "1.0", str(v1), "--wait", "180")
    v2 = next_version(v1, tmp_path / "pc" / "v2", seed=64, step=1)
    manifest = scan_directory(v2, version="1.1")
    api = bearer_client(admin_user)
    plan = api.post("/api/v1/builds/uploads/plan", {"game": "vega", "manifest": json.loads(manifest.to_json())},
                    content_type="application/json").json()
    assert plan["rdiff"] == ["data/huge.bin"] and plan["basis_version"] == "1.0"

    # the signatures API checks what it is asked for
    unknown = api.post("/api/v1/builds/uploads/signatures", {"game": "vega", "basis_version": "1.0",
                       "paths": ["data/nope.bin"]}, content_type="application/json")
    assert unknown.status_code == 400 and "data/nope.bin" in unknown.json()["detail"]
    answer = api.post("/api/v1/builds/uploads/signatures", {"game": "vega", "basis_version": "1.0",
                      "paths": plan["rdiff"]}, content_type="application/json")
    assert answer.status_code == 200 and answer["Content-Type"] == "application/x-tar"
    sig_tar = tmp_path / "sigs.tar"
    sig_tar.write_bytes(b"".join(answer.streaming_content))
    sigs = indirect.read_signature_set(src=sig_tar, dest_dir=tmp_path / "sigs", allowed_paths=set(plan["rdiff"]),
                                       max_bytes=64 << 20)
    assert sigs.basis_info["data/huge.bin"]["sha256"] == sha256_file(v1 / "data" / "huge.bin")

    # a client that diffs another huge.bin than the one its manifest announces: the delta applies cleanly to
    # the server's copy, but what it rebuilds is not the manifest's file
    tampered = tmp_path / "pc" / "tampered"
    shutil.copytree(v2, tampered)
    blob = bytearray((tampered / "data" / "huge.bin").read_bytes())
    blob[2_000_000:2_000_010] = b"0123456789"
    (tampered / "data" / "huge.bin").write_bytes(bytes(blob))
    bundle = tmp_path / "upload.tar.zst"
    indirect.build_indirect_bundle(signatures=sigs, basis_info=sigs.basis_info, target_root=tampered,
                                   target_manifest=scan_directory(tampered, version="1.1"), paths=plan["needed"],
                                   out=bundle, level=3)
    data = bundle.read_bytes()
    created = api.post("/api/v1/builds/uploads", {
        "game": "vega", "version": "1.1", "filename": "1.1.tar.zst", "total_size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "manifest": json.loads(manifest.to_json()), "layout": "rdiff",
    }, content_type="application/json")
    assert created.status_code == 201, created.json()
    upload_id = created.json()["id"]
    put = api.put(f"/api/v1/builds/uploads/{upload_id}", data=data, content_type="application/octet-stream",
                  HTTP_CONTENT_RANGE=f"bytes 0-{len(data) - 1}/{len(data)}")
    assert put.status_code == 200
    refused = api.post(f"/api/v1/builds/uploads/{upload_id}/finalize")
    assert refused.status_code == 400 and "data/huge.bin" in refused.json()["detail"], refused.json()
    assert not Version.objects.filter(game__slug="vega", name="1.1").exists()
    assert UploadSession.objects.get(pk=upload_id).status == "failed"
    assert not storage.tree_dir("vega", "windows", "1.1").exists()
    assert tree_bytes(storage.tree_dir("vega", "windows", "1.0")) == tree_bytes(v1)  # the basis is untouched

    # the honest client then pushes the same version at patch size, and the tree served is its build
    code, pushed, _ = p.run("admin", "push", "vega", "1.1", str(v2), "--wait", "180")
    assert pushed["status"] == "ready" and pushed["block_files"] == 1
    assert tree_bytes(storage.tree_dir("vega", "windows", "1.1")) == tree_bytes(v2)
