#!/usr/bin/env bash
# WebSocket benchmarks side by side: Epoch (sync durability: every update and reply is sent only
# once its transaction is fsynced) and, when it is installed (../shared/tools/build-reference.sh),
# the reference SpacetimeDB 1.3 server, one after the other in the same run, with the bank module:
# reducer calls/s and p99 from 1, 16 and 64 clients, fan-out latency to 100 and 1,000
# subscribers, and the time to a 100,000-row initial subscription.
# Usage: scripts/bench-ws.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
ref="${EPOCH_REFERENCE:-$HOME/.cache/epoch-reference/run.sh}"
ulimit -n 65536 2>/dev/null || true
cargo build --release -q -p epoch-cli
tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
wait_up() { for _ in $(seq 100); do curl -sf "$1/v1/ping" >/dev/null && return 0; sleep 0.1; done; return 1; }

./target/release/epoch start --listen-addr 127.0.0.1:3960 --data-dir "$tmp/epoch" >/dev/null 2>&1 &
wait_up http://127.0.0.1:3960
targets=(--target epoch=http://127.0.0.1:3960)
if [ -x "$ref" ]; then
  "$ref" 127.0.0.1:3961 "$tmp/ref" >/dev/null 2>&1 &
  wait_up http://127.0.0.1:3961
  targets+=(--target reference=http://127.0.0.1:3961)
else
  echo "reference server not installed: run ../shared/tools/build-reference.sh for side-by-side ratios" >&2
fi
./target/release/epoch bench-ws "${targets[@]}" --seconds "$secs" ${EPOCH_BENCH_ONLY:+--only "$EPOCH_BENCH_ONLY"}
