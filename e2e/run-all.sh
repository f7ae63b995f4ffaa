#!/usr/bin/env bash
# The one test command: installs what the tests need (Debian packages, a Python venv with Envoy),
# then runs every Rust test (unit, integration, differential against Envoy) and the real-client
# e2e scripts. Usage: bash e2e/run-all.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ENVOY="$(bash .ci/install-deps.sh)"
export LAYER8_ENVOY="$ENVOY"
export PATH="$(dirname "$ENVOY"):$PATH"
echo "[run-all] envoy: $("$ENVOY" --version 2>/dev/null | tail -1)"

# A one-shot build gains nothing from incremental state, which would double target/'s size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=2

echo "[run-all] e2e: real clients (curl, h2load) against target/debug/layer8"
LAYER8_BIN="$ROOT/target/debug/layer8" bash e2e/proxy_smoke.sh
