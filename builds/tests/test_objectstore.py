"""builds.objectstore against a real S3-compatible server (moto's standalone server on loopback)."""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from builds import objectstore, storage


def _artifact(size: int, name: str = "games/g/windows/base/1.0.tar.zst") -> Path:
    path = storage.storage_root() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def test_publish_then_fetch_back_byte_for_byte(s3_storage: dict[str, str]) -> None:
    path = _artifact(12 * 1024**2 + 17)  # three parts of 5 MiB
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    info = objectstore.publish(path)
    assert info is not None and info.key == "mist/storage/games/g/windows/base/1.0.tar.zst"
    assert (info.size, info.sha256) == (len(data), sha)
    assert objectstore.publish(path) == info  # idempotent: the same object is kept
    path.unlink()
    assert objectstore.ensure_local(path, sha256=sha, size=len(data))
    assert path.read_bytes() == data
    assert objectstore.usage() == {"objects": 1, "bytes": len(data)}


def test_a_wrong_sha256_or_size_publishes_nothing(s3_storage: dict[str, str]) -> None:
    path = _artifact(6 * 1024**2)
    with pytest.raises(objectstore.ObjectStoreError, match="not published"):
        objectstore.publish(path, sha256="0" * 64)
    with pytest.raises(objectstore.ObjectStoreError, match="recorded"):
        objectstore.publish(path, size=1)
    assert objectstore.head(objectstore.key_for(path)) is None  # nothing under the final key
    assert objectstore.incomplete_uploads() == []  # and the failed upload was aborted


def test_a_garbled_object_is_never_used(s3_storage: dict[str, str]) -> None:
    path = _artifact(100_000)
    data = path.read_bytes()
    objectstore.publish(path)
    key = objectstore.key_for(path)
    # the bucket's copy is replaced behind Mist's back, keeping the recorded sha256 in its metadata
    objectstore.client().put_object(Bucket=objectstore.bucket(), Key=key, Body=b"x" * len(data),
                                    Metadata={"sha256": hashlib.sha256(data).hexdigest()})
    path.unlink()
    with pytest.raises(objectstore.ObjectStoreError, match="not used"):
        objectstore.ensure_local(path)
    assert not path.exists() and not list(path.parent.iterdir())  # no file, no temporary left


def test_presigned_url_serves_ranges(s3_storage: dict[str, str]) -> None:
    path = _artifact(300_000)
    data = path.read_bytes()
    info = objectstore.publish(path)
    assert info is not None
    url = objectstore.presigned_url(path, filename="g.tar.zst", content_type="application/zstd")
    whole = requests.get(url, timeout=10)
    assert whole.status_code == 200 and whole.content == data
    assert 'filename="g.tar.zst"' in whole.headers["Content-Disposition"]
    part = requests.get(url, headers={"Range": "bytes=1000-", "If-Range": info.etag}, timeout=10)
    assert part.status_code == 206 and part.content == data[1000:]


@pytest.mark.django_db
def test_incomplete_uploads_are_invisible_and_swept(s3_storage: dict[str, str]) -> None:
    s3 = objectstore.client()
    key = objectstore.prefix() + "storage/games/g/windows/deltas/1.0__2.0.tar.zst"
    upload = s3.create_multipart_upload(Bucket=objectstore.bucket(), Key=key)
    s3.upload_part(Bucket=objectstore.bucket(), Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 100)
    assert objectstore.head(key) is None  # a killed worker's upload: no object under the final key
    assert objectstore.incomplete_uploads() == [key]
    # moto dates every upload 2010: only our own clock (first seen just now) keeps it from the six-hour sweep
    assert objectstore.abort_stale_uploads() == []
    assert objectstore.abort_stale_uploads(older_than=timedelta(0)) == [key]
    assert objectstore.incomplete_uploads() == []


def test_filesystem_backend_does_nothing(settings: Any, tmp_path: Path) -> None:
    settings.MIST_STORAGE = "filesystem"
    path = _artifact(10)
    assert objectstore.publish(path) is None
    assert objectstore.ensure_local(path) is True
    assert objectstore.ensure_local(path.with_name("absent")) is False
    objectstore.delete(path)  # no error, nothing to do
    assert objectstore.check() == ""


@pytest.mark.django_db
def test_job_recovery_sweeps_an_upload_only_six_hours_after_it_first_saw_it(s3_storage: dict[str, str]) -> None:
    """A running job's own upload must survive the sweep, from whichever worker process it runs: moto (like a
    store whose clock is off) reports every upload as years old; the bench lost a 1 GB archive upload, and the
    fault test a restarted worker's upload, to a sweep that trusted that date alone."""
    from django.core.cache import cache

    from builds.jobs import recover_jobs

    s3 = objectstore.client()
    key = objectstore.prefix() + "cache/archives/g/windows/1.0.tar.zst"
    upload = s3.create_multipart_upload(Bucket=objectstore.bucket(), Key=key)
    recover_jobs()
    recover_jobs()  # no job runs at all: still only just seen
    assert objectstore.incomplete_uploads() == [key]
    seen = objectstore.upload_seen_key(upload["UploadId"])
    cache.set(seen, cache.get(seen) - 6 * 3600 - 1)  # six hours pass
    recover_jobs()
    assert objectstore.incomplete_uploads() == []


def test_a_download_redirect_keeps_what_head_said_of_an_immutable_object(s3_storage: dict[str, str]) -> None:
    path = _artifact(1000, "games/g/windows/base/2.0.tar.zst")
    info = objectstore.publish(path)
    assert info is not None
    assert objectstore.head_cached(info.key, size=info.size, sha256=info.sha256) == info
    # gone behind this process's back (another process removed it): the kept answer stands for a few minutes
    objectstore.client().delete_object(Bucket=objectstore.bucket(), Key=info.key)
    assert objectstore.head_cached(info.key, size=info.size, sha256=info.sha256) == info
    # expecting other bytes under the key (a version pushed again under its name) asks the store again
    assert objectstore.head_cached(info.key, size=info.size + 1, sha256=info.sha256) is None
    # and this process's own delete forgets it at once
    again = objectstore.publish(path)
    assert again is not None and objectstore.head_cached(info.key, size=info.size, sha256=info.sha256) == again
    objectstore.delete(path)
    assert objectstore.head_cached(info.key, size=info.size, sha256=info.sha256) is None
