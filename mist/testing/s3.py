"""A real S3-compatible server on loopback for the tests and `./dev s3`: moto's standalone server
(`moto[server]`, a Flask app speaking the S3 REST protocol over HTTP), never a mocked client.

Each test gets its own bucket on one server per test session, so tests do not see each other's objects.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

ACCESS_KEY = "mist-test-key"
SECRET_KEY = "mist-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def moto_command() -> list[str] | None:
    """How to start the server here, or None if moto[server] is not installed."""
    exe = Path(sys.executable).with_name("moto_server")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("moto_server")
    return [found] if found else None


class S3Server:
    """`moto_server -H 127.0.0.1 -p PORT` in its own process group; `stop()` ends it."""

    def __init__(self, log_path: Path, port: int | None = None) -> None:
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> S3Server:
        command = moto_command()
        if command is None:
            raise RuntimeError("moto[server] is not installed (pip install 'moto[server]'; ./dev setup does it)")
        log = open(self.log_path, "ab")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        self.proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited ({self.proc.returncode}): {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def new_bucket(self) -> str:
        import boto3

        name = f"mist-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY)
        client.create_bucket(Bucket=name)
        return name

    def settings_for(self, bucket: str) -> dict[str, str]:
        """The environment (and Django settings, same names) of a Mist on this server and bucket."""
        return {
            "MIST_STORAGE": "s3",
            "MIST_S3_ENDPOINT_URL": self.endpoint,
            "MIST_S3_BUCKET": bucket,
            "MIST_S3_REGION": REGION,
            "MIST_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "MIST_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "MIST_S3_PREFIX": "mist/",
        }


def main() -> int:
    """`./dev s3`: run a local S3-compatible server for trying MIST_STORAGE=s3 (see docs/RUNBOOK.md)."""
    port = int(os.environ.get("MIST_S3_PORT", "9000"))
    log = Path(os.environ.get("MIST_S3_LOG", "var/s3-server.log"))
    log.parent.mkdir(parents=True, exist_ok=True)
    server = S3Server(log, port=port).start()
    bucket = os.environ.get("MIST_S3_BUCKET", "mist")
    import boto3

    client = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket=bucket)
    print(f"S3-compatible server (moto) on {server.endpoint}, bucket {bucket!r}; log {log}. Run Mist with:")
    for name, value in server.settings_for(bucket).items():
        print(f"  export {name}={value}")
    print("Ctrl-C stops it (moto keeps objects in memory: they are gone when it stops).")
    try:
        assert server.proc is not None
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
