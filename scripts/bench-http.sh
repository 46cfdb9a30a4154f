#!/usr/bin/env bash
# HTTP reducer throughput: bank.transfer_fast with wrk (2 threads, 16 connections): Epoch with
# fsync group commit (answers only durable transactions), Epoch with async durability, and, when
# it is installed (../shared/tools/build-reference.sh), the reference SpacetimeDB 1.3 server (which
# answers before its transaction is on disk), one after the other on the same machine.
# Usage: scripts/bench-http.sh [SECONDS]   (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
ref="${EPOCH_REFERENCE:-$HOME/.cache/epoch-reference/run.sh}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p epoch-cli
tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

wait_up() { for _ in $(seq 100); do curl -sf "$1/v1/ping" >/dev/null && return 0; sleep 0.1; done; return 1; }

# bench NAME URL: publishes bank, opens 1,000 accounts, runs wrk; prints requests/s.
bench() {
  local name="$1" url="$2" token
  token="$(curl -sf -X POST "$url/v1/identity" | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')"
  curl -sf -X PUT "$url/v1/database/bench" -H "Authorization: Bearer $token" \
    --data-binary @tests/fixtures/modules/bank.wasm >/dev/null
  curl -sf -X POST "$url/v1/database/bench/call/open_accounts" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '[0, 1000, 1000000000]' >/dev/null
  local db
  db="$(curl -sf "$url/v1/database/bench/identity")"
  EPOCH_BENCH_TOKEN="$token" wrk -t2 -c16 -d"${secs}s" --latency -s benches/http/transfer_fast.lua \
    "$url/v1/database/$db/call/transfer_fast" > "$tmp/$name.txt"
  local rps p99
  rps="$(awk '/Requests\/sec/ {print $2}' "$tmp/$name.txt")"
  p99="$(awk '$1=="99%" {print $2}' "$tmp/$name.txt")"
  local non2xx
  non2xx="$(awk '/Non-2xx/ {print $5}' "$tmp/$name.txt")"
  echo "$name: ${rps} calls/s, p99 ${p99}, non-2xx ${non2xx:-0}" >&2
  echo "$rps"
}

./target/release/epoch start --listen-addr 127.0.0.1:3950 --data-dir "$tmp/epoch" >/dev/null 2>&1 &
pid=$!
wait_up http://127.0.0.1:3950
epoch_rps="$(bench "epoch (sync, fsync group commit)" http://127.0.0.1:3950)"
kill $pid 2>/dev/null || true

./target/release/epoch start --listen-addr 127.0.0.1:3952 --data-dir "$tmp/epoch-async" --durability async >/dev/null 2>&1 &
pid=$!
wait_up http://127.0.0.1:3952
bench "epoch (async durability)" http://127.0.0.1:3952 >/dev/null
kill $pid 2>/dev/null || true

if [ -x "$ref" ]; then
  "$ref" 127.0.0.1:3951 "$tmp/ref" >/dev/null 2>&1 &
  wait_up http://127.0.0.1:3951
  ref_rps="$(bench reference http://127.0.0.1:3951)"
  python3 -c "print(f'epoch (sync) / reference = {float(\"$epoch_rps\") / float(\"$ref_rps\"):.2f}x')"
else
  echo "reference server not installed: run ../shared/tools/build-reference.sh for a side-by-side ratio"
fi
