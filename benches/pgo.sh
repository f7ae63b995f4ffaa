#!/usr/bin/env bash
# Build layer8 with profile-guided optimization (PGO), trained on the benchmark workloads.
#
#   bash benches/pgo.sh                   # -> target/pgo/release/layer8
#   LAYER8_BIN=target/pgo/release/layer8 bash benches/proxy/run.sh
#
# 1. An instrumented release build (`-Cprofile-generate`, in target/pgo-gen).
# 2. Training: that binary serves the proxy bootstrap of benches/proxy (nginx upstream) to wrk
#    (HTTP/1.1 keep-alive) and h2load (h2c), then a runtime listener to h2load posting GetState
#    and SaveState over gRPC, on the in-memory store and on Redis. Each process is stopped
#    through /quitquitquit, so it exits normally and writes its profile.
# 3. `llvm-profdata merge`, then the release build again with `-Cprofile-use` (in target/pgo).
#
# What PGO buys is code layout and branch weights: the hot path of a request packed together,
# fewer instruction-cache and branch misses, which is most of what a sidecar woken for every
# request pays. Code the training never runs (TLS, xDS, the other runtime APIs) is laid out as
# cold: still correct, and no slower than without PGO by more than layout costs.
#
# Needs llvm-profdata of rustc's LLVM major version (`rustc -vV`; on Debian
# `apt-get install llvm-22`), wrk, h2load, nginx and redis-server (`bash .ci/install-deps.sh`).
# Environment: TRAIN_SECONDS (each wrk / h2load proxy run, default 8), TRAIN_CALLS (gRPC calls
# per runtime row, default 40000), LLVM_PROFDATA (the tool, if not found by version).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TRAIN_SECONDS="${TRAIN_SECONDS:-8}"
TRAIN_CALLS="${TRAIN_CALLS:-40000}"
PATH="$PATH:/usr/sbin:/sbin"
log() { printf '[pgo] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

LLVM_MAJOR="$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')"
PROFDATA="${LLVM_PROFDATA:-}"
if [ -z "$PROFDATA" ]; then
  for c in "llvm-profdata-$LLVM_MAJOR" "/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-profdata"; do
    command -v "$c" >/dev/null 2>&1 && { PROFDATA="$c"; break; }
  done
fi
[ -n "$PROFDATA" ] || die "llvm-profdata for LLVM $LLVM_MAJOR not found (apt-get install llvm-$LLVM_MAJOR)"
for t in wrk h2load nginx redis-server curl python3; do
  command -v "$t" >/dev/null 2>&1 || die "$t not found (bash .ci/install-deps.sh)"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/layer8-pgo.XXXXXX")"
chmod 755 "$WORK"   # nginx workers may run as another user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/up.pid" ] && kill "$(cat "$WORK/up.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cd "$ROOT"
log "instrumented build (target/pgo-gen)"
# Build scripts and proc macros get the flag too; their profiles land in build-profiles/ and are
# not used. A fixed directory keeps RUSTFLAGS, and so cargo's incremental rebuild, stable.
RUSTFLAGS="-Cprofile-generate=$ROOT/target/pgo-gen/build-profiles" \
  cargo build --release --bin layer8 --target-dir target/pgo-gen
GEN="$ROOT/target/pgo-gen/release/layer8"

# ------------------------------------------------------------------ training
UP="$(port)"; PX="$(port)"; AD="$(port)"; RP="$(port)"; GP="$(port)"; RA="$(port)"
[ "$(id -u)" = 0 ] && USER_LINE="user root;" || USER_LINE=""
cat > "$WORK/up.conf" <<NGX
$USER_LINE
worker_processes 1;
pid $WORK/up.pid;
error_log $WORK/up.err;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK;
  uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  keepalive_requests 100000000;
  server { listen 127.0.0.1:$UP; location / { return 200 "hello from upstream\n"; } }
}
NGX
nginx -p "$WORK" -c "$WORK/up.conf" -e "$WORK/up.err"
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
PIDS+=($!)

# Start the instrumented binary on config $1 with admin port $2; it writes $WORK/profiles/*.
start() {
  LLVM_PROFILE_FILE="$WORK/profiles/layer8-%p.profraw" "$GEN" -c "$1" --concurrency 2 -l warn \
    >"$WORK/layer8.log" 2>&1 &
  PIDS+=($!)
  L8=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/ready" >/dev/null && return; sleep 0.1; done
  cat "$WORK/layer8.log" >&2
  die "layer8 did not become ready"
}
stop() {  # $1 = admin port
  curl -s -X POST "http://127.0.0.1:$1/quitquitquit" >/dev/null || true
  wait "$L8" || true
}

sed -e "s/\${ADMIN_PORT}/$AD/g" -e "s/\${PROXY_PORT}/$PX/g" -e "s/\${UPSTREAM_PORT}/$UP/g" \
  "$HERE/proxy/bootstrap.yaml.tmpl" > "$WORK/proxy.yaml"
start "$WORK/proxy.yaml" "$AD"
log "proxy: wrk (HTTP/1.1) and h2load (h2c), ${TRAIN_SECONDS}s each"
wrk -t2 -c64 -d"${TRAIN_SECONDS}s" "http://127.0.0.1:$PX/" | grep Requests/sec >&2
h2load -t2 -c4 -m25 -D "$TRAIN_SECONDS" "http://127.0.0.1:$PX/" | grep "^finished in" >&2
stop "$AD"

cat > "$WORK/runtime.json" <<JSON
{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": $RA}}},
 "static_resources": {"listeners": [{"name": "runtime",
  "address": {"socket_address": {"address": "127.0.0.1", "port_value": $GP}},
  "filter_chains": [{"filters": [{"name": "layer8.runtime", "typed_config": {
   "@type": "type.googleapis.com/xds.type.v3.TypedStruct", "type_url": "layer8.runtime.v1.Runtime",
   "value": {"grpc_config": {"state": {"memory": {"type": "in-memory"},
    "redis": {"type": "redis", "metadata": {"redisHost": "127.0.0.1:$RP"}}}}}}}]}]}]}}
JSON
start "$WORK/runtime.json" "$RA"
for store in memory redis; do
  for op in GetState SaveState; do
    # A framed unary gRPC request: GetStateRequest{store_name, key} or
    # SaveStateRequest{store_name, states: [StateItem{key, value}]}.
    python3 - "$WORK/body.bin" "$store" "$op" <<'PY'
import sys
def field(n, v):
    v = v if isinstance(v, bytes) else v.encode()
    return bytes([n << 3 | 2, len(v)]) + v
path, store, op = sys.argv[1:]
if op == "GetState":
    msg = field(1, store) + field(2, "bench-key")
else:
    msg = field(1, store) + field(2, field(1, "bench-key") + field(2, b"xxx"))
open(path, "wb").write(b"\0" + len(msg).to_bytes(4, "big") + msg)
PY
    log "runtime: $op on $store, $TRAIN_CALLS calls"
    h2load -n "$TRAIN_CALLS" -c 16 -m 1 -d "$WORK/body.bin" -H content-type:application/grpc \
      -H te:trailers "http://127.0.0.1:$GP/spec.proto.runtime.v1.Runtime/$op" \
      | grep -q "$TRAIN_CALLS succeeded" || die "$op on $store failed"
  done
done
stop "$RA"

ls "$WORK"/profiles/*.profraw >/dev/null 2>&1 || die "no profile written"
"$PROFDATA" merge -o "$WORK/layer8.profdata" "$WORK"/profiles/*.profraw
mkdir -p target/pgo
cp "$WORK/layer8.profdata" target/pgo/layer8.profdata

# ------------------------------------------------------------------ optimized build
log "optimized build (target/pgo)"
# The profile only covers layer8's own process, so crates the training never ran (build
# scripts, proc macros) get none: mismatch warnings for them are expected noise.
RUSTFLAGS="-Cprofile-use=$ROOT/target/pgo/layer8.profdata -Cllvm-args=-no-pgo-warn-mismatch" \
  cargo build --release --bin layer8 --target-dir target/pgo
log "done: target/pgo/release/layer8"
