#!/usr/bin/env bash
# Real-client smoke test of a layer8 binary (or anything accepting Envoy's `-c FILE`).
#
#   bash e2e/proxy_smoke.sh                                   # LAYER8_BIN=target/debug/layer8
#   LAYER8_BIN=target/release/layer8 bash e2e/proxy_smoke.sh
#   LAYER8_BIN="$(bash .ci/install-deps.sh)" bash e2e/proxy_smoke.sh   # reference run with Envoy
#
# Environment:
#   LAYER8_BIN          binary under test (default target/debug/layer8 in this repo; a bare
#                       name is looked up on PATH)
#   LAYER8_CONCURRENCY  --concurrency passed to it (default 2)
#   LAYER8_EXTRA_ARGS   extra flags (default none; with Envoy, --disable-hot-restart avoids a
#                       clash with another Envoy running on the same machine)
#   SMOKE_READY_TIMEOUT seconds to wait for /ready (default 30)
#
# It starts Python's http.server on a free loopback port serving hello.txt ("hello"),
# writes a bootstrap with an HTTP listener (http_connection_manager -> router -> cluster
# upstream) and a tcp_proxy listener (-> cluster upstream), starts the binary and checks with
# curl and h2load. Needs curl, h2load (nghttp2-client) and python3: bash .ci/install-deps.sh.
# Last line: "N passed, M failed"; exit status 0 only when M is 0.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

LAYER8_BIN="${LAYER8_BIN:-$ROOT/target/debug/layer8}"
LAYER8_CONCURRENCY="${LAYER8_CONCURRENCY:-2}"
LAYER8_EXTRA_ARGS="${LAYER8_EXTRA_ARGS:-}"
SMOKE_READY_TIMEOUT="${SMOKE_READY_TIMEOUT:-30}"

PASSED=0
FAILED=0
PIDS=()
WORK=""

say() { printf '[smoke] %s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); printf 'ok   - %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL - %s\n' "$1"; shift; for l in "$@"; do printf '       %s\n' "$l"; done; }
summary_and_exit() {
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ] && exit 0
  exit 1
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  [ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ prerequisites
if [ ! -f "$LAYER8_BIN" ] && [[ "$LAYER8_BIN" != */* ]] && command -v "$LAYER8_BIN" >/dev/null 2>&1; then
  LAYER8_BIN="$(command -v "$LAYER8_BIN")"
fi
if [ ! -x "$LAYER8_BIN" ]; then
  fail "binary under test exists" "LAYER8_BIN=$LAYER8_BIN is not an executable file (build it, or set LAYER8_BIN)"
  summary_and_exit
fi
for t in curl h2load python3; do
  if ! command -v "$t" >/dev/null 2>&1; then
    fail "tool $t available" "$t not found on PATH (run: bash .ci/install-deps.sh)"
    summary_and_exit
  fi
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/layer8-smoke.XXXXXX")"

# N distinct free loopback ports (held open together while picking)
read -r UP_PORT ADMIN_PORT HTTP_PORT TCP_PORT <<<"$(python3 - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"

# ------------------------------------------------------------------ upstream
mkdir -p "$WORK/www"
printf 'hello' > "$WORK/www/hello.txt"
# Python's http.server (what `python3 -m http.server` runs: threaded, HTTP/1.0, one connection
# per request), but with a listen backlog of 128 instead of socketserver's 5: with the default,
# h2load's 40 concurrent streams overflow the backlog, SYNs get dropped, and any proxy answers
# 503 after its 1 s connect timeout.
python3 - "$UP_PORT" "$WORK/www" >"$WORK/upstream.log" 2>&1 <<'EOF' &
import functools, http.server, sys
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
Server(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
EOF
PIDS+=("$!")
up_ok=0
for _ in $(seq 1 100); do
  if [ "$(curl -s --max-time 1 "http://127.0.0.1:$UP_PORT/hello.txt")" = hello ]; then up_ok=1; break; fi
  sleep 0.1
done
if [ "$up_ok" != 1 ]; then
  fail "upstream (python http.server) serves hello.txt" "$(tail -5 "$WORK/upstream.log")"
  summary_and_exit
fi
say "upstream http.server on 127.0.0.1:$UP_PORT"

# ------------------------------------------------------------------ bootstrap
cat > "$WORK/bootstrap.yaml" <<EOF
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: $ADMIN_PORT }
static_resources:
  listeners:
  - name: http
    address:
      socket_address: { address: 127.0.0.1, port_value: $HTTP_PORT }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          codec_type: AUTO
          stat_prefix: ingress
          route_config:
            name: local_route
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: upstream }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: tcp
    address:
      socket_address: { address: 127.0.0.1, port_value: $TCP_PORT }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: upstream
  clusters:
  - name: upstream
    type: STATIC
    lb_policy: ROUND_ROBIN
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: $UP_PORT }
EOF

# ------------------------------------------------------------------ start the binary
say "starting $LAYER8_BIN (admin :$ADMIN_PORT, http :$HTTP_PORT, tcp :$TCP_PORT)"
# shellcheck disable=SC2086  # LAYER8_EXTRA_ARGS is a word list on purpose
"$LAYER8_BIN" -c "$WORK/bootstrap.yaml" --concurrency "$LAYER8_CONCURRENCY" $LAYER8_EXTRA_ARGS \
  >"$WORK/layer8.log" 2>&1 &
L8_PID=$!
PIDS+=("$L8_PID")

ready=0
code=""
for _ in $(seq 1 $((SMOKE_READY_TIMEOUT * 10))); do
  if ! kill -0 "$L8_PID" 2>/dev/null; then break; fi
  code="$(curl -s --max-time 1 -o "$WORK/ready.body" -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/ready" 2>/dev/null)"
  if [ "$code" = 200 ] && [ "$(od -An -c "$WORK/ready.body" | tr -s ' ')" = "$(printf 'LIVE\n' | od -An -c | tr -s ' ')" ]; then
    ready=1; break
  fi
  sleep 0.1
done
if [ "$ready" = 1 ]; then
  pass "GET /ready on admin -> 200 'LIVE\\n'"
else
  if kill -0 "$L8_PID" 2>/dev/null; then why="not ready after ${SMOKE_READY_TIMEOUT}s"; else why="process exited"; fi
  fail "GET /ready on admin -> 200 'LIVE\\n'" "$why; last status=${code:-none}, body=$(od -An -c "$WORK/ready.body" 2>/dev/null | tr -s ' ')" \
    "--- last lines of the binary's log:" "$(tail -20 "$WORK/layer8.log")"
  summary_and_exit
fi

# ------------------------------------------------------------------ assertions
# check_get NAME URL EXPECTED_HTTP_VERSION(or '') [curl args...]
check_get() {
  local name="$1" url="$2" want_ver="$3"; shift 3
  local out body code ver
  out="$(curl -sS --max-time 5 "$@" -o "$WORK/body" -w '%{http_code} %{http_version}' "$url" 2>&1)"
  code="${out%% *}"; ver="${out##* }"
  body="$(cat "$WORK/body" 2>/dev/null; printf x)"; body="${body%x}"   # keep trailing newlines
  if [ "$code" = 200 ]; then pass "$name: status 200"
  else fail "$name: status 200" "got: $out"; fi
  if [ "$body" = hello ]; then pass "$name: body 'hello'"
  else fail "$name: body 'hello'" "got: $(printf %q "$body")"; fi
  if [ -n "$want_ver" ]; then
    if [ "$ver" = "$want_ver" ]; then pass "$name: response is HTTP/$want_ver"
    else fail "$name: response is HTTP/$want_ver" "got HTTP/$ver"; fi
  fi
  rm -f "$WORK/body"
}

check_get "HTTP/1.1 GET /hello.txt via http listener" "http://127.0.0.1:$HTTP_PORT/hello.txt" 1.1 --http1.1
check_get "h2c (prior knowledge) GET /hello.txt via http listener" "http://127.0.0.1:$HTTP_PORT/hello.txt" 2 --http2-prior-knowledge
check_get "HTTP/1.1 GET /hello.txt via tcp_proxy listener" "http://127.0.0.1:$TCP_PORT/hello.txt" "" --http1.1

h2out="$(h2load -n 200 -c 4 -m 10 "http://127.0.0.1:$HTTP_PORT/hello.txt" 2>&1)"
want_req="requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored, 0 timeout"
got_req="$(printf '%s\n' "$h2out" | grep -m1 '^requests:')"
if [ "$got_req" = "$want_req" ]; then pass "h2load -n 200 -c 4 -m 10 (h2c): 200 succeeded, 0 failed"
else fail "h2load -n 200 -c 4 -m 10 (h2c): 200 succeeded, 0 failed" "want: $want_req" "got:  ${got_req:-<no requests line>}" "$(printf '%s\n' "$h2out" | tail -15)"; fi
got_status="$(printf '%s\n' "$h2out" | grep -m1 '^status codes:')"
if [ "$got_status" = "status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx" ]; then pass "h2load: all 200 responses are 2xx"
else fail "h2load: all 200 responses are 2xx" "got: ${got_status:-<no status codes line>}"; fi
if printf '%s\n' "$h2out" | grep -q '^Application protocol: h2c$'; then pass "h2load: negotiated h2c"
else fail "h2load: negotiated h2c" "$(printf '%s\n' "$h2out" | grep -m1 -i 'protocol' || echo '<no protocol line>')"; fi

if kill -0 "$L8_PID" 2>/dev/null; then pass "binary still running after the checks"
else fail "binary still running after the checks" "$(tail -20 "$WORK/layer8.log")"; fi

if [ "$FAILED" -gt 0 ]; then
  echo "--- last lines of the binary's log ($LAYER8_BIN):"
  tail -20 "$WORK/layer8.log"
fi
summary_and_exit
