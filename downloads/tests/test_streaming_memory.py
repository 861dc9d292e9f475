"""Serving a large artifact keeps memory flat: the view streams, it never reads the file whole."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests

from accounts.authentication import token_pair_for
from builds import cache, storage
from downloads.models import DownloadRecord, FullArchive
from downloads.tests.conftest import make_game, make_version

pytestmark = pytest.mark.django_db(transaction=True)

ARTIFACT = 200 * 1024 * 1024
PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _kib(field: str) -> int:
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _reset_peak() -> None:
    # Writing 5 resets VmHWM (the peak RSS) to the current RSS (Linux >= 4.0).
    CLEAR_REFS.write_text("5")


@pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs Linux /proc/self/clear_refs to measure peak RSS")
def test_a_200_mb_download_does_not_grow_the_process(live_server: Any, friend: Any) -> None:
    # given: a 200 MB sparse archive (no disk blocks, no time to write it), recorded like a real one
    game = make_game("game")
    version = make_version(game, "1.0", {"a": b"a"})
    path = storage.archive_path("game", "windows", "1.0")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(ARTIFACT)
    digest = hashlib.sha256()
    zeros = bytes(1024 * 1024)
    for _ in range(ARTIFACT // len(zeros)):
        digest.update(zeros)
    entry = cache.register(key=f"archive:{version.pk}", path=path, size=ARTIFACT, pinned=True)
    FullArchive.objects.create(version=version, relpath=entry.relpath, size=ARTIFACT, sha256=digest.hexdigest())
    url = f"{live_server.url}/dl/archive/game/1.0"
    headers = {"Authorization": f"Bearer {token_pair_for(friend)['access']}"}
    requests.get(url, headers={**headers, "Range": "bytes=0-1048575"}, timeout=30).raise_for_status()  # warm up
    del zeros

    # when: the whole thing is downloaded through the live server by a streaming client
    rss_before = _kib("VmRSS")
    _reset_peak()
    received = 0
    client_digest = hashlib.sha256()
    with requests.get(url, headers=headers, stream=True, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(1024 * 1024):
            received += len(chunk)
            client_digest.update(chunk)
    peak = _kib("VmHWM")

    # then: every byte arrived, and the process (server thread and client) stayed far below the artifact's size
    assert received == ARTIFACT
    assert client_digest.hexdigest() == response.headers["X-Mist-SHA256"] == digest.hexdigest()
    growth_mib = (peak - rss_before) / 1024
    # 48 MiB of slack: in a long suite the allocator re-touches freed pages; reading the file whole is 200+.
    assert growth_mib < 48, f"peak RSS grew by {growth_mib:.1f} MiB while serving {ARTIFACT >> 20} MiB"
    record = DownloadRecord.objects.filter(bytes_requested=ARTIFACT).get()
    assert record.bytes_served == ARTIFACT and record.completed
