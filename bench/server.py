"""A throw-away Mist server for the benchmarks: scratch PostgreSQL database, storage and cache
folders, the worker (``manage.py qcluster``), gunicorn (with and without X-Accel-Redirect) and
nginx, all on loopback ports, all stopped and removed by ``close()``.

Configuration comes from the environment only (DATABASE_URL, MIST_STORAGE_ROOT, MIST_CACHE_ROOT,
SECRET_KEY, ALLOWED_HOSTS=127.0.0.1, DEBUG=false), exactly as in production. gunicorn uses
``deploy/gunicorn.conf.py`` and nginx the site rendered from ``deploy/nginx/mist.conf`` by
``deploy/render-nginx.sh``; when those are absent, minimal equivalents written here.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bench.proc import Background, Measured, ProcError, run_measured

REPO = Path(__file__).resolve().parent.parent
PG = {
    "host": os.environ.get("BENCH_PGHOST", "127.0.0.1"),
    "port": os.environ.get("BENCH_PGPORT", "5432"),
    "user": "postgres",
}
ADMIN = ("benchadmin", "bench-admin-" + secrets.token_hex(8))
FRIEND = ("benchfriend", "bench-friend-" + secrets.token_hex(8))

_MINIMAL_GUNICORN = """\
import os
bind = os.environ.get("MIST_BIND", "127.0.0.1:8000").split(",")
workers = int(os.environ.get("MIST_WEB_WORKERS", 3))
worker_class = "gthread"
threads = int(os.environ.get("MIST_WEB_THREADS", 4))
timeout = 120
"""

_MINIMAL_SITE = """\
upstream mist_web {{ server {upstream}; keepalive 16; }}
server {{
    listen {listen};
    sendfile on;
    tcp_nopush on;
    max_ranges 1;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
    location / {{ proxy_pass http://mist_web; }}
    location /_protected/storage/ {{ internal; alias {storage}/; }}
    location /_protected/cache/ {{ internal; alias {cache}/; }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_problem() -> str | None:
    """Why the scratch database cannot be made, or None."""
    for tool in ("createdb", "dropdb", "psql"):
        if shutil.which(tool) is None:
            return f"missing {tool} (apt-get install -y postgresql-client)"
    proc = subprocess.run(
        ["psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-Atc", "select 1", "postgres"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    if proc.returncode != 0:
        return f"PostgreSQL at {PG['host']}:{PG['port']} does not answer: {proc.stderr.strip()[:200]}"
    return None


class Stack:
    """One scratch Mist installation; use as a context manager so everything is cleaned up."""

    def __init__(self, *, scratch: Path, log: Callable[[str], None], keep_logs: Path | None = None) -> None:
        self.scratch = scratch
        self.keep_logs = keep_logs
        self.say = log
        self.db = f"mist_bench_{secrets.token_hex(4)}"
        self.python = sys.executable
        self.storage = scratch / "storage"
        self.cache = scratch / "cache"
        self.logs = scratch / "logs"
        self.worker: Background | None = None
        self.gunicorns: dict[str, tuple[Background, int]] = {}
        self.nginx: Background | None = None
        self.nginx_port = 0
        self.direct_port = 0
        self._db_made = False
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MIST_", "DJANGO_", "DATABASE_"))},
            "DATABASE_URL": f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{self.db}",
            "MIST_STORAGE_ROOT": str(self.storage),
            "MIST_CACHE_ROOT": str(self.cache),
            "MIST_VAR_DIR": str(scratch / "var"),
            "STATIC_ROOT": str(scratch / "static"),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DEBUG": "false",
            "JWT_ACCESS_MINUTES": "600",
            "LOG_LEVEL": "WARNING",
            "MIST_GUNICORN_LOG_LEVEL": "warning",
            "MIST_WORKERS": "2",
            "PYTHONUNBUFFERED": "1",
        }

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        for folder in (self.storage, self.cache, self.logs, self.scratch / "var", self.scratch / "static"):
            folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["createdb", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], self.db], check=True, timeout=60
        )
        self._db_made = True
        self.say(f"scratch database {self.db}, files under {self.scratch}")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop every process started here, drop the database, delete the scratch folder."""
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx = None
        for service, _ in self.gunicorns.values():
            service.stop()
        self.gunicorns.clear()
        self.stop_worker()
        if self._db_made:
            subprocess.run(
                ["dropdb", "--if-exists", "--force", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], self.db],
                timeout=120,
                capture_output=True,
            )
            self._db_made = False
        if self.keep_logs is not None:
            # The services' logs outlive the scratch folder, for a post-mortem.
            shutil.rmtree(self.keep_logs, ignore_errors=True)
            shutil.copytree(self.logs, self.keep_logs, dirs_exist_ok=True)
            nginx_logs = self.scratch / "nginx" / "logs"
            if nginx_logs.is_dir():
                shutil.copytree(nginx_logs, self.keep_logs / "nginx", dirs_exist_ok=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    # --- Django ------------------------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 600, log_name: str | None = None) -> Measured:
        """Run ``manage.py <args>`` in a measured child process; raise with its output on failure."""
        log = self.logs / f"{log_name or args[0]}-{secrets.token_hex(3)}.log"
        result = run_measured([self.python, "manage.py", *args], env=self.env, cwd=REPO, timeout=timeout, log=log)
        return result.check(f"manage.py {' '.join(args)}")

    def setup(self, *, filler_games: int = 20) -> None:
        """Migrate, create the admin, a friend, the bench game and some other games for the list."""
        self.manage("migrate", "--noinput", "-v", "0", timeout=900)
        self.manage("createcachetable")
        script = f"""
from django.contrib.auth import get_user_model
from catalog import services
U = get_user_model()
U.objects.create_superuser({ADMIN[0]!r}, "admin@bench.invalid", {ADMIN[1]!r})
U.objects.create_user({FRIEND[0]!r}, "friend@bench.invalid", {FRIEND[1]!r})
for i in range({filler_games}):
    services.create_game(slug=f"filler-{{i:02d}}", title=f"Filler game {{i}}")
"""
        self.manage("shell", "-c", script, log_name="seed")

    def start_worker(self) -> None:
        if self.worker is None or not self.worker.alive():
            self.worker = Background(
                "worker", [self.python, "manage.py", "qcluster"], env=self.env, cwd=REPO, log=self.logs / "worker.log"
            )

    def stop_worker(self) -> None:
        if self.worker is not None:
            # django-q2 finishes the task in hand on SIGTERM; the scratch data is thrown away anyway.
            self.worker.stop(grace=5)
            self.worker = None

    # --- web -------------------------------------------------------------------------------------

    def _gunicorn_conf(self) -> Path:
        conf = REPO / "deploy" / "gunicorn.conf.py"
        if conf.is_file():
            return conf
        self.say("deploy/gunicorn.conf.py is absent: using a minimal gunicorn config")
        path = self.scratch / "gunicorn.conf.py"
        path.write_text(_MINIMAL_GUNICORN)
        return path

    def start_gunicorn(self, name: str, *, accel: bool, workers: int = 3) -> int:
        port = free_port()
        env = {
            **self.env,
            "MIST_BIND": f"127.0.0.1:{port}",
            "MIST_ACCEL_REDIRECT": "true" if accel else "false",
            "MIST_WEB_WORKERS": str(workers),
        }
        gunicorn = str(Path(self.python).with_name("gunicorn"))
        cmd = [gunicorn, "-c", str(self._gunicorn_conf()), "mist.wsgi:application"]
        service = Background(f"gunicorn-{name}", cmd, env=env, cwd=REPO, log=self.logs / f"gunicorn-{name}.log")
        self.gunicorns[name] = (service, port)
        self._wait_http(f"http://127.0.0.1:{port}/healthz", service)
        return port

    def _wait_http(self, url: str, service: Background, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not service.alive():
                raise ProcError(f"{service.name} exited:\n{service.tail()}")
            try:
                if requests.get(url, timeout=2).status_code < 500:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise ProcError(f"{service.name} did not answer {url} within {timeout:.0f}s:\n{service.tail()}")

    def start_nginx(self, *, upstream_port: int) -> None:
        """nginx with Mist's site in front of gunicorn, plus a bench-only server serving the cache directly."""
        home = self.scratch / "nginx"
        for sub in ("temp", "logs"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        self.nginx_port, self.direct_port = free_port(), free_port()
        values = {
            "MIST_LISTEN": f"127.0.0.1:{self.nginx_port}",
            "MIST_UPSTREAM": f"127.0.0.1:{upstream_port}",
            "MIST_BORDER_PROXY": "127.0.0.1",
            "MIST_STATIC_ROOT": str(self.scratch / "static"),
            "MIST_STORAGE_ROOT": str(self.storage),
            "MIST_CACHE_ROOT": str(self.cache),
            "MIST_ACCESS_LOG": str(home / "logs" / "site-access.log"),
            "MIST_ERROR_LOG": str(home / "logs" / "site-error.log"),
        }
        render = REPO / "deploy" / "render-nginx.sh"
        template = REPO / "deploy" / "nginx" / "mist.conf"
        if render.is_file() and template.is_file():
            proc = subprocess.run(
                ["bash", str(render), str(home / "no-such.env")],
                env={**os.environ, **values},
                capture_output=True,
                text=True,
                timeout=30,
            )
            if proc.returncode != 0:
                raise ProcError(f"deploy/render-nginx.sh failed: {proc.stderr.strip()}")
            site = proc.stdout
        else:
            self.say("deploy/nginx/mist.conf is absent: using a minimal nginx site")
            site = _MINIMAL_SITE.format(
                upstream=values["MIST_UPSTREAM"], listen=values["MIST_LISTEN"], storage=self.storage, cache=self.cache
            )
        (home / "mist-site.conf").write_text(site)
        temp = home / "temp"
        user = "" if os.geteuid() != 0 else "user root;\n"  # scratch files belong to us: workers must read them
        main_conf = f"""{user}worker_processes 2;
pid {home / "nginx.pid"};
error_log {home / "logs" / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    access_log off;
    include {home / "mist-site.conf"};
    # Bench only: the same cache folder served directly, the baseline X-Accel is compared with.
    server {{
        listen 127.0.0.1:{self.direct_port};
        sendfile on;
        tcp_nopush on;
        location /direct/ {{ alias {self.cache}/; }}
    }}
}}
"""
        conf = home / "nginx.conf"
        conf.write_text(main_conf)
        test = subprocess.run(
            ["nginx", "-t", "-p", str(home), "-c", str(conf)], capture_output=True, text=True, timeout=30
        )
        if test.returncode != 0:
            raise ProcError(f"nginx rejected the generated config {conf}:\n{test.stderr}")
        self.nginx = Background(
            "nginx",
            ["nginx", "-p", str(home), "-c", str(conf), "-g", "daemon off;"],
            env=None,
            cwd=home,
            log=home / "logs" / "stdout.log",
        )
        self._wait_http(f"http://127.0.0.1:{self.nginx_port}/healthz", self.nginx)

    # --- API helpers -----------------------------------------------------------------------------

    def url(self, name: str, path: str) -> str:
        return f"http://127.0.0.1:{self.gunicorns[name][1]}{path}"

    def token(self, name: str, user: tuple[str, str]) -> str:
        resp = requests.post(
            self.url(name, "/api/v1/auth/token"), json={"username": user[0], "password": user[1]}, timeout=30
        )
        if resp.status_code != 200:
            raise ProcError(f"login as {user[0]} failed: {resp.status_code} {resp.text[:300]}")
        return str(resp.json()["access"])

    def wait_for(self, name: str, token: str, *, slug: str, version: str, timeout: float) -> dict[str, Any]:
        """Wait until the version is ready and its full archive built; return the archive's JSON."""
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + timeout
        status = "?"
        while time.monotonic() < deadline:
            if self.worker is None or not self.worker.alive():
                raise ProcError(f"the worker is not running:\n{self.worker.tail() if self.worker else ''}")
            game = requests.get(self.url(name, f"/api/v1/games/{slug}"), headers=headers, timeout=30).json()
            row = next((v for v in game.get("versions", []) if v["name"] == version), None)
            status = row["status"] if row else "absent"
            if row is not None and status == "failed":
                raise ProcError(f"the worker failed {slug} {version}: {row.get('error')}")
            if status == "ready":
                resp = requests.get(
                    self.url(name, f"/api/v1/games/{slug}/versions/{version}/archive"), headers=headers, timeout=30
                )
                if resp.status_code == 200:
                    return dict(resp.json())
            time.sleep(1)
        raise ProcError(
            f"{slug} {version} not ready with its archive after {timeout:.0f}s (status {status}):\n"
            f"{self.worker.tail() if self.worker else ''}"
        )

    def push(self, slug: str, version: str, source: Path, *, timeout: float = 7200) -> Measured:
        """``manage.py push`` in a measured child process (time and peak RSS)."""
        return self.manage("push", slug, version, str(source), timeout=timeout, log_name=f"push-{version}")

    def new_game(self, slug: str) -> None:
        self.manage("new_game", slug, "--title", f"Bench {slug}")
