"""Release announcements reach a (local, real HTTP) Discord webhook; a failing one never blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from builds.announce import send_announcement
from builds.models import Job, Version
from builds.services import push_version
from catalog.models import Game
from mist.testing.fakes import recording_server
from mist.testing.gamedata import make_build, next_version
from mist.testing.worker import WorkerCluster


@pytest.fixture
def version(db: None, tmp_path: Path) -> Version:
    game = Game.objects.create(slug="hook", title="Hook Game")
    v1 = make_build(tmp_path / "v1", seed=1)
    push_version(game=game, name="1.0", source=v1)
    v = push_version(game=game, name="1.1", source=next_version(v1, tmp_path / "v2", seed=1, step=1),
                     notes="Faster loading.").version
    Version.objects.filter(pk=v.pk).update(update_size=48_000_000, status=Version.Status.READY)
    v.refresh_from_db()
    return v


def test_message_names_game_version_sizes_and_notes(version: Version, settings: Any) -> None:
    with recording_server([204]) as fake:
        settings.DISCORD_WEBHOOK_URL = fake.url
        outcome = send_announcement(version=version, patch_size=version.update_size)
    assert outcome == "sent (HTTP 204)"
    (body,) = fake.json_bodies()
    embed = body["embeds"][0]
    assert embed["title"] == "Hook Game 1.1 is out"
    assert embed["description"] == "Faster loading."
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Version"] == "1.1"
    assert fields["Update"] == "48.0 MB from 1.0"
    assert fields["Size"].endswith("MB")


def test_retries_on_5xx_then_succeeds(version: Version, settings: Any) -> None:
    with recording_server([502, 500, 204]) as fake:
        settings.DISCORD_WEBHOOK_URL = fake.url
        assert send_announcement(version=version, patch_size=1, attempts=3) == "sent (HTTP 204)"
    assert len(fake.requests) == 3


def test_gives_up_without_raising(version: Version, settings: Any) -> None:
    with recording_server([500]) as fake:
        settings.DISCORD_WEBHOOK_URL = fake.url
        outcome = send_announcement(version=version, patch_size=1, attempts=2)
    assert outcome.startswith("failed after 2 attempt(s): HTTP 500")
    settings.DISCORD_WEBHOOK_URL = "http://127.0.0.1:9/nothing-listens-here"
    assert "network error" in send_announcement(version=version, patch_size=1, attempts=1)


@pytest.mark.django_db(transaction=True)
def test_publishing_through_the_worker_announces_and_a_dead_webhook_does_not_block(
    tmp_path: Path, settings: Any
) -> None:
    with recording_server([500]) as fake:
        settings.DISCORD_WEBHOOK_URL = fake.url
        worker = WorkerCluster(tmp_path / "w.log").start()
        try:
            game = Game.objects.create(slug="dead-hook", title="Dead Hook")
            v = push_version(game=game, name="1.0", source=make_build(tmp_path / "b", seed=2)).version

            def announced() -> bool:
                job = Job.objects.filter(kind=Job.Kind.ANNOUNCE, version=v).first()
                return job is not None and job.is_finished

            worker.wait_for(announced, timeout=90, what="announce job")
        finally:
            worker.stop()
    v.refresh_from_db()
    assert v.status == Version.Status.READY and v.is_visible  # released despite the webhook
    job = Job.objects.get(kind=Job.Kind.ANNOUNCE, version=v)
    assert job.status == Job.Status.DONE and job.result["outcome"].startswith("failed after 3 attempt(s)")
    assert len(fake.requests) == 3
