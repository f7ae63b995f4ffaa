#!/usr/bin/env bash
# CPU, syscalls and context switches per runtime API call: layer8 serving GetState over gRPC from
# a Redis state store (or the in-memory one), driven by h2load, with what Redis spends per call
# beside it and redis-benchmark's HMGET at the same concurrency for reference.
#
#   cargo build --release
#   bash benches/runtime_cpu.sh                  # 16 connections, one worker, Redis
#   CONNS=1 CONCURRENCY=2 bash benches/runtime_cpu.sh
#
# Environment: CONNS (h2load connections, one call in flight on each; default 16), CALLS
# (default 100000), CONCURRENCY (layer8 --concurrency, default 1), STORE (redis or memory),
# LAYER8_BIN (default target/release/layer8), SPREAD=1 (the runtime listener gets
# `connection_balance_config: exact_balance`, spreading its connections over the workers instead
# of keeping them on the first).
# Needs h2load, redis-server, redis-benchmark, perf (`apt-get install linux-perf`) and python3.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CONNS="${CONNS:-16}"
CALLS="${CALLS:-100000}"
CONCURRENCY="${CONCURRENCY:-1}"
STORE="${STORE:-redis}"
BALANCE=""
[ "${SPREAD:-0}" = 1 ] && BALANCE='"connection_balance_config": {"exact_balance": {}},'
LAYER8_BIN="${LAYER8_BIN:-$ROOT/target/release/layer8}"
PATH="$PATH:/usr/sbin:/sbin"
for t in h2load redis-server redis-benchmark perf python3; do
  command -v "$t" >/dev/null || { echo "$t not found" >&2; exit 1; }
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/layer8-rtcpu.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS="$(port)"; GRPC="$(port)"; ADMIN="$(port)"
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
RPID=$!; PIDS+=("$RPID")
cat > "$WORK/config.json" <<JSON
{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": $ADMIN}}},
 "static_resources": {"listeners": [{"name": "runtime",
  "address": {"socket_address": {"address": "127.0.0.1", "port_value": $GRPC}}, $BALANCE
  "filter_chains": [{"filters": [{"name": "layer8.runtime", "typed_config": {
   "@type": "type.googleapis.com/xds.type.v3.TypedStruct", "type_url": "layer8.runtime.v1.Runtime",
   "value": {"grpc_config": {"state": {"memory": {"type": "in-memory"},
    "redis": {"type": "redis", "metadata": {"redisHost": "127.0.0.1:$REDIS"}}}}}}}]}]}]}}
JSON
sleep 0.3
"$LAYER8_BIN" -c "$WORK/config.json" --concurrency "$CONCURRENCY" -l warn > "$WORK/layer8.log" 2>&1 &
LPID=$!; PIDS+=("$LPID")
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$GRPC") 2>/dev/null && break; sleep 0.1; done
# A framed GetStateRequest { store_name: $STORE, key: "bench-key" }.
python3 - "$WORK/body.bin" "$STORE" <<'PY'
import sys
def field(n, v): v = v.encode(); return bytes([n << 3 | 2, len(v)]) + v
msg = field(1, sys.argv[2]) + field(2, "bench-key")
open(sys.argv[1], "wb").write(b"\0" + len(msg).to_bytes(4, "big") + msg)
PY
run() {
  h2load -c "$CONNS" -m 1 -d "$WORK/body.bin" -H content-type:application/grpc -H te:trailers \
    "http://127.0.0.1:$GRPC/spec.proto.runtime.v1.Runtime/GetState" "$@"
}
run -n $((CALLS / 10)) > /dev/null   # warm-up
EVENTS=raw_syscalls:sys_enter,context-switches
perf stat -x, -e "$EVENTS" -p "$LPID" -o "$WORK/layer8.perf" & PERF1=$!
perf stat -x, -e "$EVENTS" -p "$RPID" -o "$WORK/redis.perf" & PERF2=$!
sleep 0.3
read -r U0 S0 < <(cut -d' ' -f14,15 "/proc/$LPID/stat")
run -n "$CALLS" --log-file="$WORK/latency.log" > "$WORK/h2load.txt"
read -r U1 S1 < <(cut -d' ' -f14,15 "/proc/$LPID/stat")
kill -INT "$PERF1" "$PERF2"; wait "$PERF1" "$PERF2" || true
grep -q "$CALLS succeeded" "$WORK/h2load.txt" || { cat "$WORK/h2load.txt" >&2; exit 1; }
echo "GetState on $STORE, layer8 --concurrency $CONCURRENCY${BALANCE:+ (spread)}, $CONNS connection(s) x 1, $CALLS calls"
echo "  $(grep -o '[0-9.]* req/s' "$WORK/h2load.txt")"
python3 - "$WORK/latency.log" "$CALLS" "$(getconf CLK_TCK)" "$U0" "$S0" "$U1" "$S1" <<'PY'
import sys
lat = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]))
n, tick, u0, s0, u1, s1 = map(int, sys.argv[2:])
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000
us = lambda t: t * 1e6 / tick / n
print(f"  latency p50 {p(.5):.3f} ms, p99 {p(.99):.3f} ms")
print(f"  layer8 CPU per call: user {us(u1 - u0):.2f} us, system {us(s1 - s0):.2f} us")
PY
for who in layer8 redis; do
  awk -F, -v n="$CALLS" -v who="$who" '$1 ~ /^[0-9.]+$/ { printf "  %-6s %-24s %.3f per call\n", who, $3, $1 / n }' \
    "$WORK/$who.perf"
done
if [ "$STORE" = redis ]; then
  redis-benchmark -p "$REDIS" -c "$CONNS" -n "$CALLS" --csv HMGET bench-key data version | tail -1 |
    awk -F, '{ gsub(/"/, ""); printf "  redis-benchmark -c %s HMGET: %s req/s, p50 %s ms, p99 %s ms\n", '"$CONNS"', $2, $5, $7 }'
fi
