#!/usr/bin/env bash
# CPU time per proxied HTTP/1.1 request, split into user and system time, and the system calls
# behind it: what the proxy process itself spends, read from /proc/PID/stat and perf's syscall
# tracepoints while wrk keeps one proxy worker saturated.
#
#   cargo build --release
#   bash benches/proxy/cpu.sh                    # layer8 (LAYER8_BIN, default target/release)
#   TARGET=nginx bash benches/proxy/cpu.sh       # nginx as the reverse proxy, one worker
#
# Environment: SECONDS_RUN (measured wrk run, default 5), CONNS (wrk connections, default 64),
# LAYER8_BIN. Same topology as instructions.sh: nginx upstream with a 20-byte body, the
# bootstrap of run.sh, one proxy worker (`--concurrency 1` / `worker_processes 1`), wrk -t1.
# Needs wrk, nginx, curl, python3 and perf (`apt-get install linux-perf`).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${TARGET:-layer8}"
CONNS="${CONNS:-64}"
SECONDS_RUN="${SECONDS_RUN:-5}"
LAYER8_BIN="${LAYER8_BIN:-$ROOT/target/release/layer8}"
PATH="$PATH:/usr/sbin:/sbin"
for t in wrk nginx perf curl python3; do
  command -v "$t" >/dev/null || { echo "$t not found" >&2; exit 1; }
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/layer8-cpu.XXXXXX")"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in up.pid px.pid; do
    [ -f "$WORK/$f" ] && kill "$(cat "$WORK/$f")" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP="$(port)"; PX="$(port)"; AD="$(port)"
[ "$(id -u)" = 0 ] && USER_LINE="user root;" || USER_LINE=""
common() {  # $1 = pid file name
  cat <<NGX
$USER_LINE
worker_processes 1;
pid $WORK/$1;
error_log $WORK/error.log;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK;
  uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
NGX
}
{ common up.pid; echo "  server { listen 127.0.0.1:$UP; location / { return 200 \"hello from upstream\\n\"; } } }"; } \
  > "$WORK/up.conf"
nginx -p "$WORK" -c "$WORK/up.conf" -e "$WORK/error.log"
if [ "$TARGET" = nginx ]; then
  # run.sh's reverse-proxy settings.
  { common px.pid; cat <<NGX
  upstream up { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 100000000; keepalive_timeout 300s; }
  server { listen 127.0.0.1:$PX;
           location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGX
  } > "$WORK/px.conf"
  nginx -p "$WORK" -c "$WORK/px.conf" -e "$WORK/error.log"
  for _ in $(seq 50); do [ -s "$WORK/px.pid" ] && break; sleep 0.1; done
  sleep 0.3
  PID="$(pgrep -P "$(cat "$WORK/px.pid")" | head -1)"   # the worker, not the master
else
  sed -e "s/\${ADMIN_PORT}/$AD/g" -e "s/\${PROXY_PORT}/$PX/g" -e "s/\${UPSTREAM_PORT}/$UP/g" \
    "$HERE/bootstrap.yaml.tmpl" > "$WORK/bootstrap.yaml"
  "$LAYER8_BIN" -c "$WORK/bootstrap.yaml" --concurrency 1 -l warn > "$WORK/layer8.log" 2>&1 &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$AD/ready" >/dev/null && break; sleep 0.1; done
fi
curl -sf "http://127.0.0.1:$PX/" >/dev/null || { echo "the proxy does not answer" >&2; exit 1; }
wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$PX/" >/dev/null   # warm-up

EVENTS=raw_syscalls:sys_enter,context-switches
for s in read write recvfrom sendto writev readv epoll_wait epoll_pwait; do
  EVENTS="$EVENTS,syscalls:sys_enter_$s"
done
perf stat -x, -e "$EVENTS" -p "$PID" -o "$WORK/perf.txt" &
PERF=$!
sleep 0.2
read -r U0 S0 < <(cut -d' ' -f14,15 "/proc/$PID/stat")
wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" "http://127.0.0.1:$PX/" > "$WORK/wrk.txt"
read -r U1 S1 < <(cut -d' ' -f14,15 "/proc/$PID/stat")
kill -INT "$PERF"; wait "$PERF" || true
REQ="$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")"
TICK="$(getconf CLK_TCK)"
echo "$TARGET: $REQ requests, $(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt") RPS with one worker"
python3 - "$REQ" "$TICK" "$U0" "$S0" "$U1" "$S1" <<'PY'
import sys
req, tick, u0, s0, u1, s1 = map(int, sys.argv[1:])
us = lambda t: t * 1e6 / tick / req
print(f"  CPU per request: user {us(u1 - u0):.2f} us, system {us(s1 - s0):.2f} us")
PY
awk -F, -v r="$REQ" '$1 ~ /^[0-9.]+$/ && $1 > 0 { printf "  %-34s %.3f per request\n", $3, $1 / r }' \
  "$WORK/perf.txt"
