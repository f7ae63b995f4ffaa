#!/usr/bin/env bash
# User-space instructions per proxied HTTP/1.1 request, counted by callgrind: a measure of
# layer8's own CPU cost that, unlike RPS on a shared machine, does not move between runs.
#
#   cargo build --release
#   bash benches/proxy/instructions.sh            # N=5000 requests after a 2000-request warm-up
#
# Environment: N (requests measured), LAYER8_BIN, TOP (functions listed, default 25), KEEP (a
# file to copy the callgrind profile to, for callgrind_annotate or kcachegrind), ACCESS_LOG=1
# (add Istio's sidecar access log, written to /dev/null: the cost of logging every request),
# TARGET=nginx (count nginx as the reverse proxy instead, one worker, with run.sh's proxy
# settings: the same measure for the peer layer8 is compared with).
# Needs valgrind, nginx, h2load (`apt-get install valgrind nginx-light nghttp2-client`).
# One worker (`--concurrency 1`), 8 h2load connections, nginx upstream with a 20-byte body, the
# bootstrap of benches/proxy/run.sh. Prints instructions per request and the functions with the
# most instructions of their own.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
N="${N:-5000}"
TOP="${TOP:-25}"
LAYER8_BIN="${LAYER8_BIN:-$ROOT/target/release/layer8}"
PATH="$PATH:/usr/sbin:/sbin"
for t in valgrind callgrind_control nginx h2load curl python3; do
  command -v "$t" >/dev/null || { echo "$t not found" >&2; exit 1; }
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/layer8-instr.XXXXXX")"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP="$(port)"; PROXY="$(port)"; ADMIN="$(port)"
cat > "$WORK/nginx.conf" <<NGX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK; proxy_temp_path $WORK; fastcgi_temp_path $WORK;
  uwsgi_temp_path $WORK; scgi_temp_path $WORK;
  server { listen 127.0.0.1:$UP; keepalive_requests 100000000;
           location / { return 200 "hello from upstream\n"; } }
}
NGX
nginx -p "$WORK" -c "$WORK/nginx.conf" -e "$WORK/nginx.err"
sed -e "s/\${ADMIN_PORT}/$ADMIN/g" -e "s/\${PROXY_PORT}/$PROXY/g" -e "s/\${UPSTREAM_PORT}/$UP/g" \
  "$HERE/bootstrap.yaml.tmpl" > "$WORK/bootstrap.yaml"
if [ "${ACCESS_LOG:-0}" = 1 ]; then
  # Istio's sidecar format (istiod 1.9 `meshConfig.accessLogFile`), inserted before route_config.
  python3 - "$WORK/bootstrap.yaml" <<'PY'
import sys
p = sys.argv[1]
fmt = ('[%START_TIME%] \\"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\\" '
       '%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% '
       '\\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
       '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \\"%REQ(X-FORWARDED-FOR)%\\" \\"%REQ(USER-AGENT)%\\" '
       '\\"%REQ(X-REQUEST-ID)%\\" \\"%REQ(:AUTHORITY)%\\" \\"%UPSTREAM_HOST%\\" %UPSTREAM_CLUSTER% '
       '%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% '
       '%REQUESTED_SERVER_NAME% %ROUTE_NAME%\\n')
log = ('          access_log:\n'
       '          - name: envoy.access_loggers.file\n'
       '            typed_config:\n'
       '              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n'
       '              path: /dev/null\n'
       '              log_format: { text_format: "' + fmt + '" }\n')
s = open(p).read().replace('          route_config:\n', log + '          route_config:\n', 1)
open(p, 'w').write(s)
PY
fi
TARGET="${TARGET:-layer8}"
if [ "$TARGET" = nginx ]; then
  mkdir -p "$WORK/px"
  cat > "$WORK/px/nginx.conf" <<NGX
worker_processes 1;
master_process off;
daemon off;
pid $WORK/px/nginx.pid;
error_log $WORK/px/nginx.err warn;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $WORK/px; proxy_temp_path $WORK/px; fastcgi_temp_path $WORK/px;
  uwsgi_temp_path $WORK/px; scgi_temp_path $WORK/px;
  keepalive_requests 100000000; keepalive_timeout 300s;
  upstream up { server 127.0.0.1:$UP; keepalive 256; keepalive_requests 100000000; }
  server { listen 127.0.0.1:$PROXY;
           location / { proxy_pass http://up; proxy_http_version 1.1;
                        proxy_set_header Connection ""; } }
}
NGX
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" -e "$WORK/px/nginx.err" >"$WORK/layer8.log" 2>&1 &
else
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "$LAYER8_BIN" -c "$WORK/bootstrap.yaml" --concurrency 1 >"$WORK/layer8.log" 2>&1 &
fi
PIDS+=($!)
for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$PROXY/" && break; sleep 0.2; done
h2load --h1 -n 2000 -c 8 "http://127.0.0.1:$PROXY/" >/dev/null
callgrind_control -z "${PIDS[0]}" >/dev/null 2>&1
h2load --h1 -n "$N" -c 8 "http://127.0.0.1:$PROXY/" | grep -E '^requests:'
callgrind_control -d "${PIDS[0]}" >/dev/null 2>&1
sleep 0.5
[ -n "${KEEP:-}" ] && cp "$(ls -t "$WORK"/cg.*.1 | head -1)" "$KEEP"
python3 - "$(ls -t "$WORK"/cg.*.1 | head -1)" "$N" "$TOP" "$TARGET" <<'PY'
import collections, re, sys
path, n, top, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
names, own = {}, collections.Counter()
fn, after_call = None, False
def resolve(tok):
    m = re.match(r'\((\d+)\)(?: (.*))?', tok)
    if not m:
        return tok
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), m.group(1))
for line in open(path, errors='replace'):
    if line.startswith('fn='):
        fn, after_call = resolve(line[3:].strip()), False
    elif line.startswith('cfn='):
        resolve(line[4:].strip())
    elif line.startswith('calls='):
        after_call = True
    elif line[:1].isdigit() or line[:1] in '+-*':
        parts = line.split()
        if len(parts) >= 2:
            if after_call:
                after_call = False  # the inclusive cost of a call: counted in the callee
            else:
                own[fn] += int(parts[1])
total = sum(own.values())
print(f"{target}: {total // n} instructions per request (user space, {n} requests)")
for f, c in own.most_common(top):
    print(f"{c / total * 100:5.1f}% {c // n:6d}  {f[:140]}")
PY
