#!/usr/bin/env bash
# Restart time and on-disk size, Epoch and the reference SpacetimeDB 1.3 server side by side:
# publish bank, insert ROWS accounts in one reducer call, SIGKILL the server, measure the data
# directory, restart, and time until a COUNT(*) answers with every row.
# Usage: scripts/bench-restart.sh [ROWS]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
rows="${1:-1000000}"
ref="${EPOCH_REFERENCE:-$HOME/.cache/epoch-reference/run.sh}"
cargo build --release -q -p epoch-cli
tmp="$(mktemp -d)"
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

wait_up() { for _ in $(seq 600); do curl -sf "$1/v1/ping" >/dev/null && return 0; sleep 0.05; done; return 1; }
now_ms() { date +%s%3N; }

# measure NAME URL START_CMD...: prints on-disk bytes and restart milliseconds.
measure() {
  local name="$1" url="$2"; shift 2
  "$@" >/dev/null 2>&1 & local pid=$!
  wait_up "$url"
  local token
  token="$(curl -sf -X POST "$url/v1/identity" | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')"
  curl -sf -X PUT "$url/v1/database/bank" -H "Authorization: Bearer $token" \
    --data-binary @tests/fixtures/modules/bank.wasm >/dev/null
  curl -sf -X POST "$url/v1/database/bank/call/open_accounts" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d "[0, $rows, 1]" >/dev/null
  sleep 1 # let an asynchronous log (the reference's) reach the disk
  kill -9 $pid; wait $pid 2>/dev/null || true
  local bytes
  bytes="$(du -sb "$tmp/$name" | cut -f1)"
  local t0; t0="$(now_ms)"
  "$@" >/dev/null 2>&1 & pid=$!
  until curl -sf -X POST "$url/v1/database/bank/sql" -H "Authorization: Bearer $token" \
      -d 'SELECT COUNT(*) AS n FROM account' 2>/dev/null | grep -q "\[\[$rows\]\]"; do
    sleep 0.02
  done
  local t1; t1="$(now_ms)"
  kill -9 $pid; wait $pid 2>/dev/null || true
  echo "$name: $rows rows, on disk $((bytes / 1024)) KiB, restart to first answer $((t1 - t0)) ms"
}

measure epoch http://127.0.0.1:3960 ./target/release/epoch start --listen-addr 127.0.0.1:3960 --data-dir "$tmp/epoch"
if [ -x "$ref" ]; then
  measure reference http://127.0.0.1:3961 "$ref" 127.0.0.1:3961 "$tmp/reference"
else
  echo "reference server not installed: run ../shared/tools/build-reference.sh for a side-by-side comparison"
fi
