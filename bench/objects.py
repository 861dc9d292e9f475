"""Item 12 (issue 17): object storage, measured against a real S3-compatible server on loopback (moto's
standalone server, the one the tests use; a MinIO or R2 will have other absolute numbers).

- **Download through a presigned URL / straight from the S3 server.** A friend's download of the full archive
  with MIST_STORAGE=s3: `GET /dl/archive/...` (access check, a 302 with the presigned URL) and then the object
  from the store, against a presigned GET of the same object made directly with boto3 (what the store alone
  can do). Ratio of throughputs; target >= 0.95.
- **Worker delta time, s3 / filesystem.** The same push (1.0 then 1.1 of the generated data set) on two
  scratch installations, one per backend; the direct delta job's time from its row (started -> finished),
  which on s3 includes writing the bundle and the manifest to the bucket. Target <= 1.3.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from bench.report import Row, mb, rate
from bench.server import FRIEND, Stack, postgres_problem

if TYPE_CHECKING:
    from bench.items import Context, Pair

DOWNLOAD_TARGET = 0.95
DELTA_TARGET = 1.3
RUNS = 6  # alternating which of the two goes first: the first GET after a pause runs slower on 2 cores

_JOB_TIME = """
import json
from builds.models import Job
job = Job.objects.get(kind=Job.Kind.DIRECT_DELTA, status=Job.Status.DONE)
print(json.dumps({"seconds": (job.finished_at - job.started_at).total_seconds()}))
"""


def _stack(ctx: Context, pair: Pair, env: dict[str, str], name: str) -> tuple[Stack, float]:
    """A scratch installation with 1.0 and 1.1 pushed and processed; (stack, direct delta job seconds)."""
    scratch = Path(tempfile.mkdtemp(dir=ctx.work, prefix=f"objects-{name}-"))
    st = Stack(scratch=scratch, log=ctx.say, keep_logs=ctx.work / "logs" / f"objects-{name}")
    st.env.update(env)
    st.__enter__()
    try:
        st.setup(filler_games=0)
        st.new_game("bench")
        st.push("bench", "1.0", pair.old)
        st.start_worker()
        st.start_gunicorn("plain", accel=False)
        token = st.token("plain", FRIEND)
        # 1.0 and its archive first, so the delta job of 1.1 runs alone on both backends
        st.wait_for("plain", token, slug="bench", version="1.0", timeout=3600)
        st.push("bench", "1.1", pair.new)
        st.wait_for("plain", token, slug="bench", version="1.1", timeout=3600)
        out = st.manage("shell", "-c", _JOB_TIME, log_name="job-time").output
        seconds = float(json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])["seconds"])
        return st, seconds
    except BaseException:
        st.close()
        raise


def _timed_get(url: str, expect: int) -> float:
    from bench.items import _download

    seconds, _first, _headers = _download(url, {}, expect)
    return seconds


def item12(ctx: Context) -> None:
    from mist.testing.s3 import S3Server, moto_command

    problem = postgres_problem() or (None if moto_command() else "moto[server] is not installed")
    if problem:
        ctx.row(Row("12", "object storage", "-", None, detail=problem))
        return
    pair = ctx.generated("gen-100M" if ctx.quick else "gen-1G")
    logs = ctx.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = S3Server(logs / "moto.log").start()
    try:
        fs, fs_seconds = _stack(ctx, pair, {}, "fs")
        fs.close()
        bucket = server.new_bucket()
        s3, s3_seconds = _stack(ctx, pair, server.settings_for(bucket), "s3")
        try:
            _measure(ctx, s3, server, bucket, pair, fs_seconds, s3_seconds)
        finally:
            s3.close()
    finally:
        server.stop()


def _measure(ctx: Context, st: Stack, server: Any, bucket: str, pair: Pair, fs_seconds: float,
             s3_seconds: float) -> None:
    import boto3

    from mist.testing import s3 as s3test

    token = st.token("plain", FRIEND)
    info = requests.get(st.url("plain", "/api/v1/games/bench/versions/1.1/archive"),
                        headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
    size = int(info["size"])
    key = "mist/cache/archives/bench/windows/1.1.tar.zst"
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name=s3test.REGION,
                          aws_access_key_id=s3test.ACCESS_KEY, aws_secret_access_key=s3test.SECRET_KEY)
    via_mist, direct, redirects, objects = [], [], [], []
    for _ in range(3):  # warm up: each gunicorn worker makes its S3 client once, not per download
        requests.get(st.url("plain", info["url"]), headers={"Authorization": f"Bearer {token}"},
                     allow_redirects=False, timeout=30)
    def through_mist() -> None:
        started = time.perf_counter()
        answer = requests.get(st.url("plain", info["url"]), headers={"Authorization": f"Bearer {token}"},
                              allow_redirects=False, timeout=30)
        if answer.status_code != 302:
            raise RuntimeError(f"/dl/ answered {answer.status_code}, not a redirect: {answer.text[:300]}")
        redirect = time.perf_counter() - started
        redirects.append(redirect)
        got = _timed_get(answer.headers["Location"], size)
        objects.append(got)
        via_mist.append(redirect + got)

    def straight() -> None:
        url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600)
        direct.append(_timed_get(url, size))

    for run in range(RUNS):
        for measure in ((through_mist, straight) if run % 2 == 0 else (straight, through_mist)):
            measure()
    mist_s, direct_s = statistics.median(via_mist), statistics.median(direct)
    ratio = direct_s / mist_s  # throughput via Mist / throughput straight from the store
    ctx.row(Row("12", "archive download via /dl/ redirect / presigned GET straight from the S3 server", pair.name,
                ratio, f">= {DOWNLOAD_TARGET}", ratio >= DOWNLOAD_TARGET,
                f"{mb(size)}: via Mist {rate(size, mist_s)} ({mist_s:.3f}s incl. the 302), direct "
                f"{rate(size, direct_s)} ({direct_s:.3f}s); the 302 itself {statistics.median(redirects) * 1000:.0f} ms, "
                f"the object GET after it {statistics.median(objects):.3f}s; "
                f"median of {RUNS} each, alternating which goes first; moto on loopback"))
    t_ratio = s3_seconds / max(fs_seconds, 1e-6)
    ctx.row(Row("12", "worker direct delta time, MIST_STORAGE=s3 / filesystem", pair.name, t_ratio,
                f"<= {DELTA_TARGET}", t_ratio <= DELTA_TARGET,
                f"s3 {s3_seconds:.2f}s (bundle and manifest written to the bucket) vs filesystem {fs_seconds:.2f}s; "
                "the job row's started -> finished"))
