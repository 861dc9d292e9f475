"""Issue 17: the whole pipeline with MIST_STORAGE=s3 against a real S3-compatible server on loopback (moto's
standalone server), a live server, a real django-q2 worker and the patcher CLI.

Pushes put the base archive, manifests and delta bundles in the bucket; archives and bundles are downloaded
through presigned URLs (302) with Range and resume against the object store; after the local disk loses
everything the bucket has, chain replay rebuilds old versions from the bucket's objects. (A worker killed
in the middle of an upload: battery/test_object_storage_faults.py.)
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
from django.core.management import CommandError, call_command

from battery.faults import jobs_settled, ready
from builds import objectstore, storage
from builds.models import CacheEntry
from builds.services import push_version
from catalog.models import Game
from conftest import password_of
from deltas.models import DirectDelta
from downloads.bucket import expected_objects
from downloads.models import DownloadRecord, FullArchive
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mist_patcher.core.api import ApiClient
from mist_patcher.core.download import Downloader
from mist_patcher.tests.test_e2e_live import PASSWORD, Patcher

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SLUG = "cloudy"


def _objects() -> dict[str, int]:
    prefix = objectstore.prefix()
    return {key.removeprefix(prefix): size for key, size in objectstore.iter_objects()}


def _object_sha(key: str) -> str:
    info = objectstore.head(objectstore.prefix() + key)
    assert info is not None, key
    return info.sha256


def _friend(tmp_path: Path, name: str, server: str) -> Patcher:
    p = Patcher(tmp_path / name, server)
    p.run("login", "--username", "friend", "--password-stdin", stdin=PASSWORD + "\n")
    return p


def test_the_pipeline_on_object_storage(s3_storage: dict[str, str], worker: Any, live_server: Any, friend: Any,
                                        admin_user: Any, tmp_path: Path) -> None:
    src = {"1.0": make_build(tmp_path / "src" / "1.0", seed=171, big_file_bytes=1_500_000)}
    src["2.0"] = next_version(src["1.0"], tmp_path / "src" / "2.0", seed=171, step=1)
    src["3.0"] = next_version(src["2.0"], tmp_path / "src" / "3.0", seed=171, step=2)
    game = Game.objects.create(slug=SLUG, title="Cloudy")
    for name, folder in src.items():
        version = push_version(game=game, name=name, source=folder, user=admin_user).version
        worker.wait_for(lambda v=version: ready(v.pk), timeout=180, what=f"{name} ready")
    worker.wait_for(jobs_settled, timeout=180, what="the latest version's archive")

    # every immutable artifact is in the bucket, with the sha256 the database records
    objects = _objects()
    base = f"storage/games/{SLUG}/windows"
    for name in src:
        assert f"{base}/manifests/{name}.json" in objects
    assert f"{base}/base/1.0.tar.zst" in objects
    for delta in DirectDelta.objects.select_related("from_version", "to_version"):
        key = f"{base}/deltas/{delta.from_version.name}__{delta.to_version.name}.tar.zst"
        assert objects.get(key) == delta.bundle_size and _object_sha(key) == delta.bundle_sha256
    archive = FullArchive.objects.get(version__name="3.0")
    key = f"cache/archives/{SLUG}/windows/3.0.tar.zst"
    assert objects.get(key) == archive.size and _object_sha(key) == archive.sha256
    assert objectstore.incomplete_uploads() == []

    # a friend installs the latest: the archive comes from the object store through a presigned URL
    first = _friend(tmp_path, "home1", live_server.url)
    first.run("install", SLUG, "--version", "3.0", "--platform", "windows")
    assert tree_bytes(first.home / "games" / SLUG) == tree_bytes(src["3.0"])
    record = DownloadRecord.objects.get(kind="archive", artifact__endswith="3.0")
    assert "(object store)" in record.client and record.platform == "windows"

    # the server's disk loses everything the bucket holds (the latest tree, the depot, stays)
    shutil.rmtree(storage.cache_root())
    storage.cache_root().mkdir()
    shutil.rmtree(storage.platform_dir(SLUG, "windows") / "deltas")
    storage.base_archive_path(SLUG, "windows", "1.0").unlink()
    CacheEntry.objects.all().delete()

    # an old version: its archive is made by chain replay from the bucket's base archive and delta bundle
    second = _friend(tmp_path, "home2", live_server.url)
    second.run("install", SLUG, "--version", "2.0", "--platform", "windows")
    assert tree_bytes(second.home / "games" / SLUG) == tree_bytes(src["2.0"])
    assert storage.base_archive_path(SLUG, "windows", "1.0").is_file()  # fetched back, verified
    assert (storage.delta_dir(SLUG, "windows", "1.0", "2.0") / "delta_manifest.json").is_file()
    assert f"cache/archives/{SLUG}/windows/2.0.tar.zst" in _objects()

    # and the update to the latest downloads the delta bundle from the bucket, not from the server's disk
    assert not storage.delta_bundle_path(SLUG, "windows", "2.0", "3.0").exists()
    code, update, _ = second.run("update", SLUG, "--version", "3.0")
    assert update["route"] == "direct", update
    assert tree_bytes(second.home / "games" / SLUG) == tree_bytes(src["3.0"])
    bundle = DownloadRecord.objects.get(kind="direct")
    assert "(object store)" in bundle.client
    assert not storage.delta_bundle_path(SLUG, "windows", "2.0", "3.0").exists()

    # a rollback over two versions: the jump made on demand goes to the bucket and is downloaded from it
    code, back, _ = second.run("update", SLUG, "--version", "1.0")
    assert back["route"] == "jump", back
    assert tree_bytes(second.home / "games" / SLUG) == tree_bytes(src["1.0"])
    assert f"cache/jumps/{SLUG}/windows/3.0__1.0.tar.zst" in _objects()
    # and an indirect update (signatures up, rdiff bundle down) comes from the bucket as well
    code, indirect, _ = second.run("update", SLUG, "--version", "3.0", "--route", "indirect")
    assert indirect["route"] == "indirect", indirect
    assert tree_bytes(second.home / "games" / SLUG) == tree_bytes(src["3.0"])
    assert "(object store)" in DownloadRecord.objects.get(kind="indirect").client
    assert any(key.startswith("cache/indirect/") for key in _objects())


def test_presigned_downloads_resume_with_range(s3_storage: dict[str, str], worker: Any, live_server: Any,
                                               friend: Any, tmp_path: Path) -> None:
    src = make_build(tmp_path / "src", seed=172, big_file_bytes=2_000_000)
    game = Game.objects.create(slug=SLUG, title="Cloudy")
    version = push_version(game=game, name="1.0", source=src).version
    worker.wait_for(lambda: ready(version.pk), timeout=180, what="1.0 ready")
    worker.wait_for(lambda: FullArchive.objects.filter(version=version).exists(), timeout=180, what="the archive")
    archive = FullArchive.objects.get(version=version)
    url = f"/dl/archive/{SLUG}/windows/1.0"

    api = ApiClient(live_server.url)
    api.login("friend", password_of(friend))
    # the redirect itself: where to go, and what the object must be
    answer = requests.get(live_server.url + url, allow_redirects=False, timeout=10,
                          headers={"Authorization": f"Bearer {api._tokens.access}"})  # type: ignore[union-attr]
    assert answer.status_code == 302, answer.content
    assert answer.headers["X-Mist-SHA256"] == archive.sha256 and answer.headers["X-Mist-Size"] == str(archive.size)
    assert answer.headers["Location"].startswith(s3_storage["MIST_S3_ENDPOINT_URL"])
    assert requests.get(live_server.url + url, allow_redirects=False, timeout=10).status_code == 401  # no token

    # a download cut in half is resumed against the object store, and verified
    dest = tmp_path / "dl" / "cloudy.tar.zst"
    dest.parent.mkdir()
    whole = requests.get(answer.headers["Location"], timeout=10).content
    assert hashlib.sha256(whole).hexdigest() == archive.sha256
    half = len(whole) // 2
    dest.with_name(dest.name + ".part").write_bytes(whole[:half])
    dest.with_name(dest.name + ".part.json").write_text(json.dumps({"url": url, "sha256": archive.sha256}))
    got = Downloader(api).fetch(url, dest, expected_size=archive.size, expected_sha256=archive.sha256)
    assert (got.resumed_from, got.transferred) == (half, archive.size - half)
    assert dest.read_bytes() == whole

    # a part of other bytes is not resumed into a wrong file: the sha256 check refuses it
    dest.unlink()
    dest.with_name(dest.name + ".part").write_bytes(b"\0" * half)
    dest.with_name(dest.name + ".part.json").write_text(json.dumps({"url": url, "sha256": archive.sha256}))
    with pytest.raises(Exception, match="wrong SHA-256"):
        Downloader(api).fetch(url, dest, expected_size=archive.size, expected_sha256=archive.sha256)
    got = Downloader(api).fetch(url, dest, expected_size=archive.size, expected_sha256=archive.sha256)
    assert got.resumed_from == 0 and dest.read_bytes() == whole


def test_switching_a_running_instance_to_the_bucket(settings: Any, s3_server: Any, worker: Any, live_server: Any,
                                                    friend: Any, tmp_path: Path) -> None:
    """The RUNBOOK's switch: an instance on the filesystem backend, then MIST_STORAGE=s3 and `storage_sync`."""
    src = {"1.0": make_build(tmp_path / "src" / "1.0", seed=174, big_file_bytes=800_000)}
    src["2.0"] = next_version(src["1.0"], tmp_path / "src" / "2.0", seed=174, step=1)
    game = Game.objects.create(slug=SLUG, title="Cloudy")
    for name, folder in src.items():
        version = push_version(game=game, name=name, source=folder).version
        worker.wait_for(lambda v=version: ready(v.pk), timeout=180, what=f"{name} ready")
    worker.wait_for(jobs_settled, timeout=180, what="the archive")
    worker.stop()

    for name, value in s3_server.settings_for(s3_server.new_bucket()).items():
        setattr(settings, name, value)
    objectstore._client_for.cache_clear()
    out = io.StringIO()
    with pytest.raises(CommandError, match="problem"):
        call_command("storage_check", stdout=out)
    assert "bucket: base archive 1.0 [windows] is missing" in out.getvalue(), out.getvalue()
    out = io.StringIO()
    call_command("storage_sync", stdout=out)
    expected = list(expected_objects(game))  # 2 manifests, the base, the delta, the archives of 1.0 and 2.0
    assert len(expected) == 6 and f"{SLUG}: 6 uploaded" in out.getvalue(), out.getvalue()
    out = io.StringIO()
    call_command("storage_check", stdout=out)
    assert "storage matches the database" in out.getvalue()

    p = _friend(tmp_path, "home", live_server.url)
    p.run("install", SLUG, "--version", "2.0", "--platform", "windows")
    assert tree_bytes(p.home / "games" / SLUG) == tree_bytes(src["2.0"])
    assert "(object store)" in DownloadRecord.objects.get(kind="archive").client

    # an object garbled in the bucket is reported, and the download refuses to point at it
    archive = FullArchive.objects.get(version__name="2.0")
    key = objectstore.key_for(storage.cache_root() / archive.relpath)
    objectstore.client().put_object(Bucket=objectstore.bucket(), Key=key, Body=b"garbled",
                                    Metadata={"sha256": archive.sha256})
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("storage_check", stdout=out)
    assert f"bucket: archive 2.0 [windows] has 7 bytes, {archive.size} recorded" in out.getvalue(), out.getvalue()
    # The redirect keeps what the store said of an object for a few minutes (objects under a final key never
    # change, unless garbled behind Mist's back like this; meanwhile the patcher's sha256 check refuses it).
    objectstore.forget_kept_heads()
    api = ApiClient(live_server.url)
    api.login("friend", password_of(friend))
    answer = requests.get(f"{live_server.url}/dl/archive/{SLUG}/windows/2.0", allow_redirects=False, timeout=10,
                          headers={"Authorization": f"Bearer {api._tokens.access}"})  # type: ignore[union-attr]
    assert answer.status_code == 404, answer.status_code


def test_the_local_disk_is_a_bounded_cache_of_the_bucket(s3_storage: dict[str, str], worker: Any, live_server: Any,
                                                         friend: Any, settings: Any, tmp_path: Path) -> None:
    """MIST_S3_LOCAL_BYTES / `storage_trim`: local copies of old base archives and delta bundles go once their
    objects are verified (a garbled object keeps its local copy), storage_check stays clean, and chain replay
    brings back what an old version needs, byte-identical."""
    from builds.models import Job
    from deltas.localcopies import trim_after_job

    src = {"1.0": make_build(tmp_path / "src" / "1.0", seed=175, big_file_bytes=900_000)}
    src["2.0"] = next_version(src["1.0"], tmp_path / "src" / "2.0", seed=175, step=1)
    src["3.0"] = next_version(src["2.0"], tmp_path / "src" / "3.0", seed=175, step=2)
    game = Game.objects.create(slug=SLUG, title="Cloudy")
    for name, folder in src.items():
        version = push_version(game=game, name=name, source=folder).version
        worker.wait_for(lambda v=version: ready(v.pk), timeout=180, what=f"{name} ready")
    worker.wait_for(jobs_settled, timeout=180, what="the archive")
    base = storage.base_archive_path(SLUG, "windows", "1.0")
    old_bundle = storage.delta_bundle_path(SLUG, "windows", "1.0", "2.0")
    old_folder = storage.delta_dir(SLUG, "windows", "1.0", "2.0")
    new_bundle = storage.delta_bundle_path(SLUG, "windows", "2.0", "3.0")
    assert base.is_file() and old_bundle.is_file() and old_folder.is_dir() and new_bundle.is_file()

    # the bucket's copy of the old bundle is garbled: its local copy is kept, everything else that may go goes
    s3 = objectstore.client()
    key = objectstore.key_for(old_bundle)
    good = old_bundle.read_bytes()
    s3.put_object(Bucket=objectstore.bucket(), Key=key, Body=good[:-10],
                  Metadata={"sha256": hashlib.sha256(good).hexdigest()})
    out = io.StringIO()
    with pytest.raises(CommandError, match="could not go"):
        call_command("storage_trim", "--budget", "0", stdout=out)
    assert "kept delta cloudy 1.0 -> 2.0 [windows]: the bucket's object differs" in out.getvalue(), out.getvalue()
    assert "dropped base archive cloudy 1.0 [windows]" in out.getvalue()
    assert not base.exists() and old_bundle.read_bytes() == good and old_folder.is_dir()
    assert new_bundle.is_file()  # the newest build keeps its copies

    # storage_sync puts the right bytes back; then the old bundle and its folder go too
    call_command("storage_sync", stdout=io.StringIO())
    out = io.StringIO()
    call_command("storage_trim", "--budget", "0", stdout=out)
    assert "dropped delta cloudy 1.0 -> 2.0 [windows]" in out.getvalue(), out.getvalue()
    assert not old_bundle.exists() and not old_folder.exists() and new_bundle.is_file()
    assert not list(old_folder.parent.glob(f".{old_folder.name}*"))  # nothing half-removed left behind
    out = io.StringIO()
    call_command("storage_check", stdout=out)
    assert "storage matches the database" in out.getvalue(), out.getvalue()

    # an old version is rebuilt from the bucket's base archive and bundle when a friend asks for it
    shutil.rmtree(storage.cache_root())
    storage.cache_root().mkdir()
    CacheEntry.objects.all().delete()
    p = _friend(tmp_path, "home", live_server.url)
    p.run("install", SLUG, "--version", "2.0", "--platform", "windows")
    assert tree_bytes(p.home / "games" / SLUG) == tree_bytes(src["2.0"])
    assert base.is_file() and (old_folder / "delta_manifest.json").is_file()  # fetched back, verified

    # the worker's own trim (after a delta job, MIST_S3_LOCAL_BYTES): never while another job may be reading
    settings.MIST_S3_LOCAL_BYTES = 1
    mine = Job.objects.filter(kind=Job.Kind.DIRECT_DELTA).first()
    assert mine is not None
    other = Job.objects.create(kind=Job.Kind.RECONSTRUCT, key="reconstruct:test", task="deltas.tasks.reconstruct",
                               status=Job.Status.RUNNING)
    trim_after_job(mine)
    assert base.is_file()
    Job.objects.filter(pk=other.pk).update(status=Job.Status.DONE)
    trim_after_job(mine)
    assert not base.exists() and not old_folder.exists()
