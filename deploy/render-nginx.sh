#!/usr/bin/env bash
# Render deploy/nginx/mist.conf with this installation's values; prints the site on stdout.
#   deploy/render-nginx.sh [/etc/mist/mist.env] > /etc/nginx/sites-available/mist
# Values come from the environment first, then from the env file (MIST_* lines, plus STATIC_ROOT,
# MIST_STORAGE_ROOT, MIST_CACHE_ROOT and MIST_BIND that the app itself uses). Fails on a missing one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
env_file="${1:-/etc/mist/mist.env}"
template="${MIST_NGINX_TEMPLATE:-$here/nginx/mist.conf}"

from_file() {  # the value of KEY in the env file (last one wins), quotes stripped; empty if absent
  [ -r "$env_file" ] || return 0
  sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$env_file" | tail -n 1 | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}
value() {  # value NAME [FILE_KEY] [DEFAULT]
  local name=$1 key=${2:-$1} default=${3:-} v
  v="${!name:-}"
  [ -n "$v" ] || v="${!key:-}"
  [ -n "$v" ] || v="$(from_file "$key")"
  [ -n "$v" ] || v="$default"
  [ -n "$v" ] || { echo "render-nginx: $name is not set (environment or $env_file)" >&2; exit 1; }
  printf '%s' "$v"
}

declare -A vals
vals[MIST_LISTEN]=$(value MIST_LISTEN MIST_LISTEN 80)
bind=$(value MIST_BIND MIST_BIND 127.0.0.1:8000)
vals[MIST_UPSTREAM]=$(value MIST_UPSTREAM MIST_UPSTREAM "${bind%%,*}")
vals[MIST_BORDER_PROXY]=$(value MIST_BORDER_PROXY)
vals[MIST_STATIC_ROOT]=$(value MIST_STATIC_ROOT STATIC_ROOT)
vals[MIST_STORAGE_ROOT]=$(value MIST_STORAGE_ROOT)
vals[MIST_CACHE_ROOT]=$(value MIST_CACHE_ROOT)
vals[MIST_ACCESS_LOG]=$(value MIST_ACCESS_LOG MIST_ACCESS_LOG /var/log/nginx/mist.access.log)
vals[MIST_ERROR_LOG]=$(value MIST_ERROR_LOG MIST_ERROR_LOG /var/log/nginx/mist.error.log)

script=()
for name in "${!vals[@]}"; do
  v="${vals[$name]%/}"  # roots are written as "${ROOT}/" in the template
  case "$v" in *[[:space:]\;\{\}\'\"]*) echo "render-nginx: $name=$v has characters nginx would misread" >&2; exit 1;; esac
  esc=$(printf '%s' "$v" | sed -e 's/[\\|&]/\\&/g')
  script+=(-e "s|\${$name}|$esc|g")
done
out=$(sed "${script[@]}" "$template")
left=$(grep -v '^[[:space:]]*#' <<<"$out" | grep -o '\${[A-Za-z_]*}' | sort -u | tr '\n' ' ' || true)
if [ -n "$left" ]; then
  echo "render-nginx: unfilled placeholders: $left" >&2
  exit 1
fi
printf '%s\n' "$out"
