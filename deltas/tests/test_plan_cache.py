"""The update plan: a fixed number of queries whatever the files and the chain, and never a stale answer
after a push, a removal or a delta changing state (the caches are keyed, not invalidated)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from builds import manifest_cache
from builds.models import FileEntry, Version
from builds.services import push_version
from catalog.models import Game
from deltas import plan_cache
from deltas.models import DirectDelta
from deltas.services import make_direct_delta, plan_update, remove_version
from deltas.tests.conftest import process_inline
from mist.testing.gamedata import next_version
from mistcore.manifest import Manifest


@pytest.fixture(autouse=True)
def empty_caches() -> Iterator[None]:
    manifest_cache.clear()
    plan_cache.clear()
    yield
    manifest_cache.clear()
    plan_cache.clear()


def _plan(client: Any, body: dict[str, Any], slug: str = "trio") -> dict[str, Any]:
    response = client.post(f"/api/v1/games/{slug}/updates", body, format="json")
    assert response.status_code == 200, response.content
    return dict(response.json())


def _history(slug: str, *, versions: int, files: int) -> Game:
    """A game of `versions` ready versions of `files` files each (a tenth changing each time), with direct deltas."""
    game = Game.objects.create(slug=slug, title=slug)
    parent = None
    for seq in range(1, versions + 1):
        version = Version.objects.create(
            game=game, name=f"1.{seq}", seq=seq, parent=parent, status=Version.Status.READY, published=True,
            total_size=files * 1000, file_count=files, ready_at=timezone.now(),
            content_hash=hashlib.sha256(f"{slug}{seq}".encode()).hexdigest(),
            manifest_sha256=hashlib.sha256(f"manifest {slug}{seq}".encode()).hexdigest(),
        )
        FileEntry.objects.bulk_create(
            FileEntry(version=version, path=f"data/{i:05d}.pak", size=1000,
                      sha256=hashlib.sha256(f"{i}-{seq if i % 10 == seq % 10 else 0}".encode()).hexdigest())
            for i in range(files)
        )
        if parent is not None:
            DirectDelta.objects.create(from_version=parent, to_version=version, status=DirectDelta.Status.READY,
                                       bundle_size=files * 10, bundle_sha256=f"{seq:064d}")
        parent = version
    return game


@pytest.mark.django_db
@pytest.mark.parametrize(("versions", "files"), [(2, 5), (12, 1500)])
def test_plan_queries_do_not_grow_with_files_or_chain(versions: int, files: int, friend_api: Any,
                                                      django_assert_max_num_queries: Any) -> None:
    # given a history of 1 or 11 direct deltas between versions of 5 or 1,500 files
    _history("long", versions=versions, files=files)
    friend_api.get("/healthz")
    # when the first request reads both manifests: user, game, target, installed version, chain, 2 x files,
    # and the jump lookup; over a chain of several deltas it also queues the jump delta once (job, its
    # django-q task, the pending row: 13 more, a one-time cost per pair of versions)
    with django_assert_max_num_queries(8 if versions == 2 else 21):
        cold = _plan(friend_api, {"from_version": "1.1"}, slug="long")
    # then every later one reads no file rows: user, game, target, installed version, chain, jump lookups
    with django_assert_max_num_queries(5 if versions == 2 else 7):
        warm = _plan(friend_api, {"from_version": "1.1"}, slug="long")
    cold.pop("jump")
    warm.pop("jump")
    assert cold == warm
    assert warm["route"] == "direct" and len(warm["steps"]) == versions - 1
    assert warm["steps"][-1]["url"] == f"/dl/direct/long/windows/1.{versions - 1}__1.{versions}"


def test_a_new_push_changes_the_plan(three_versions: dict[str, Any], friend_api: Any, tmp_path: Any) -> None:
    # given a cached plan from 1 to the latest, 3
    assert [s["to_version"] for s in _plan(friend_api, {"from_version": "1"})["steps"]] == ["2", "3"]
    game = three_versions["game"]
    source = next_version(three_versions["sources"]["3"], tmp_path / "src" / "4", seed=31, step=3)
    # when 4 is pushed: not ready yet, so not offered
    v4 = push_version(game=game, name="4", source=source).version
    assert _plan(friend_api, {"from_version": "1"})["to_version"] == "3"
    # then, once its delta is made, the same request leads to 4
    process_inline(v4)
    plan = _plan(friend_api, {"from_version": "1"})
    assert plan["to_version"] == "4"
    assert [(s["from_version"], s["to_version"]) for s in plan["steps"]] == [("1", "2"), ("2", "3"), ("3", "4")]
    assert _plan(friend_api, {"from_version": "3"})["steps"][0]["url"] == "/dl/direct/trio/windows/3__4"


def test_removing_a_version_relinks_the_plan(three_versions: dict[str, Any], friend_api: Any) -> None:
    # given a cached plan 1 -> 2 -> 3
    before = _plan(friend_api, {"from_version": "1", "to_version": "3"})
    assert [s["url"] for s in before["steps"]] == ["/dl/direct/trio/windows/1__2", "/dl/direct/trio/windows/2__3"]
    # when 2 is removed: 3 waits for its new delta from 1, the latest ready version is 1
    remove_version(version=Version.objects.get(name="2"))
    assert _plan(friend_api, {"from_version": "1"})["route"] == "none"
    assert friend_api.post("/api/v1/games/trio/updates", {"from_version": "1", "to_version": "3"},
                           format="json").status_code == 404
    # then the new delta is the one hop offered
    delta = make_direct_delta(to_version=Version.objects.get(name="3"))
    after = _plan(friend_api, {"from_version": "1", "to_version": "3"})
    assert after["route"] == "direct"
    assert after["steps"] == [{
        "kind": "direct", "from_version": "1", "to_version": "3", "url": "/dl/direct/trio/windows/1__3",
        "size": delta.bundle_size, "sha256": delta.bundle_sha256,
    }]
    assert after["indirect"]["paths"] == before["indirect"]["paths"]  # same two manifests: same comparison


def test_a_delta_changing_state_changes_the_plan(three_versions: dict[str, Any], friend_api: Any) -> None:
    # given a cached direct plan 2 -> 3
    assert _plan(friend_api, {"from_version": "2"})["route"] == "direct"
    delta = DirectDelta.objects.get(to_version__name="3")
    # when the delta is being made again (not ready): no direct route
    DirectDelta.objects.filter(pk=delta.pk).update(status=DirectDelta.Status.PENDING)
    plan = _plan(friend_api, {"from_version": "2"})
    assert plan["route"] in {"jump", "indirect", "full"} and "direct" not in plan["alternatives"]
    # then, ready again with another bundle, the plan carries the new size and sha256
    DirectDelta.objects.filter(pk=delta.pk).update(status=DirectDelta.Status.READY, bundle_size=1234,
                                                   bundle_sha256="f" * 64)
    plan = _plan(friend_api, {"from_version": "2"})
    assert plan["route"] == "direct" and plan["alternatives"]["direct"] == 1234
    assert plan["steps"][0]["size"] == 1234 and plan["steps"][0]["sha256"] == "f" * 64


def test_cached_and_fresh_plans_agree(three_versions: dict[str, Any]) -> None:
    game = three_versions["game"]
    versions = {v.name: v for v in Version.objects.filter(game=game)}
    for old, new in [("1", "3"), ("3", "1"), ("2", "3"), ("1", "2")]:
        fresh = plan_update(game=game, from_version=versions[old], to_version=versions[new])
        cached = plan_update(game=game, from_version=versions[old], to_version=versions[new])
        assert plan_cache.cached_estimate(from_version=versions[old], to_version=versions[new]) is not None
        assert fresh == cached


def test_a_client_manifest_is_compared_but_not_kept(three_versions: dict[str, Any]) -> None:
    game = three_versions["game"]
    v1, v3 = Version.objects.get(name="1"), Version.objects.get(name="3")
    local = manifest_cache.cached_manifest(version=v1)
    edited = Manifest(version="1", files=local.files[1:])  # one file lost on the friend's disk
    plan = plan_update(game=game, from_version=None, to_version=v3, local_manifest=edited)
    by_version = plan_update(game=game, from_version=v1, to_version=v3)
    assert set(plan.indirect_paths) == set(by_version.indirect_paths) | {local.files[0].path}
    assert len(plan_cache._estimates) == 1  # only the version pair's comparison
