#!/usr/bin/env bash
# Mist's deploy smoke test: the production shape, for real, on loopback, in a scratch folder.
#
#   deploy/smoke_test.sh            (also run by mist/tests/test_deploy_smoke.py)
#
# A fresh PostgreSQL database; migrate, createcachetable, collectstatic; gunicorn with
# deploy/gunicorn.conf.py; a django-q2 cluster; nginx from deploy/nginx/mist.conf (rendered by
# deploy/render-nginx.sh) with MIST_ACCEL_REDIRECT=true. Then: an admin and a friend, a game with
# two pushed versions, the patcher installing and updating through nginx, downloads checked to
# leave through X-Accel-Redirect (headers, ranges, access log byte counts), a backup, a wipe of the
# database and the storage, a restore, and the game installing again with the same hashes.
#
# Installs nothing. Needs: nginx, curl, PostgreSQL client tools (createdb, dropdb, pg_dump,
# pg_restore) and a PostgreSQL server reachable as MIST_SMOKE_PG (default
# postgres://postgres@127.0.0.1:5432, trust auth), and Mist's venv (MIST_PYTHON, default .venv).
# MIST_SMOKE_KEEP=1 keeps the scratch folder. Each stage prints how long it took.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${MIST_PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
BIN="$(dirname "$PY")"
PG="${MIST_SMOKE_PG:-postgres://postgres@127.0.0.1:5432}"
PG="${PG%/}"

for tool in nginx curl createdb dropdb pg_dump pg_restore; do
  command -v "$tool" >/dev/null || { echo "smoke: $tool is not installed" >&2; exit 2; }
done
NGINX="$(command -v nginx)"

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/mist-smoke.XXXXXX")"
DB="mist_smoke_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
PIDS=()
T_START=$(date +%s%3N)
T_STAGE=$T_START
STAGE="start"
LOGS="$SCRATCH/logs"
mkdir -p "$LOGS"
# nginx's workers run as another user when started by root: they must be able to walk in.
chmod 0755 "$SCRATCH"

log() { printf '[smoke] %s\n' "$*"; }
fail() { printf '[smoke] FAILED: %s\n' "$*" >&2; exit 1; }
seconds_since() { awk -v a="$1" -v b="$(date +%s%3N)" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }
stage() {
  printf '[smoke] %-28s %6s s\n' "$STAGE" "$(seconds_since "$T_STAGE")"
  STAGE="$1"; T_STAGE=$(date +%s%3N)
}

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop_processes() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}

cleanup() {
  local rc=$?
  stop_processes
  if [ $rc -ne 0 ]; then
    for f in "$LOGS"/*.log; do
      [ -s "$f" ] || continue
      echo "----- last lines of $(basename "$f") -----" >&2
      tail -n 25 "$f" >&2
    done
  fi
  dropdb --if-exists --force --maintenance-db="$PG/postgres" "$DB" >/dev/null 2>&1 || true
  if [ "${MIST_SMOKE_KEEP:-0}" = "1" ]; then log "kept $SCRATCH"; else rm -rf "$SCRATCH"; fi
  local total; total=$(seconds_since "$T_START")
  if [ $rc -eq 0 ]; then log "PASSED in $total s"; else echo "[smoke] exit $rc after $total s" >&2; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- configuration: the production settings, pointed at scratch paths -----------------------------
WEB_PORT=$(free_port)
NGINX_PORT=$(free_port)
BASE="http://127.0.0.1:$NGINX_PORT"
FRIEND_PASSWORD="smoke-Friend-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
ADMIN_PASSWORD="smoke-Admin-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
export DEBUG=false
export SECRET_KEY="smoke-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
export ALLOWED_HOSTS=127.0.0.1,localhost
export CSRF_TRUSTED_ORIGINS="$BASE"
export DATABASE_URL="$PG/$DB"
export MIST_STORAGE_ROOT="$SCRATCH/storage"
export MIST_CACHE_ROOT="$SCRATCH/cache"
export STATIC_ROOT="$SCRATCH/static"
export MIST_VAR_DIR="$SCRATCH/var"
export MIST_ACCEL_REDIRECT=true
export MIST_PUBLIC_URL="$BASE"
export MIST_TRUSTED_PROXIES=1
export SESSION_COOKIE_SECURE=false CSRF_COOKIE_SECURE=false SECURE_HSTS_SECONDS=0
export MIST_BIND="127.0.0.1:$WEB_PORT" MIST_WEB_WORKERS=2 MIST_WEB_THREADS=4
export MIST_WORKERS=2 MIST_TASK_TIMEOUT=300 MIST_TASK_RETRY=360
export STEAM_APPDETAILS_URL="http://127.0.0.1:9/steam-disabled" DISCORD_WEBHOOK_URL=
export LOG_LEVEL=INFO PYTHONUNBUFFERED=1
export MIST_PATCHER_HOME="$SCRATCH/patcher-home"
unset MIST_SERVER || true
mkdir -p "$MIST_STORAGE_ROOT" "$MIST_CACHE_ROOT" "$STATIC_ROOT" "$MIST_VAR_DIR"
cd "$REPO"
manage() { "$PY" "$REPO/manage.py" "$@"; }
log "scratch $SCRATCH, database $DB, gunicorn :$WEB_PORT, nginx :$NGINX_PORT"

# --- helpers ----------------------------------------------------------------------------------------
start() {  # start NAME COMMAND...: in its own session, so the whole process group can be stopped
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
}

wait_http() {  # wait_http URL STATUS SECONDS
  local url=$1 want=$2 seconds=$3 code=""
  local deadline=$(( $(date +%s) + seconds ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
    [ "$code" = "$want" ] && return 0
    sleep 0.3
  done
  fail "$url answered $code, not $want, within ${seconds}s"
}

json() {  # json EXPRESSION < document: evaluate a Python expression on the parsed JSON (as d)
  "$PY" -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

tree_hashes() {  # a sorted "sha256  path" list of a folder's files
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}

start_app() {
  start gunicorn "$BIN/gunicorn" --config "$REPO/deploy/gunicorn.conf.py" mist.wsgi:application
  start worker "$PY" "$REPO/manage.py" qcluster
}

patcher() { "$PY" -m mist_patcher.cli.main --server "$BASE" --quiet "$@"; }
# Parts other engineers may still be writing: what is missing is skipped, loudly.
HAVE_PATCHER=0
"$PY" -c 'import mist_patcher.cli.main' 2>/dev/null && HAVE_PATCHER=1
HAVE_DOWNLOADS=0
manage shell -c "from django.urls import resolve; resolve('/api/v1/games/g/versions/1/archive'); resolve('/dl/archive/g/1')" \
  >/dev/null 2>&1 && HAVE_DOWNLOADS=1

# --- 1. database and files ---------------------------------------------------------------------------
stage "database + migrate"
createdb --maintenance-db="$PG/postgres" "$DB"
manage migrate --noinput -v 0
manage createcachetable
manage collectstatic --noinput -v 0
manage check --deploy --fail-level ERROR >"$LOGS/check-deploy.log" 2>&1 || fail "manage.py check --deploy: $(cat "$LOGS/check-deploy.log")"

# --- 2. processes --------------------------------------------------------------------------------------
stage "start gunicorn/worker/nginx"
mkdir -p "$SCRATCH/nginx"/{tmp,logs}
MIST_LISTEN="127.0.0.1:$NGINX_PORT" MIST_UPSTREAM="127.0.0.1:$WEB_PORT" MIST_BORDER_PROXY=127.0.0.2 \
MIST_STATIC_ROOT="$STATIC_ROOT" MIST_ACCESS_LOG="$LOGS/nginx-access.log" MIST_ERROR_LOG="$LOGS/nginx-error.log" \
  "$REPO/deploy/render-nginx.sh" /dev/null > "$SCRATCH/nginx/mist.conf"
# Started by root, nginx's workers run as nobody: fine when they can reach the scratch folder
# (under /tmp), else (a private TMPDIR) they run as root, which only this test ever does.
NGINX_USER=""
if [ "$(id -u)" = 0 ] && ! runuser -u nobody -- test -x "$SCRATCH/static" 2>/dev/null; then NGINX_USER="user root;"; fi
cat > "$SCRATCH/nginx/nginx.conf" <<EOF
$NGINX_USER
daemon off;
worker_processes 1;
pid $SCRATCH/nginx/nginx.pid;
error_log $LOGS/nginx-error.log warn;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path $SCRATCH/nginx/tmp/body;
    proxy_temp_path $SCRATCH/nginx/tmp/proxy;
    fastcgi_temp_path $SCRATCH/nginx/tmp/fastcgi;
    uwsgi_temp_path $SCRATCH/nginx/tmp/uwsgi;
    scgi_temp_path $SCRATCH/nginx/tmp/scgi;
    include $SCRATCH/nginx/mist.conf;
}
EOF
"$NGINX" -t -q -c "$SCRATCH/nginx/nginx.conf" -p "$SCRATCH/nginx/" 2>>"$LOGS/nginx-error.log" \
  || fail "nginx rejected the rendered site (see nginx-error.log)"
start_app
start nginx "$NGINX" -c "$SCRATCH/nginx/nginx.conf" -p "$SCRATCH/nginx/"
wait_http "$BASE/healthz" 200 60
wait_http "$BASE/readyz" 200 60   # database, storage, cache and a worker heartbeat
curl -sf -o /dev/null "$BASE/static/$(cd "$STATIC_ROOT" && find . -name '*.css' | head -1 | cut -c3-)" \
  || fail "nginx does not serve the collected static files"
# One Content-Security-Policy on what nginx serves itself and on the app's pages (never two copies).
for path in "/static/$(cd "$STATIC_ROOT" && find . -name '*.css' | head -1 | cut -c3-)" /accounts/login/; do
  n=$(curl -s -D - -o /dev/null "$BASE$path" | grep -ci '^content-security-policy: default-src' || true)
  [ "$n" = 1 ] || fail "GET $path: $n Content-Security-Policy headers through nginx, want exactly 1"
done

# --- 3. accounts, game, two versions ----------------------------------------------------------------------
stage "accounts + push 2 versions"
DJANGO_SUPERUSER_PASSWORD="$ADMIN_PASSWORD" manage createsuperuser --noinput --username admin --email admin@example.org >/dev/null
manage shell -c "from django.contrib.auth import get_user_model; get_user_model().objects.create_user('friend', password='$FRIEND_PASSWORD')"
"$PY" - "$SCRATCH/builds" <<'EOF'
import sys
from pathlib import Path

from mist.testing.gamedata import make_build, next_version

root = Path(sys.argv[1])
v1 = make_build(root / "1.0", seed=7, scale=2)
next_version(v1, root / "1.1", seed=7, step=1)
EOF
HAVE_PUSH=0
if manage help push >/dev/null 2>&1 && manage help new_game >/dev/null 2>&1; then
  HAVE_PUSH=1
  manage new_game smoke --title "Smoke Test"
  manage push smoke 1.0 "$SCRATCH/builds/1.0" --notes "first" --wait 120
  manage push smoke 1.1 "$SCRATCH/builds/1.1" --notes "second" --wait 120
else
  log "SKIPPED pushes: manage.py new_game/push are not there yet"
fi

# --- 4. the patcher through nginx ------------------------------------------------------------------------
stage "patcher install + update"
if [ $HAVE_PUSH = 1 ] && [ $HAVE_PATCHER = 1 ] && [ $HAVE_DOWNLOADS = 1 ]; then
  printf '%s\n' "$FRIEND_PASSWORD" | patcher login --username friend --password-stdin
  # The builds are pushed without --platform (the default, windows); this Linux box installs them by name.
  patcher install smoke --version 1.0 --platform windows --dir "$SCRATCH/install-1"
  [ "$(tree_hashes "$SCRATCH/install-1")" = "$(tree_hashes "$SCRATCH/builds/1.0")" ] \
    || fail "the installed 1.0 differs from what was pushed"
  patcher update smoke
  [ "$(tree_hashes "$SCRATCH/install-1")" = "$(tree_hashes "$SCRATCH/builds/1.1")" ] \
    || fail "the updated game differs from the pushed 1.1"
else
  log "SKIPPED patcher: $([ $HAVE_PATCHER = 1 ] || echo 'mist_patcher is not importable; ')$([ $HAVE_DOWNLOADS = 1 ] || echo 'the download API is not there yet; ')$([ $HAVE_PUSH = 1 ] || echo 'no pushed game')"
fi

# --- 5. downloads leave through nginx (X-Accel-Redirect) ----------------------------------------------
stage "X-Accel download checks"
if [ $HAVE_PUSH = 1 ] && [ $HAVE_DOWNLOADS = 1 ]; then
  TOKEN=$(curl -sf -H 'Content-Type: application/json' \
      -d "{\"username\": \"friend\", \"password\": \"$FRIEND_PASSWORD\"}" "$BASE/api/v1/auth/token" | json 'd["access"]')
  AUTH="Authorization: Bearer $TOKEN"
  archive=""
  for _ in $(seq 1 200); do  # the worker builds the archive if it is not there yet
    code=$(curl -s -o "$SCRATCH/archive.json" -w '%{http_code}' -X POST -H "$AUTH" "$BASE/api/v1/games/smoke/versions/1.1/archive")
    if [ "$code" = 200 ]; then archive=$(cat "$SCRATCH/archive.json"); break; fi
    [ "$code" = 202 ] || fail "archive request answered $code: $(cat "$SCRATCH/archive.json")"
    sleep 0.3
  done
  [ -n "$archive" ] || fail "the worker did not build the 1.1 archive in time"
  url=$(json 'd["url"]' <<<"$archive"); size=$(json 'd["size"]' <<<"$archive"); sha=$(json 'd["sha256"]' <<<"$archive")
  curl -sf -D "$SCRATCH/h1" -o "$SCRATCH/archive.tar.zst" -H "$AUTH" "$BASE$url" || fail "GET $url failed"
  grep -qi '^X-Mist-Served-By: nginx-accel' "$SCRATCH/h1" || fail "GET $url was not served by nginx: $(cat "$SCRATCH/h1")"
  grep -qi "^ETag: \"$sha\"" "$SCRATCH/h1" || fail "GET $url has no ETag \"<sha256>\": $(cat "$SCRATCH/h1")"
  [ "$(sha256sum < "$SCRATCH/archive.tar.zst" | cut -d' ' -f1)" = "$sha" ] || fail "the archive's bytes do not match its sha256"
  [ "$(stat -c %s "$SCRATCH/archive.tar.zst")" = "$size" ] || fail "the archive's size is not $size"
  # nginx answers ranges and If-Range itself
  curl -s -D "$SCRATCH/h2" -o "$SCRATCH/part" -H "$AUTH" -H 'Range: bytes=10-109' -H "If-Range: \"$sha\"" "$BASE$url"
  head -1 "$SCRATCH/h2" | grep -q ' 206' || fail "a range with a matching If-Range did not answer 206: $(head -1 "$SCRATCH/h2")"
  grep -qi "^Content-Range: bytes 10-109/$size" "$SCRATCH/h2" || fail "wrong Content-Range: $(cat "$SCRATCH/h2")"
  [ "$(stat -c %s "$SCRATCH/part")" = 100 ] || fail "the range did not carry 100 bytes"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" -H 'Range: bytes=10-109' -H 'If-Range: "stale"' "$BASE$url")
  [ "$code" = 200 ] || fail "a range with a stale If-Range answered $code, not the whole file (200)"
  # the internal locations are not reachable from outside, and a stranger gets nothing
  code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/_protected/cache/")
  [ "$code" = 404 ] || fail "/_protected/cache/ answered $code to a direct request"
  code=$(curl -s -o /dev/null -w '%{http_code}' "$BASE$url")
  case "$code" in 401|403|404) ;; *) fail "an anonymous GET $url answered $code" ;; esac
  sleep 0.5  # nginx writes the access log line when the response is done
  grep -F "\"GET $url HTTP/1.1\" 200 $size " "$LOGS/nginx-access.log" | grep -q 'accel="nginx-accel"' \
    || fail "nginx's access log has no X-Accel line for $url with $size bytes"
  dl_lines=$(grep -c '"GET /dl/' "$LOGS/nginx-access.log" || true)
  not_accel=$(grep '"GET /dl/' "$LOGS/nginx-access.log" | grep ' 20[06] ' | grep -vc 'accel="nginx-accel"' || true)
  [ "$not_accel" = 0 ] || fail "$not_accel successful /dl/ downloads did not go through X-Accel-Redirect"
  log "$dl_lines downloads under /dl/ in nginx's access log, all successful ones through X-Accel-Redirect"
else
  log "SKIPPED X-Accel checks: $([ $HAVE_DOWNLOADS = 1 ] || echo 'the download API is not there yet; ')$([ $HAVE_PUSH = 1 ] || echo 'no pushed game')"
fi

# --- 6. backup, wipe, restore ---------------------------------------------------------------------------
stage "backup"
manage backup "$SCRATCH/backups"
BACKUP_DIR=$(ls -d "$SCRATCH"/backups/mist-backup-* | head -1)
[ -f "$BACKUP_DIR/backup.json" ] || fail "no backup.json in $BACKUP_DIR"
STORAGE_BEFORE=$(tree_hashes "$MIST_STORAGE_ROOT" | grep -v ' ./staging/' || true)

stage "stop services"
stop_processes

stage "wipe + restore"
dropdb --force --maintenance-db="$PG/postgres" "$DB"
createdb --maintenance-db="$PG/postgres" "$DB"
rm -rf "$MIST_STORAGE_ROOT" "$MIST_CACHE_ROOT"
mkdir -p "$MIST_STORAGE_ROOT" "$MIST_CACHE_ROOT"
manage restore "$BACKUP_DIR"
[ "$(tree_hashes "$MIST_STORAGE_ROOT")" = "$STORAGE_BEFORE" ] || fail "the restored storage differs from the original"
manage migrate --check >/dev/null || fail "the restored database has unapplied migrations"

stage "restart + install again"
start_app
start nginx "$NGINX" -c "$SCRATCH/nginx/nginx.conf" -p "$SCRATCH/nginx/"
wait_http "$BASE/readyz" 200 60
if [ $HAVE_PUSH = 1 ] && [ $HAVE_PATCHER = 1 ] && [ $HAVE_DOWNLOADS = 1 ]; then
  # A new friend machine: fresh patcher state, logging in against the restored accounts.
  export MIST_PATCHER_HOME="$SCRATCH/patcher-home-2"
  printf '%s\n' "$FRIEND_PASSWORD" | patcher login --username friend --password-stdin
  patcher install smoke --platform windows --dir "$SCRATCH/install-2"
  [ "$(tree_hashes "$SCRATCH/install-2")" = "$(tree_hashes "$SCRATCH/install-1")" ] \
    || fail "after the restore, the game installs with different files"
  log "after the restore, smoke 1.1 installs with the same $(tree_hashes "$SCRATCH/install-2" | wc -l) file hashes"
elif [ $HAVE_PUSH = 1 ]; then
  TOKEN=$(curl -sf -H 'Content-Type: application/json' \
      -d "{\"username\": \"friend\", \"password\": \"$FRIEND_PASSWORD\"}" "$BASE/api/v1/auth/token" | json 'd["access"]')
  curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/games/smoke" | json 'd["latest_version"]' | grep -qx '1.1' \
    || fail "after the restore, the API does not show smoke 1.1"
fi
stage "stop"
stop_processes
