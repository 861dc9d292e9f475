"""The update plan and the indirect-update request, as the patcher sees them over the API."""

from __future__ import annotations

import io
import json
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from builds import storage
from builds.models import Job
from catalog.models import Game, GameGrant
from mistcore import indirect as mindirect


def _plan(client: Any, body: dict[str, Any], slug: str = "trio") -> Any:
    return client.post(f"/api/v1/games/{slug}/updates", body, format="json")


def test_plan_prefers_the_direct_chain_forward(three_versions: dict[str, Any], friend_api: Any) -> None:
    r = _plan(friend_api, {"from_version": "1", "to_version": "3"})
    assert r.status_code == 200, r.content
    plan = r.json()
    assert plan["route"] == "direct"
    assert [(s["from_version"], s["to_version"]) for s in plan["steps"]] == [("1", "2"), ("2", "3")]
    assert plan["download_bytes"] == sum(s["size"] for s in plan["steps"]) == plan["alternatives"]["direct"]
    assert plan["steps"][0]["url"] == "/dl/direct/trio/windows/1__2"
    assert "cheapest" in plan["reason"]
    assert plan["target_manifest_url"] == "/api/v1/games/trio/versions/3/manifest?platform=windows"


def test_plan_latest_by_default_and_none_when_current(three_versions: dict[str, Any], friend_api: Any) -> None:
    assert _plan(friend_api, {"from_version": "3"}).json()["route"] == "none"
    assert _plan(friend_api, {"from_version": "2"}).json()["to_version"] == "3"


def test_plan_backwards_asks_the_worker_for_a_jump(three_versions: dict[str, Any], friend_api: Any) -> None:
    plan = _plan(friend_api, {"from_version": "3", "to_version": "1"}).json()
    # no chain leads backwards: one jump delta 3 -> 1, made now by the worker (the patcher waits for its job)
    assert plan["route"] == "jump" and plan["steps"] == []
    assert plan["jump"]["job"]["kind"] == "jump_delta" and plan["jump"]["preparing"] is False
    assert "direct" not in plan["alternatives"]
    assert plan["alternatives"]["jump"] < plan["alternatives"]["indirect"]
    assert plan["indirect"]["paths"]  # the fallback stays described


def test_plan_from_an_unknown_local_state(three_versions: dict[str, Any], friend_api: Any) -> None:
    manifest = json.loads(storage.manifest_path("trio", "windows", "1").read_bytes())
    plan = _plan(friend_api, {"from_version": "unknown", "to_version": "3", "local_manifest": manifest}).json()
    assert plan["route"] in {"indirect", "full"} and plan["from_version"] is None
    assert set(plan["alternatives"]) == {"indirect", "full"}


@pytest.mark.parametrize(
    "body, status, detail",
    [
        ({"from_version": "9.9"}, 400, "not a version"),
        ({"from_version": "1", "to_version": "9.9"}, 404, "No such version"),
        ({"from_version": "unknown", "local_manifest": {"format": "nope"}}, 400, "local_manifest"),
    ],
)
def test_plan_bad_input(three_versions: dict[str, Any], friend_api: Any, body: Any, status: int, detail: str) -> None:
    r = _plan(friend_api, body)
    assert r.status_code == status
    assert detail in r.json()["detail"]


def test_private_game_is_404_until_granted(three_versions: dict[str, Any], friend_api: Any, friend: Any) -> None:
    Game.objects.filter(slug="trio").update(is_private=True)
    assert _plan(friend_api, {"from_version": "1"}).status_code == 404
    r = friend_api.post("/api/v1/games/trio/indirect", {"to_version": "3"})
    assert r.status_code == 404
    GameGrant.objects.create(user=friend, game=Game.objects.get(slug="trio"))
    assert _plan(friend_api, {"from_version": "1"}).status_code == 200


def _indirect(client: Any, data: bytes, paths: list[str], to: str = "3") -> Any:
    upload = SimpleUploadedFile("sigs.tar", data, content_type="application/x-tar")
    return client.post(
        "/api/v1/games/trio/indirect", {"to_version": to, "paths": json.dumps(paths), "signatures": upload},
        format="multipart",
    )


def _signatures(root: Path, paths: list[str], out: Path) -> bytes:
    mindirect.signature_set(root=root, paths=paths, out_tar=out)
    return out.read_bytes()


def test_indirect_request_is_accepted_and_queued(three_versions: dict[str, Any], friend_api: Any, tmp_path: Path) -> None:
    root = three_versions["sources"]["1"]
    data = _signatures(root, ["bin/game.x86_64"], tmp_path / "s.tar")
    r = _indirect(friend_api, data, ["bin/game.x86_64", "config.ini"])
    assert r.status_code == 202, r.content
    job = Job.objects.get(pk=r.json()["job"]["id"])
    assert job.kind == Job.Kind.INDIRECT and job.status == Job.Status.QUEUED
    assert r.json()["job_url"] == f"/api/v1/jobs/{job.pk}"


def _orphans() -> list[str]:
    work = storage.cache_root() / "work"
    return [p.name for p in work.iterdir()] if work.exists() else []


def _tar_with(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_indirect_bad_input_is_a_clear_400_with_no_orphan_files(
    three_versions: dict[str, Any], friend_api: Any, tmp_path: Path
) -> None:
    root = three_versions["sources"]["1"]
    good = _signatures(root, ["bin/game.x86_64"], tmp_path / "s.tar")
    sig_member = next(m for m in tarfile.open(fileobj=io.BytesIO(good)).getmembers() if m.name.endswith(".sig"))
    sig_bytes = tarfile.open(fileobj=io.BytesIO(good)).extractfile(sig_member).read()  # type: ignore[union-attr]
    index = json.dumps({"format": "mist-sigs/1", "files": {"bin/game.x86_64": {
        "size": (root / "bin/game.x86_64").stat().st_size, "sha256": "0" * 64}}}).encode()
    bomb_header = sig_bytes[:12]
    magic, block_len, strong_len = struct.unpack(">III", bomb_header)
    cases = {
        "not a tar": (b"this is not a tar file at all" * 10, ["bin/game.x86_64"]),
        # cut inside the signature's bytes (half of the tar may be only its end padding)
        "truncated": (good[: sig_member.offset_data + sig_member.size // 2], ["bin/game.x86_64"]),
        "unknown path": (good, ["no/such/file.bin"]),
        "path not requested": (good, ["config.ini"]),
        "bad magic": (_tar_with({"signatures.json": index, "bin/game.x86_64.sig": b"XXXX" + sig_bytes[4:]}),
                      ["bin/game.x86_64"]),
        "truncated signature": (_tar_with({"signatures.json": index, "bin/game.x86_64.sig": sig_bytes[:-7]}),
                                ["bin/game.x86_64"]),
        "signature bomb": (_tar_with({"signatures.json": index,
                                      "bin/game.x86_64.sig": struct.pack(">III", magic, 1, strong_len)
                                      + b"\0" * (4 + strong_len) * 4096}), ["bin/game.x86_64"]),
    }
    for name, (data, paths) in cases.items():
        r = _indirect(friend_api, data, paths)
        assert r.status_code == 400, (name, r.content)
        assert r.json()["detail"], name
        assert _orphans() == [], name
    assert not Job.objects.filter(kind=Job.Kind.INDIRECT).exists()


def test_indirect_upload_over_the_limit_is_413(three_versions: dict[str, Any], friend_api: Any, settings: Any,
                                               tmp_path: Path) -> None:
    settings.MIST_MAX_SIGNATURE_UPLOAD_BYTES = 1024
    data = _signatures(three_versions["sources"]["1"], ["bin/game.x86_64"], tmp_path / "s.tar")
    r = _indirect(friend_api, data, ["bin/game.x86_64"])
    assert r.status_code == 413 and "larger than 1024" in r.json()["detail"]
    assert _orphans() == []
