"""MIST_STORAGE=s3 in operations: the admin dashboard shows the bucket, /readyz checks it (real S3-compatible
server on loopback: moto's standalone server)."""

from __future__ import annotations

import os
from typing import Any

from django.test import Client

from builds import objectstore, storage


def test_dashboard_shows_the_bucket(s3_storage: dict[str, str], admin_client: Client) -> None:
    path = storage.storage_root() / "games" / "g" / "windows" / "base" / "1.0.tar.zst"
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(3000))
    objectstore.publish(path)
    html = admin_client.get("/admin/dashboard/").content.decode().replace("\xa0", " ")
    assert "Object storage (MIST_STORAGE=s3)" in html and s3_storage["MIST_S3_BUCKET"] in html
    assert "1 object, 2.9 KB" in html, html[html.find("bucket-usage") - 200:html.find("bucket-usage") + 300]


def test_dashboard_without_a_bucket_has_no_bucket_row(admin_client: Client) -> None:
    assert "Object storage" not in admin_client.get("/admin/dashboard/").content.decode()


def test_readiness_fails_when_the_bucket_does_not_answer(s3_storage: dict[str, str], client: Client,
                                                         settings: Any, db: None) -> None:
    from mist.health import readiness_checks

    assert readiness_checks()["bucket"] is None
    settings.MIST_S3_BUCKET = "no-such-bucket"
    problem = readiness_checks()["bucket"]
    assert problem and "no-such-bucket" in problem
