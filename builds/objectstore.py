"""Object storage: the immutable artifacts in an S3-compatible bucket (MIST_STORAGE=s3), through boto3.

With the default `filesystem` backend every function here is a no-op and the storage and cache folders
are all there is. With `s3`:

- **Publishing.** When an immutable artifact is finished on the local disk (written to a temporary name,
  checksummed, renamed into place, as everywhere in Mist), `publish(path)` writes it to the bucket under
  `<prefix>storage/<path under MIST_STORAGE_ROOT>` or `<prefix>cache/<path under MIST_CACHE_ROOT>`. The same
  atomic rule holds in the bucket: always a multipart upload straight to the final key, every part sent with
  its SHA-256 (the store recomputes it and refuses a part that does not match), the local file hashed as it
  is read, and `CompleteMultipartUpload` (the moment the object appears, all at once) only after the whole
  file's size and SHA-256 match what was recorded. A worker killed mid-upload leaves an incomplete upload
  that no reader can see (`abort_stale_uploads` removes it), never a short object under a final key.
- **Reading.** The local folders become a cache of the bucket for what the worker needs as files (chain
  replay, delta making): `ensure_local(path, sha256)` downloads a missing artifact to a temporary name,
  verifies its SHA-256 and renames it into place.
- **Downloads.** `/dl/...` checks access as always, then answers 302 to a short-lived presigned URL of the
  object (downloads.serving), unless MIST_S3_PROXY is set.
- **Removal.** Removing a version or evicting a cache entry deletes the objects too.

The object's own metadata carries `sha256` (hex), so `storage_check` and a restore can verify it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings

from builds import storage
from mistcore.fsutil import atomic_write, sha256_file

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

logger = logging.getLogger("mist.objectstore")

READ_CHUNK = 1 << 20


class ObjectStoreError(Exception):
    """The bucket refused, lost or garbled an object: the message says which and why."""


def enabled() -> bool:
    return settings.MIST_STORAGE == "s3"


def redirects() -> bool:
    """Downloads answer with a presigned URL (else the server proxies the object)."""
    return enabled() and not settings.MIST_S3_PROXY


def _config() -> tuple[str, str, str, str, str]:
    return (settings.MIST_S3_ENDPOINT_URL, settings.MIST_S3_REGION, settings.MIST_S3_ACCESS_KEY_ID,
            settings.MIST_S3_SECRET_ACCESS_KEY, settings.MIST_S3_PUBLIC_ENDPOINT_URL)


@functools.lru_cache(maxsize=4)
def _client_for(endpoint: str, region: str, key_id: str, secret: str, *, public: str = "") -> S3Client:
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"},  # MinIO, Garage, moto and R2 all take path-style; AWS still does
        connect_timeout=10,
        read_timeout=120,
    )
    return boto3.client(
        "s3",
        endpoint_url=(public or endpoint) or None,
        region_name=region,
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        config=config,
    )


def client() -> S3Client:
    endpoint, region, key_id, secret, _public = _config()
    return _client_for(endpoint, region, key_id, secret)


def _presign_client() -> S3Client:
    endpoint, region, key_id, secret, public = _config()
    return _client_for(endpoint, region, key_id, secret, public=public)


def bucket() -> str:
    return str(settings.MIST_S3_BUCKET)


def prefix() -> str:
    value = str(settings.MIST_S3_PREFIX or "")
    return value if not value or value.endswith("/") else value + "/"


def key_for(path: Path) -> str:
    """The object key of a file under the storage or cache root."""
    path = Path(path)
    for name, root in (("storage", storage.storage_root()), ("cache", storage.cache_root())):
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        return f"{prefix()}{name}/{rel.as_posix()}"
    raise ObjectStoreError(f"{path} is under neither the storage nor the cache root")


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str  # from the object's metadata
    etag: str


def head(key: str) -> ObjectInfo | None:
    """The object's size, recorded sha256 and ETag; None if there is no such object."""
    from botocore.exceptions import ClientError

    try:
        found = client().head_object(Bucket=bucket(), Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise ObjectStoreError(f"the bucket did not answer for {key}: {exc}") from None
    return ObjectInfo(key=key, size=int(found["ContentLength"]), sha256=found.get("Metadata", {}).get("sha256", ""),
                      etag=str(found.get("ETag", "")))


# Objects under a final key never change (a new build is a new key): what a HEAD said of one is kept a few
# minutes per process, so a download's redirect does not wait for the store each time. Only found objects
# are kept, `delete` forgets its key here (another process forgets it when the entry expires; the download
# view checks the database's row first, so a removed artifact is refused before this is read).
_HEAD_SECONDS = 300.0
_heads: dict[str, tuple[float, ObjectInfo]] = {}


def head_cached(key: str, *, size: int, sha256: str) -> ObjectInfo | None:
    """`head(key)`, answered from this process's memory when it found the object, with this size and sha256, in
    the last few minutes. (A version removed and pushed again under its name reuses the key with other bytes:
    a kept answer that does not match what the caller expects is asked again.)"""
    now = time.monotonic()
    kept = _heads.get(key)
    if kept is not None and kept[0] > now and kept[1].size == size and kept[1].sha256 in ("", sha256):
        return kept[1]
    info = head(key)
    if info is None:
        _heads.pop(key, None)
    else:
        if len(_heads) > 10_000:
            _heads.clear()
        _heads[key] = (now + _HEAD_SECONDS, info)
    return info


def forget_kept_heads() -> None:
    """Drop what `head_cached` keeps in this process (what the entries' expiry does after a few minutes)."""
    _heads.clear()


def publish(path: Path, *, sha256: str | None = None, size: int | None = None) -> ObjectInfo | None:
    """Write a finished local artifact to the bucket (see the module docstring for the atomic rule).

    Idempotent: an object already there with the same size and sha256 is kept. No-op on `filesystem`."""
    if not enabled():
        return None
    path = Path(path)
    key = key_for(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ObjectStoreError(f"{path.name}: {actual_size} bytes on disk, {size} recorded: not published")
    sha256 = sha256 or sha256_file(path)
    existing = head(key)
    if existing is not None and existing.size == actual_size and existing.sha256 == sha256:
        return existing
    started = time.monotonic()
    s3 = client()
    upload = s3.create_multipart_upload(Bucket=bucket(), Key=key, Metadata={"sha256": sha256},
                                        ChecksumAlgorithm="SHA256", ContentType="application/octet-stream")
    upload_id = upload["UploadId"]
    try:
        parts: list[CompletedPartTypeDef] = []
        whole = hashlib.sha256()
        sent = 0
        part_size = max(5 << 20, int(settings.MIST_S3_PART_BYTES))
        with open(path, "rb") as fh:
            number = 1
            while True:
                body = fh.read(part_size)
                if not body and number > 1:
                    break
                whole.update(body)
                sent += len(body)
                checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
                answer = s3.upload_part(Bucket=bucket(), Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                                        ChecksumSHA256=checksum)
                parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum})
                number += 1
                if len(body) < part_size:
                    break
        if sent != actual_size or whole.hexdigest() != sha256:
            raise ObjectStoreError(f"{path.name} changed while it was uploaded ({sent} bytes sent, sha256 "
                                   f"{whole.hexdigest()[:12]}..., expected {sha256[:12]}...): not published")
        s3.complete_multipart_upload(Bucket=bucket(), Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        try:
            s3.abort_multipart_upload(Bucket=bucket(), Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - the stale-upload sweep removes it later
            logger.warning("could not abort an upload", extra={"key": key})
        raise
    info = head(key)
    if info is None or info.size != actual_size:
        raise ObjectStoreError(f"{key}: the bucket does not have the object it just completed")
    logger.info("object published", extra={"key": key, "bytes": actual_size,
                                            "seconds": round(time.monotonic() - started, 2)})
    return info


def ensure_local(path: Path, *, sha256: str = "", size: int | None = None) -> bool:
    """Make sure the artifact is on the local disk, downloading it from the bucket if it is not.

    True if the file is there afterwards. The download goes to a temporary name and is renamed into
    place only if its size and sha256 (given, or the object's recorded one) match."""
    path = Path(path)
    if path.is_file():
        return True
    if not enabled():
        return False
    key = key_for(path)
    info = head(key)
    if info is None:
        return False
    want = sha256 or info.sha256
    if size is not None and info.size != size:
        raise ObjectStoreError(f"{key}: {info.size} bytes in the bucket, {size} recorded")
    started = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = client().get_object(Bucket=bucket(), Key=key)["Body"]
    digest = hashlib.sha256()
    got = 0
    with atomic_write(path) as out:
        for chunk in body.iter_chunks(READ_CHUNK):
            digest.update(chunk)
            got += len(chunk)
            out.write(chunk)
        if got != info.size or (want and digest.hexdigest() != want):
            raise ObjectStoreError(f"{key}: the bucket sent {got} bytes with sha256 {digest.hexdigest()[:12]}..., "
                                   f"expected {info.size} bytes, {want[:12]}...: not used")
    logger.info("object fetched", extra={"key": key, "bytes": got, "seconds": round(time.monotonic() - started, 2)})
    return True


def delete(path: Path) -> None:
    """Remove the artifact's object (no-op on `filesystem`, or when there is none)."""
    if not enabled():
        return
    try:
        key = key_for(path)
    except ObjectStoreError:
        return
    _heads.pop(key, None)
    client().delete_object(Bucket=bucket(), Key=key)


def presigned_url(path: Path, *, filename: str, content_type: str) -> str:
    """A short-lived GET URL of the artifact's object, for the friend's own client to follow."""
    disposition = f'attachment; filename="{filename}"'
    return _presign_client().generate_presigned_url(
        "get_object",
        Params={"Bucket": bucket(), "Key": key_for(path), "ResponseContentDisposition": disposition,
                "ResponseContentType": content_type},
        ExpiresIn=int(settings.MIST_S3_PRESIGN_SECONDS),
    )


def iter_objects(under: str = "") -> Any:
    """(key, size) of every object under the prefix (and `under` inside it)."""
    paginator = client().get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket(), Prefix=prefix() + under):
        for item in page.get("Contents", []):
            yield item["Key"], int(item["Size"])


def usage() -> dict[str, int]:
    """Objects and bytes in the bucket under the prefix (the admin dashboard shows it)."""
    count = total = 0
    for _key, size in iter_objects():
        count += 1
        total += size
    return {"objects": count, "bytes": total}


def upload_seen_key(upload_id: str) -> str:
    """The cache key holding when this server first saw an incomplete upload (see abort_stale_uploads)."""
    return f"mist:s3-upload-seen:{hashlib.sha256(upload_id.encode()).hexdigest()}"


def abort_stale_uploads(*, older_than: timedelta = timedelta(hours=6)) -> list[str]:
    """Abort incomplete uploads (of a worker that was killed mid-upload) started more than `older_than` ago.

    "Started" is judged twice: by the store's `Initiated` date and by when this server first saw the upload
    (kept in the shared cache). A store whose clock is off, or that dates every upload in the past as moto
    does, would otherwise let a sweep abort a live upload of another worker; with both, an upload is aborted
    only when it has been incomplete for `older_than` by our own clock too."""
    if not enabled():
        return []
    from django.core.cache import cache

    s3 = client()
    now = datetime.now(UTC)
    cutoff = now - older_than
    aborted = []
    answer = s3.list_multipart_uploads(Bucket=bucket(), Prefix=prefix())
    for upload in answer.get("Uploads", []):
        seen_key = upload_seen_key(upload["UploadId"])
        first_seen = cache.get(seen_key)
        if first_seen is None:
            first_seen = now.timestamp()
            cache.set(seen_key, first_seen, timeout=7 * 24 * 3600)
        initiated = upload.get("Initiated")
        if (initiated is not None and initiated > cutoff) or first_seen > cutoff.timestamp():
            continue
        s3.abort_multipart_upload(Bucket=bucket(), Key=upload["Key"], UploadId=upload["UploadId"])
        cache.delete(seen_key)
        aborted.append(upload["Key"])
    if aborted:
        logger.warning("aborted incomplete uploads", extra={"keys": ",".join(aborted)})
    return aborted


def incomplete_uploads() -> list[str]:
    """Keys with an upload started and not completed (what a killed worker leaves; invisible to readers)."""
    answer = client().list_multipart_uploads(Bucket=bucket(), Prefix=prefix())
    return [u["Key"] for u in answer.get("Uploads", [])]


def check() -> str:
    """"" if the bucket answers and we may write to it; else why not (readiness and storage_check)."""
    if not enabled():
        return ""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client().head_bucket(Bucket=bucket())
    except (BotoCoreError, ClientError) as exc:
        return f"bucket {bucket()} at {settings.MIST_S3_ENDPOINT_URL or 'AWS'}: {exc}"
    return ""
