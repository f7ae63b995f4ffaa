#!/usr/bin/env bash
# One-run comparative proxy benchmark: direct vs layer8 vs Envoy 1.40 vs nginx vs haproxy.
#
#   bash .ci/install-deps.sh                 # once: wrk, h2load, nginx, haproxy, envoy venv
#   cargo build --release                    # optional: without the binary layer8 is skipped
#   bash benches/proxy/run.sh                # BENCH_SECONDS=10 by default
#
# Environment:
#   BENCH_SECONDS   measured duration of each wrk / h2load run (default 10)
#   BENCH_WARMUP    un-measured warm-up per target and tool, seconds (default 1, 0 disables)
#   LAYER8_BIN      layer8 binary (default target/release/layer8 in this repo)
#   ENVOY_BIN       envoy binary (default: `envoy` on PATH, else the install-deps.sh venv)
#   ENVOY_EXTRA_ARGS  extra envoy flags (default --disable-hot-restart, so a second envoy
#                   on the machine cannot collide on the hot-restart base id)
#   LAYER8_EXTRA_ARGS extra layer8 flags (default none)
#   BENCH_TARGETS   space-separated subset of: direct layer8 envoy nginx haproxy
#   BENCH_ROUNDS    run the whole target list this many times, interleaved, and report the
#                   median RPS per target (default 1); on a noisy shared machine use 3
#   BENCH_OUT       where to write the Markdown report (default benches/proxy/results-latest.md)
#   BENCH_EXACT_BALANCE  1: the bootstrap asks for `connection_balance_config: exact_balance`,
#                   so Envoy spreads connections over its workers by count as layer8 always does
#                   (default 0: Envoy's default, the kernel's SO_REUSEPORT hash)
#
# Topology (everything on 127.0.0.1, free ports picked at run time):
#   upstream: nginx, 1 worker, `return 200 "hello from upstream\n"` (20 bytes), HTTP/1.1
#             keep-alive (plus an h2c port so "direct" has an h2load baseline as well).
#   proxies:  talk HTTP/1.1 keep-alive to the upstream; layer8 and Envoy share one bootstrap
#             rendered from bootstrap.yaml.tmpl and run with `--concurrency 2`; the nginx
#             reverse proxy and haproxy get 2 workers / threads too.
# Load:
#   wrk:    HTTP/1.1 keep-alive, `-t2 -c64 -d${BENCH_SECONDS}s --latency`.
#   h2load: h2c prior knowledge, `-t2 -c4 -m25 -D ${BENCH_SECONDS}` = 100 concurrent streams in
#           total, spread over 4 connections so that both proxy workers get connections (with
#           `-c1 -m100` one worker would do all the work). h2load prints no percentiles, so
#           p50/p99 come from its per-request `--log-file`.
# Each proxy is started alone (the upstream stays up), measured, then stopped. The load
# generator, proxy and upstream share the machine's cores: compare ratios, not absolutes.
# RSS (layer8 / Envoy): VmRSS from /proc/PID/status ~1 s after /ready (idle), the maximum
# VmRSS sampled every 0.2 s during the wrk and h2load runs (load), and VmHWM at the end.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

BENCH_SECONDS="${BENCH_SECONDS:-10}"
BENCH_WARMUP="${BENCH_WARMUP:-1}"
BENCH_TARGETS="${BENCH_TARGETS:-direct layer8 envoy nginx haproxy}"
BENCH_ROUNDS="${BENCH_ROUNDS:-1}"
BENCH_EXACT_BALANCE="${BENCH_EXACT_BALANCE:-0}"
declare -A ALL=()
BENCH_OUT="${BENCH_OUT:-$HERE/results-latest.md}"
LAYER8_BIN="${LAYER8_BIN:-$ROOT/target/release/layer8}"
ENVOY_EXTRA_ARGS="${ENVOY_EXTRA_ARGS---disable-hot-restart}"
LAYER8_EXTRA_ARGS="${LAYER8_EXTRA_ARGS:-}"
WRK_THREADS=2
WRK_CONNS=64
H2_THREADS=2
H2_CLIENTS=4
H2_STREAMS=25
CONCURRENCY=2

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ tools
PATH="$PATH:/usr/sbin:/sbin"
if [ -z "${ENVOY_BIN:-}" ]; then
  if command -v envoy >/dev/null 2>&1; then ENVOY_BIN="$(command -v envoy)"
  else ENVOY_BIN="${LAYER8_TOOLS:-$HOME/.cache/layer8-tools}/venv/bin/envoy"; fi
fi
for t in wrk h2load nginx haproxy curl python3; do
  command -v "$t" >/dev/null 2>&1 || die "$t not found (run: bash .ci/install-deps.sh)"
done

LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
DATE_START="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/layer8-bench.XXXXXX")"
chmod 755 "$WORK"   # nginx workers may run as another user
PIDS=()             # every background process this script started

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_pid() {  # stop one process we started and forget it
  local pid="$1" p keep=()
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# Prints N distinct free loopback TCP ports (all held open while picking).
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# wait_http URL [expected-status] [timeout-s] -> 0 once URL answers with that status
wait_http() {
  local url="$1" want="${2:-200}" tmo="${3:-20}" code
  for _ in $(seq 1 $((tmo * 10))); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null)"
    [ "$code" = "$want" ] && return 0
    sleep 0.1
  done
  return 1
}

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null; }
hwm_kb() { awk '/^VmHWM:/{print $2}' "/proc/$1/status" 2>/dev/null; }
fmt_mb() { [ -n "${1:-}" ] && awk -v k="$1" 'BEGIN{printf "%.1f MiB", k/1024}' || echo "n/a"; }

# Samples VmRSS of $1 every 0.2 s and keeps the max in file $2 (run in background).
sample_rss() {
  local pid="$1" out="$2" max=0 v
  while kill -0 "$pid" 2>/dev/null; do
    v="$(rss_kb "$pid")"
    if [ -n "$v" ] && [ "$v" -gt "$max" ]; then max="$v"; echo "$max" > "$out"; fi
    sleep 0.2
  done
}

# ------------------------------------------------------------------ upstream
read -r UP_PORT UP_H2_PORT <<<"$(free_ports 2)"
NGINX_USER_LINE=""
[ "$(id -u)" = 0 ] && NGINX_USER_LINE="user root;"

nginx_common() {  # $1 = dir, $2 = workers
  cat <<EOF
$NGINX_USER_LINE
worker_processes $2;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
EOF
}

start_nginx() {  # $1 = dir; config already at $1/nginx.conf; sets NGINX_PID
  nginx -p "$1" -c "$1/nginx.conf" -e "$1/error.log" >"$1/stdout.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
}

mkdir -p "$WORK/upstream"
{
  nginx_common "$WORK/upstream" 1
  cat <<EOF
  server {
    listen 127.0.0.1:$UP_PORT;
    listen 127.0.0.1:$UP_H2_PORT http2;
    location / { default_type text/plain; return 200 "hello from upstream\n"; }
  }
}
EOF
} > "$WORK/upstream/nginx.conf"
start_nginx "$WORK/upstream"
wait_http "http://127.0.0.1:$UP_PORT/" 200 10 || { cat "$WORK/upstream/error.log" >&2; die "upstream nginx did not start"; }
EXPECTED_BODY="$(curl -s "http://127.0.0.1:$UP_PORT/")"
log "upstream nginx on 127.0.0.1:$UP_PORT (h2c :$UP_H2_PORT), body: $(printf %q "$EXPECTED_BODY")"

# ------------------------------------------------------------------ measurement
declare -A R   # R[target.key] = value

# run_wrk TARGET URL
run_wrk() {
  local tgt="$1" url="$2" out="$WORK/$1.wrk.txt"
  if [ "$BENCH_WARMUP" != 0 ]; then
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${BENCH_WARMUP}s" "$url" >/dev/null 2>&1
  fi
  wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${BENCH_SECONDS}s" --latency "$url" >"$out" 2>&1
  R[$tgt.wrk_rps]="$(awk '/^Requests\/sec:/{printf "%.0f", $2}' "$out")"
  R[$tgt.wrk_p50]="$(awk '/Latency Distribution/{f=1} f && $1=="50%"{print $2; exit}' "$out")"
  R[$tgt.wrk_p99]="$(awk '/Latency Distribution/{f=1} f && $1=="99%"{print $2; exit}' "$out")"
  local non2xx sockerr
  non2xx="$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$out")"
  sockerr="$(awk -F'[ ,]+' '/Socket errors:/{s=0; for(i=1;i<=NF;i++) if($i ~ /^[0-9]+$/) s+=$i; print s}' "$out")"
  R[$tgt.wrk_err]=$(( ${non2xx:-0} + ${sockerr:-0} ))
  [ -n "${R[$tgt.wrk_rps]}" ] || { R[$tgt.wrk_rps]="FAILED"; sed 's/^/    wrk: /' "$out" >&2; }
  log "$tgt wrk: ${R[$tgt.wrk_rps]} req/s p50=${R[$tgt.wrk_p50]} p99=${R[$tgt.wrk_p99]} errors=${R[$tgt.wrk_err]}"
}

# percentile of h2load's --log-file (3rd column = microseconds until end of response)
h2_pct() {  # $1 = sorted durations file, $2 = percentile
  awk -v p="$2" '{a[NR]=$1} END{ if (NR==0) {print "n/a"; exit}
    i=int(NR*p/100 + 0.999999); if (i<1) i=1; if (i>NR) i=NR; v=a[i];
    if (v>=1000000) printf "%.2fs", v/1000000; else if (v>=1000) printf "%.2fms", v/1000; else printf "%dus", v }' "$1"
}

# run_h2load TARGET URL
run_h2load() {
  local tgt="$1" url="$2" out="$WORK/$1.h2load.txt" lf="$WORK/$1.h2load.log"
  if [ "$BENCH_WARMUP" != 0 ]; then
    h2load -t"$H2_THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$BENCH_WARMUP" "$url" >/dev/null 2>&1
  fi
  h2load -t"$H2_THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D "$BENCH_SECONDS" \
    --log-file="$lf" "$url" >"$out" 2>&1
  R[$tgt.h2_rps]="$(awk '/^finished in/{for(i=1;i<=NF;i++) if($(i+1) ~ /^req\/s/){gsub(",","",$i); printf "%.0f", $i; exit}}' "$out")"
  local failed ok
  ok="$(awk '/^requests:/{for(i=1;i<=NF;i++) if($(i+1) ~ /^succeeded/) print $i}' "$out")"
  failed="$(awk '/^requests:/{s=0; for(i=1;i<=NF;i++) if($(i+1) ~ /^(failed|errored|timeout)/) s+=$i; print s}' "$out")"
  R[$tgt.h2_err]="${failed:-?}"
  if [ -z "${R[$tgt.h2_rps]}" ] || [ "${ok:-0}" = 0 ]; then
    R[$tgt.h2_rps]="FAILED"; R[$tgt.h2_p50]="n/a"; R[$tgt.h2_p99]="n/a"
    sed 's/^/    h2load: /' "$out" >&2
  else
    # only 2xx responses count for latency
    awk -F'\t' '$2 >= 200 && $2 < 300 {print $3}' "$lf" | sort -n > "$lf.sorted"
    R[$tgt.h2_p50]="$(h2_pct "$lf.sorted" 50)"
    R[$tgt.h2_p99]="$(h2_pct "$lf.sorted" 99)"
  fi
  rm -f "$lf" "$lf.sorted"
  log "$tgt h2load: ${R[$tgt.h2_rps]} req/s p50=${R[$tgt.h2_p50]} p99=${R[$tgt.h2_p99]} errors=${R[$tgt.h2_err]}"
}

# check_body TARGET URL [h2] -> 0 if the proxy returns the upstream body
check_body() {
  local body
  if [ "${3:-}" = h2 ]; then body="$(curl -s --max-time 5 --http2-prior-knowledge "$2")"
  else body="$(curl -s --max-time 5 "$2")"; fi
  if [ "$body" != "$EXPECTED_BODY" ]; then
    log "$1: unexpected body from $2: $(printf %q "$body")"
    return 1
  fi
}

# bench_target TARGET H1_URL H2_URL [PID_FOR_RSS]
bench_target() {
  local tgt="$1" h1="$2" h2="$3" pid="${4:-}" sampler=""
  if [ -n "$pid" ]; then
    R[$tgt.rss_idle]="$(rss_kb "$pid")"
    sample_rss "$pid" "$WORK/$tgt.rssmax" &
    sampler=$!
    PIDS+=("$sampler")
  fi
  if check_body "$tgt" "$h1"; then run_wrk "$tgt" "$h1"
  else R[$tgt.wrk_rps]="FAILED"; fi
  if [ "$h2" = "n/a" ]; then
    R[$tgt.h2_rps]="n/a"
  elif check_body "$tgt" "$h2" h2; then run_h2load "$tgt" "$h2"
  else R[$tgt.h2_rps]="FAILED"; fi
  if [ -n "$pid" ]; then
    R[$tgt.rss_load]="$(cat "$WORK/$tgt.rssmax" 2>/dev/null)"
    R[$tgt.rss_hwm]="$(hwm_kb "$pid")"
    stop_pid "$sampler"
  fi
}

render_bootstrap() {  # $1 = out file, $2 = admin, $3 = proxy port
  sed -e "s/\${ADMIN_PORT}/$2/g" -e "s/\${PROXY_PORT}/$3/g" -e "s/\${UPSTREAM_PORT}/$UP_PORT/g" \
    "$HERE/bootstrap.yaml.tmpl" > "$1"
  if [ "$BENCH_EXACT_BALANCE" = 1 ]; then
    # After the listener's address: Envoy balances its workers' connections as layer8 always does.
    sed -i "/port_value: $3 }/a\\    connection_balance_config: { exact_balance: {} }" "$1"
  fi
}

# bench_envoy_like TARGET BIN EXTRA_ARGS
bench_envoy_like() {
  local tgt="$1" bin="$2" extra="$3" admin port pid dir="$WORK/$1"
  mkdir -p "$dir"
  read -r admin port <<<"$(free_ports 2)"
  render_bootstrap "$dir/bootstrap.yaml" "$admin" "$port"
  # shellcheck disable=SC2086  # EXTRA_ARGS is a word list on purpose
  "$bin" -c "$dir/bootstrap.yaml" --concurrency "$CONCURRENCY" $extra >"$dir/proxy.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  if ! wait_http "http://127.0.0.1:$admin/ready" 200 30; then
    log "$tgt did not become ready; last log lines:"; tail -20 "$dir/proxy.log" >&2
    R[$tgt.wrk_rps]="FAILED"; R[$tgt.h2_rps]="FAILED"
    stop_pid "$pid"; return
  fi
  sleep 1
  bench_target "$tgt" "http://127.0.0.1:$port/" "http://127.0.0.1:$port/" "$pid"
  stop_pid "$pid"
}

VERSIONS=()
ver_line() { VERSIONS+=("| $1 | $2 |"); }
ver_line wrk "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
ver_line h2load "$(h2load --version 2>&1 | head -1)"
ver_line "nginx (upstream + proxy)" "$(nginx -v 2>&1 | sed 's/^nginx version: //')"
ver_line haproxy "$(haproxy -v 2>&1 | head -1 | awk '{print $3}')"

for round in $(seq 1 "$BENCH_ROUNDS"); do
[ "$BENCH_ROUNDS" -gt 1 ] && log "==== round $round of $BENCH_ROUNDS"
for tgt in $BENCH_TARGETS; do
  case "$tgt" in
  direct)
    log "== direct (clients -> upstream nginx)"
    bench_target direct "http://127.0.0.1:$UP_PORT/" "http://127.0.0.1:$UP_H2_PORT/"
    ;;
  layer8)
    if [ -x "$LAYER8_BIN" ]; then
      log "== layer8 ($LAYER8_BIN)"
      l8v="$(timeout 5 "$LAYER8_BIN" --version 2>/dev/null | grep -m1 . | sed "s/^ *//")"
      ver_line layer8 "${l8v:-unknown} (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), binary built $(date -r "$LAYER8_BIN" '+%Y-%m-%d %H:%M'))"
      bench_envoy_like layer8 "$LAYER8_BIN" "$LAYER8_EXTRA_ARGS"
    else
      log "== layer8: skipped ($LAYER8_BIN not found; cargo build --release first)"
      R[layer8.skipped]=1
    fi
    ;;
  envoy)
    if [ -x "$ENVOY_BIN" ]; then
      log "== envoy ($ENVOY_BIN)"
      ver_line envoy "$("$ENVOY_BIN" --version 2>/dev/null | sed -n 's/.*version: //p' | awk -F/ '{print $2" ("$4", "$5")"; exit}')"
      bench_envoy_like envoy "$ENVOY_BIN" "$ENVOY_EXTRA_ARGS"
    else
      log "== envoy: skipped ($ENVOY_BIN not found; bash .ci/install-deps.sh)"
      R[envoy.skipped]=1
    fi
    ;;
  nginx)
    log "== nginx reverse proxy"
    read -r p1 p2 <<<"$(free_ports 2)"
    mkdir -p "$WORK/nginx-proxy"
    {
      nginx_common "$WORK/nginx-proxy" "$CONCURRENCY"
      cat <<EOF
  upstream up {
    server 127.0.0.1:$UP_PORT;
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$p1;
    listen 127.0.0.1:$p2 http2;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
    } > "$WORK/nginx-proxy/nginx.conf"
    start_nginx "$WORK/nginx-proxy"
    pid="$NGINX_PID"
    if wait_http "http://127.0.0.1:$p1/" 200 10; then
      bench_target nginx "http://127.0.0.1:$p1/" "http://127.0.0.1:$p2/"
    else
      cat "$WORK/nginx-proxy/error.log" >&2
      R[nginx.wrk_rps]="FAILED"; R[nginx.h2_rps]="FAILED"
    fi
    stop_pid "$pid"
    ;;
  haproxy)
    log "== haproxy"
    read -r p1 p2 <<<"$(free_ports 2)"
    mkdir -p "$WORK/haproxy"
    cat > "$WORK/haproxy/haproxy.cfg" <<EOF
global
  nbthread $CONCURRENCY
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$p1
  bind 127.0.0.1:$p2 proto h2
  default_backend be
backend be
  server up 127.0.0.1:$UP_PORT
EOF
    haproxy -db -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/haproxy.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if wait_http "http://127.0.0.1:$p1/" 200 10; then
      bench_target haproxy "http://127.0.0.1:$p1/" "http://127.0.0.1:$p2/"
    else
      cat "$WORK/haproxy/haproxy.log" >&2
      R[haproxy.wrk_rps]="FAILED"; R[haproxy.h2_rps]="FAILED"
    fi
    stop_pid "$pid"
    ;;
  *) die "unknown target '$tgt' in BENCH_TARGETS" ;;
  esac
done
for tgt in $BENCH_TARGETS; do
  for k in wrk_rps h2_rps; do ALL[$tgt.$k]+="${R[$tgt.$k]:-} "; done
done
done

# Median RPS over the rounds (p50/p99/RSS are from the last round).
median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -n | awk '{a[NR]=$1} END{ if (NR) print a[int((NR+1)/2)] }'; }
if [ "$BENCH_ROUNDS" -gt 1 ]; then
  for tgt in $BENCH_TARGETS; do
    for k in wrk_rps h2_rps; do
      m="$(printf '%s' "${ALL[$tgt.$k]:-}" | median)"
      [ -n "$m" ] && R[$tgt.$k]="$m"
    done
  done
fi

# ------------------------------------------------------------------ report
ratio() {  # ratio A B -> A/B with 2 decimals, or n/a
  awk -v a="${1:-}" -v b="${2:-}" 'BEGIN{ if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a/b; else print "n/a" }'
}
label() {
  case "$1" in
  direct) echo "direct (no proxy)";; layer8) echo "layer8";; envoy) echo "Envoy";;
  nginx) echo "nginx reverse proxy";; haproxy) echo "haproxy";; esac
}
v() { local x="${R[$1]:-}"; echo "${x:-n/a}"; }

{
  echo "# layer8 proxy benchmark"
  echo
  echo "- date: $DATE_START (start of the run)"
  echo "- nproc: $(nproc)"
  echo "- CPU: $(awk -F': *' '/^model name/{print $2; exit}' /proc/cpuinfo)"
  echo "- kernel: $(uname -r)"
  echo "- load average at start: $LOADAVG_START (other CPU users skew every number below)"
  echo "- upstream: nginx, 1 worker, \`return 200\` with a $(printf '%s\n' "$EXPECTED_BODY" | wc -c)-byte body, HTTP/1.1 keep-alive"
  echo "- proxies: \`--concurrency $CONCURRENCY\` (layer8, Envoy; same bootstrap), $CONCURRENCY workers (nginx), $CONCURRENCY threads (haproxy); HTTP/1.1 keep-alive to the upstream$([ "$BENCH_EXACT_BALANCE" = 1 ] && echo "; the bootstrap sets \`connection_balance_config: exact_balance\`")"
  echo "- wrk: \`-t$WRK_THREADS -c$WRK_CONNS -d${BENCH_SECONDS}s --latency\` (HTTP/1.1 keep-alive)"
  echo "- h2load: \`-t$H2_THREADS -c$H2_CLIENTS -m$H2_STREAMS -D $BENCH_SECONDS\` (h2c prior knowledge, $((H2_CLIENTS * H2_STREAMS)) concurrent streams); p50/p99 from its per-request log"
  echo "- warm-up: ${BENCH_WARMUP}s per tool and target (not measured); load generator, proxy and upstream share the $(nproc) cores"
  echo
  echo "| target | wrk RPS | wrk p50 | wrk p99 | wrk errors | h2load RPS | h2load p50 | h2load p99 | h2load errors | RSS idle | RSS load (max) | VmHWM |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for tgt in $BENCH_TARGETS; do
    if [ -n "${R[$tgt.skipped]:-}" ]; then
      echo "| $(label "$tgt") | skipped | | | | | | | | | | |"
      continue
    fi
    rss_i="n/a"; rss_l="n/a"; rss_h="n/a"
    if [ "$tgt" = layer8 ] || [ "$tgt" = envoy ]; then
      rss_i="$(fmt_mb "${R[$tgt.rss_idle]:-}")"; rss_l="$(fmt_mb "${R[$tgt.rss_load]:-}")"; rss_h="$(fmt_mb "${R[$tgt.rss_hwm]:-}")"
    fi
    echo "| $(label "$tgt") | $(v "$tgt.wrk_rps") | $(v "$tgt.wrk_p50") | $(v "$tgt.wrk_p99") | $(v "$tgt.wrk_err") | $(v "$tgt.h2_rps") | $(v "$tgt.h2_p50") | $(v "$tgt.h2_p99") | $(v "$tgt.h2_err") | $rss_i | $rss_l | $rss_h |"
  done
  echo
  echo "| ratio | wrk (HTTP/1.1) | h2load (h2c) |"
  echo "|---|---:|---:|"
  echo "| layer8 RPS / Envoy RPS | $(ratio "$(v layer8.wrk_rps)" "$(v envoy.wrk_rps)") | $(ratio "$(v layer8.h2_rps)" "$(v envoy.h2_rps)") |"
  echo "| layer8 RPS / nginx-proxy RPS | $(ratio "$(v layer8.wrk_rps)" "$(v nginx.wrk_rps)") | $(ratio "$(v layer8.h2_rps)" "$(v nginx.h2_rps)") |"
  if [ "$BENCH_ROUNDS" -gt 1 ]; then
    echo
    echo "RPS columns above are medians of $BENCH_ROUNDS interleaved rounds; p50/p99/RSS come from the last round. Per round:"
    echo
    echo "| target | wrk RPS per round | h2load RPS per round |"
    echo "|---|---|---|"
    for tgt in $BENCH_TARGETS; do
      echo "| $(label "$tgt") | ${ALL[$tgt.wrk_rps]:-} | ${ALL[$tgt.h2_rps]:-} |"
    done
  fi
  echo
  echo "| tool | version |"
  echo "|---|---|"
  printf '%s\n' "${VERSIONS[@]}" | awk '!seen[$0]++'
} > "$WORK/report.md"

cp "$WORK/report.md" "$BENCH_OUT"
cat "$WORK/report.md"
log "report written to $BENCH_OUT"
