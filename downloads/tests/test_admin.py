"""The admin shows download records and archives read-only; the rebuild action queues a build."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from builds.models import Job
from downloads.models import DownloadRecord, FullArchive

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client: Client, admin_user: Any) -> Client:
    client.force_login(admin_user)
    return client


def test_download_records_are_listed_and_read_only(admin_client_: Client, friend: Any) -> None:
    record = DownloadRecord.objects.create(user=friend, kind="archive", artifact="archive:game/1.0", size=10)
    listing = admin_client_.get("/admin/downloads/downloadrecord/")
    assert listing.status_code == 200
    assert b"archive:game/1.0" in listing.content
    assert admin_client_.get("/admin/downloads/downloadrecord/add/").status_code == 403
    detail = admin_client_.get(f"/admin/downloads/downloadrecord/{record.pk}/change/")
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content  # view only
    response = admin_client_.post(f"/admin/downloads/downloadrecord/{record.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert DownloadRecord.objects.filter(pk=record.pk).exists()


def test_rebuild_action_queues_the_archive_again(admin_client_: Client, archive: FullArchive) -> None:
    response = admin_client_.post(
        "/admin/downloads/fullarchive/",
        {"action": "rebuild", "_selected_action": [archive.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Queued 1 archive build" in response.content
    job = Job.objects.get(key=f"archive:{archive.version_id}")
    assert job.status == Job.Status.QUEUED


def test_friends_cannot_open_the_admin(client: Client, friend: Any) -> None:
    client.force_login(friend)
    assert client.get("/admin/downloads/downloadrecord/").status_code == 302
