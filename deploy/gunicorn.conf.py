"""gunicorn for Mist on one 2-core VM behind nginx (see docs/RUNBOOK.md).

Sizing: 3 processes x 4 threads (gthread). Requests are short: downloads leave through nginx's
X-Accel-Redirect as soon as the view has checked access, so a thread is never tied to a transfer.
The long ones are build-upload chunks (up to 128 MiB each, streamed by nginx without buffering)
and signature uploads, hence the 120 s timeout. Every knob can be overridden from the environment
(the same EnvironmentFile as the app: /etc/mist/mist.env).
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


bind = os.environ.get("MIST_BIND", "127.0.0.1:8000").split(",")
workers = _env_int("MIST_WEB_WORKERS", 3)
worker_class = "gthread"
threads = _env_int("MIST_WEB_THREADS", 4)

# A worker silent for this long is killed and replaced: must exceed the slowest upload chunk.
timeout = _env_int("MIST_WEB_TIMEOUT", 120)
# On restart (SIGTERM/SIGHUP) in-flight requests get this long; the systemd unit waits a bit more.
graceful_timeout = _env_int("MIST_WEB_GRACEFUL_TIMEOUT", 30)
keepalive = 5
# Recycle processes now and then so a slow leak can never grow without bound.
max_requests = 2000
max_requests_jitter = 200
# Heartbeat files on tmpfs: a busy disk must not make gunicorn think a worker hung.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Only nginx talks to gunicorn; X-Forwarded-Proto is believed from these addresses only.
forwarded_allow_ips = os.environ.get("MIST_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proxy_allow_ips = forwarded_allow_ips

# One access line per request on stdout (journald), carrying the request id that nginx sent, the
# app echoed, and every JSON log line of the request repeats: grep one id to see the whole story.
# No query string: a signed download URL's signature is a credential (see downloads.services).
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("MIST_GUNICORN_LOG_LEVEL", "info")
access_log_format = (
    'access client=%({x-real-ip}i)s method=%(m)s path="%(U)s" status=%(s)s '
    'bytes=%(B)s ms=%(M)s rid=%({x-request-id}o)s ua="%(a)s"'
)

# gunicorn >= 24 opens a control socket under $HOME by default: Mist does not use it (and the
# hardened unit's home is read-only), so none. Older versions ignore the unknown name.
control_socket_disable = True
