"""Fixtures for the downloads tests: games, versions with real files on disk, bundles, archives.

Everything is written the way the builds and deltas apps lay it out (builds.storage), so these
tests need none of the push or delta code to run: a version's tree is written straight into
storage/games/<slug>/trees/<version>/ (or the cache, for an older version), with matching rows.
"""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from builds import cache, storage
from builds.models import FileEntry, Job, Version
from catalog.models import Game, GameGrant
from deltas.models import DirectDelta
from downloads import services
from downloads.models import FullArchive


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_game(slug: str = "game", *, private: bool = False, title: str | None = None) -> Game:
    return Game.objects.create(slug=slug, title=title or slug.title(), is_private=private)


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if rel.endswith(".sh"):
            os.chmod(path, 0o755)


def make_version(
    game: Game,
    name: str,
    files: dict[str, bytes],
    *,
    status: str = Version.Status.READY,
    published: bool = True,
    where: str = "tree",
) -> Version:
    """A version with FileEntry rows and its files on disk: in its storage tree, or in the cache."""
    previous = game.versions.order_by("-seq").first()
    version = Version.objects.create(
        game=game,
        name=name,
        seq=(previous.seq + 1) if previous else 1,
        parent=previous,
        status=status,
        published=published,
        file_count=len(files),
        total_size=sum(len(d) for d in files.values()),
        content_hash=sha256(repr(sorted(files)).encode() + name.encode()),
        ready_at=timezone.now() if status == Version.Status.READY else None,
    )
    FileEntry.objects.bulk_create(
        FileEntry(version=version, path=p, size=len(d), sha256=sha256(d), executable=p.endswith(".sh"))
        for p, d in files.items()
    )
    if where == "tree":
        write_tree(storage.tree_dir(game.slug, "windows", name), files)
    elif where == "cache":
        root = storage.cached_version_dir(game.slug, "windows", name)
        write_tree(root, files)
        cache.register(key=f"version:{version.pk}", path=root, size=version.total_size)
    return version


def make_direct_delta(from_version: Version, to_version: Version, payload: bytes) -> DirectDelta:
    """A ready direct delta whose bundle file holds `payload`."""
    slug = to_version.game.slug
    path = storage.delta_bundle_path(slug, "windows", from_version.name, to_version.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return DirectDelta.objects.create(
        from_version=from_version,
        to_version=to_version,
        status=DirectDelta.Status.READY,
        bundle_size=len(payload),
        bundle_sha256=sha256(payload),
        ready_at=timezone.now(),
    )


def make_indirect_job(version: Version, user: Any, payload: bytes, *, status: str = Job.Status.DONE) -> Job:
    """A finished indirect-update job with its bundle in the cache, as the deltas worker leaves it."""
    job_id = uuid.uuid4()
    path = storage.indirect_bundle_path(str(job_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    cache.register(key=f"indirect:{job_id}", path=path, size=len(payload), sha256=sha256(payload))
    return Job.objects.create(
        id=job_id,
        kind=Job.Kind.INDIRECT,
        key=f"indirect:{job_id}",
        task="deltas.tasks.make_indirect_bundle",
        game=version.game,
        version=version,
        requested_by=user,
        status=status,
        result={
            "path": str(path.relative_to(storage.cache_root())),
            "size": len(payload),
            "sha256": sha256(payload),
        }
        if status == Job.Status.DONE
        else {},
    )


def grant(user: Any, game: Game) -> GameGrant:
    return GameGrant.objects.create(user=user, game=game)


def random_bytes(n: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes (so an archive is about as large as its content)."""
    return random.Random(seed).randbytes(n)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """Persona fixtures hash passwords: Argon2 costs ~0.5 s a user on this box, MD5 nothing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def game(db: None) -> Game:
    return make_game("game")


@pytest.fixture
def files() -> dict[str, bytes]:
    return {
        "bin/game.sh": b"#!/bin/sh\necho game\n",
        "data/level1.dat": bytes(range(256)) * 40,
        "readme.txt": b"hello friends\n",
    }


@pytest.fixture
def version(game: Game, files: dict[str, bytes]) -> Version:
    return make_version(game, "1.0", files)


@pytest.fixture
def archive(version: Version) -> FullArchive:
    return services.build_archive(version=version)
