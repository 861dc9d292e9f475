"""Issue 18 point 3: two finalizes of one upload, or a chunk PUT during a finalize, raced on renaming the
`.part` file and both answered 500. The session row is locked: one finalize runs, the others get 409 with
the session's state. Real HTTP against a live server, real PostgreSQL row locks, real threads."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from builds.models import UploadSession, Version
from catalog.models import Game


def _zip_build(path: Path, *, megabytes: int) -> bytes:
    # stored, random: copying and hashing it keeps the first finalize busy long enough to race it
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(megabytes):
            zf.writestr(f"data/{i:03d}.bin", os.urandom(1 << 20))
        zf.writestr("game.exe", b"MZ" + os.urandom(1000))
    return path.read_bytes()


@pytest.fixture
def uploaded(live_server: Any, admin_user: Any, tmp_path: Path) -> tuple[requests.Session, str, bytes]:
    from accounts.authentication import token_pair_for

    Game.objects.create(slug="race-game", title="Race Game")
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token_pair_for(admin_user)['access']}"
    data = _zip_build(tmp_path / "build.zip", megabytes=48)
    body: dict[str, Any] = {"game": "race-game", "version": "1.0", "filename": "build.zip", "total_size": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}
    created = http.post(f"{live_server.url}/api/v1/builds/uploads", json=body, timeout=30)
    assert created.status_code == 201, created.text
    url = f"{live_server.url}/api/v1/builds/uploads/{created.json()['id']}"
    last = len(data) - 2
    r = http.put(url, data=data[:-1], headers={"Content-Range": f"bytes 0-{last}/{len(data)}"}, timeout=60)
    assert r.status_code == 200, r.text
    return http, url, data


def test_concurrent_finalizes_run_once_and_the_others_get_409(uploaded: Any) -> None:
    http, url, data = uploaded
    r = http.put(url, data=data[-1:], headers={"Content-Range": f"bytes {len(data) - 1}-{len(data) - 1}/{len(data)}"},
                 timeout=30)
    assert r.status_code == 200
    barrier = threading.Barrier(3)
    answers: list[requests.Response] = []

    def finalize() -> None:
        barrier.wait()
        answers.append(http.post(url + "/finalize", timeout=120))

    threads = [threading.Thread(target=finalize) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers)
    assert codes == [202, 409, 409], [(a.status_code, a.text[:200]) for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["status"] in ("finalizing", "done"), refused.text
    assert Version.objects.filter(game__slug="race-game", name="1.0").count() == 1
    assert http.get(url, timeout=30).json()["status"] == "done"


def test_a_chunk_during_finalize_gets_409_with_the_state(uploaded: Any) -> None:
    http, url, data = uploaded
    # finalize needs the whole upload: send the last byte, then finalize in the background
    last = len(data) - 1
    assert http.put(url, data=data[-1:], headers={"Content-Range": f"bytes {last}-{last}/{len(data)}"},
                    timeout=30).status_code == 200
    done: list[requests.Response] = []
    worker = threading.Thread(target=lambda: done.append(http.post(url + "/finalize", timeout=120)))
    worker.start()
    deadline = time.monotonic() + 30
    while UploadSession.objects.get().status == UploadSession.Status.OPEN and time.monotonic() < deadline:
        time.sleep(0.005)
    chunk = http.put(url, data=b"x", headers={"Content-Range": f"bytes {last}-{last}/{len(data)}"}, timeout=30)
    worker.join()
    assert chunk.status_code == 409, chunk.text
    assert chunk.json()["status"] in ("finalizing", "done")
    assert done[0].status_code == 202, done[0].text
    assert Version.objects.filter(game__slug="race-game", name="1.0").count() == 1


def test_a_crash_inside_finalize_gives_the_upload_back(uploaded: Any, monkeypatch: Any) -> None:
    """An unexpected error (not a refused build) must not leave the session stuck in 'finalizing'."""
    from builds import uploads

    http, url, data = uploaded
    last = len(data) - 1
    http.put(url, data=data[-1:], headers={"Content-Range": f"bytes {last}-{last}/{len(data)}"}, timeout=30)
    session = UploadSession.objects.get()

    def boom(**_kw: Any) -> Any:
        raise RuntimeError("disk controller on fire")

    monkeypatch.setattr(uploads, "push_version", boom)
    with pytest.raises(RuntimeError):
        uploads.finalize_upload(session=session, user=session.created_by)
    session.refresh_from_db()
    assert session.status == UploadSession.Status.OPEN
    assert uploads.upload_path(session).stat().st_size == len(data)  # nothing lost
    monkeypatch.undo()
    assert http.post(url + "/finalize", timeout=120).status_code == 202
