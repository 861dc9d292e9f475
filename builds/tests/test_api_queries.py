"""The patcher's read endpoints cost a fixed number of queries, however many games and files there are."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from builds import manifest_cache
from builds.models import FileEntry, Version
from catalog.models import Game, GameGrant

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_manifest_cache() -> Iterator[None]:
    manifest_cache.clear()
    yield
    manifest_cache.clear()


def _version(game: Game, seq: int, *, files: int = 3, status: str = Version.Status.READY,
             published: bool = True, parent: Version | None = None) -> Version:
    name = f"1.{seq}"
    version = Version.objects.create(
        game=game, name=name, seq=seq, parent=parent, status=status, published=published,
        total_size=files * 100, file_count=files, content_hash=hashlib.sha256(f"{game.slug}/{name}".encode()).hexdigest(),
        manifest_sha256=hashlib.sha256(f"manifest {game.slug}/{name}".encode()).hexdigest(),
        ready_at=timezone.now() if status == Version.Status.READY else None,
    )
    FileEntry.objects.bulk_create(
        FileEntry(version=version, path=f"data/{i:05d}.pak", size=100, sha256=hashlib.sha256(f"{name}{i}".encode()).hexdigest())
        for i in range(files)
    )
    return version


def _catalog(count: int, *, friend: Any, start: int = 0) -> None:
    """`count` games, every fourth private (half of those granted to the friend), three versions each."""
    for i in range(start, start + count):
        game = Game.objects.create(slug=f"game-{i:03d}", title=f"Game {i:03d}", is_private=i % 4 == 0)
        if i % 8 == 0:
            GameGrant.objects.create(game=game, user=friend)
        v1 = _version(game, 1)
        v2 = _version(game, 2, parent=v1)
        _version(game, 3, parent=v2, published=False)  # only admins see it


def test_games_list_costs_four_queries_for_3_or_40_games(friend: Any, friend_api: Any,
                                                          django_assert_max_num_queries: Any) -> None:
    # given a small catalog
    _catalog(3, friend=friend)
    friend_api.get("/api/v1/games")  # warm the connection
    # when / then: user, games (with the latest visible version's id), those versions
    with django_assert_max_num_queries(4):  # user, games, latest versions, platforms
        small = friend_api.get("/api/v1/games").json()["games"]
    # given thirteen times as many games
    _catalog(37, friend=friend, start=3)
    with django_assert_max_num_queries(4):
        big = friend_api.get("/api/v1/games").json()["games"]
    assert len(small) == 3 and len(big) == 35  # ungranted private games (4, 12, ... 36) stay hidden
    assert [g["slug"] for g in big] == sorted(g["slug"] for g in big)  # by title (the titles sort like the slugs)
    assert {g["latest_version"] for g in big} == {"1.2"}  # the unpublished 1.3 is not the friend's latest


def test_games_list_latest_version_follows_visibility(friend: Any, friend_api: Any, admin_api: Any) -> None:
    game = Game.objects.create(slug="solo", title="Solo")
    v1 = _version(game, 1)
    v2 = _version(game, 2, parent=v1, published=False)
    _version(game, 3, parent=v2, status=Version.Status.PENDING)
    Game.objects.create(slug="empty", title="Empty")

    def latest(client: Any) -> dict[str, Any]:
        return {g["slug"]: (g["latest_version"], g["latest_size"]) for g in client.get("/api/v1/games").json()["games"]}

    assert latest(friend_api) == {"solo": ("1.1", 300), "empty": (None, None)}
    assert latest(admin_api) == {"solo": ("1.2", 300), "empty": (None, None)}  # ready, unpublished; never pending


def test_manifest_endpoint_reads_the_files_once_per_version(django_assert_max_num_queries: Any,
                                                             friend_api: Any) -> None:
    # given versions of 10 and 2,000 files
    game = Game.objects.create(slug="files", title="Files")
    small = _version(game, 1, files=10)
    _version(game, 2, files=2000, parent=small)
    for name, files in (("1.1", 10), ("1.2", 2000)):
        url = f"/api/v1/games/files/versions/{name}/manifest"
        # when: the first request reads the file rows, the next ones do not
        with django_assert_max_num_queries(4):  # user, game, version, files
            first = friend_api.get(url)
        with django_assert_max_num_queries(3):
            again = friend_api.get(url)
        # then
        assert first.content == again.content
        assert len(again.json()["files"]) == files


def test_a_reused_version_name_never_gets_the_old_files(friend_api: Any) -> None:
    # given a version whose manifest is cached
    game = Game.objects.create(slug="reuse", title="Reuse")
    old = _version(game, 1, files=3)
    assert len(friend_api.get("/api/v1/games/reuse/versions/1.1/manifest").json()["files"]) == 3
    # when it is removed and another build is pushed under the same name
    old.delete()
    _version(game, 1, files=5)
    # then
    assert len(friend_api.get("/api/v1/games/reuse/versions/1.1/manifest").json()["files"]) == 5


def test_the_manifest_cache_is_bounded_by_file_records() -> None:
    cache: manifest_cache.WeightedLRU[str] = manifest_cache.WeightedLRU(max_weight=10)
    cache.put("a", "A", weight=4)
    cache.put("b", "B", weight=4)
    assert cache.get("a") == "A"  # now b is the least recently used
    cache.put("c", "C", weight=4)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    assert cache.weight == 8
    cache.put("huge", "H", weight=11)  # larger than the whole budget: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2
