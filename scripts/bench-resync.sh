#!/usr/bin/env bash
# Resync throughput: N aggregates (default 100,000) across seven types with delaySeconds=0 from a
# file:// store and, with --s3, from moto's S3 server; meanwhile wrk calls another reducer of the
# same database (ingest_shadow, 4 connections) to measure how responsive it stays (p99).
# Usage: scripts/bench-resync.sh [N] [--s3]     (needs wrk; --s3 needs moto[server])
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"
s3="${2:-}"
cargo build --release -q -p epoch-cli
tmp="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
key=bench-key
echo "$key" > "$tmp/key"

python3 - "$tmp/store" "$n" <<'PY'
import json, os, sys
root, n = sys.argv[1], int(sys.argv[2])
types = ["user", "lock", "hub", "matter-device", "camera", "camera-role", "rtsp-camera"]
for i in range(n):
    t = types[i % 7]
    d = os.path.join(root, t)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{t}-{i // 7:06d}.json"), "w") as f:
        json.dump({"version": 1, "type": t, "n": i}, f)
PY

./target/release/epoch start --listen-addr 127.0.0.1:3970 --data-dir "$tmp/data" --admin-api-key-file "$tmp/key" >/dev/null 2>&1 &
url=http://127.0.0.1:3970
for _ in $(seq 100); do curl -sf "$url/v1/ping" >/dev/null && break; sleep 0.1; done
token="$(curl -sf -X POST "$url/v1/identity" | python3 -c 'import sys,json;print(json.load(sys.stdin)["token"])')"
curl -sf -X PUT "$url/v1/database/proj" -H "Authorization: Bearer $token" --data-binary @tests/fixtures/modules/projections.wasm >/dev/null
db="$(curl -sf "$url/v1/database/proj/identity")"

store_config="{\"url\": \"file://$tmp/store\"}"
if [ "$s3" = "--s3" ]; then
  port=3971
  moto_server -H 127.0.0.1 -p $port >/dev/null 2>&1 &
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port" >/dev/null && break; sleep 0.2; done
  curl -sf -X PUT "http://127.0.0.1:$port/bench" >/dev/null
  echo "uploading $n objects to moto..." >&2
  python3 - "$tmp/store" "http://127.0.0.1:$port/bench/agg" <<'PY'
import os, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
root, base = sys.argv[1], sys.argv[2]
def put(path):
    rel = os.path.relpath(path, root)
    with open(path, "rb") as f:
        req = urllib.request.Request(f"{base}/{rel}", data=f.read(), method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(req).read()
paths = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
with ThreadPoolExecutor(8) as ex:
    list(ex.map(put, paths))
# moto treats a body without a content type as a form and stores nothing: check one object
# (reads need a signature; boto3 comes with moto).
import boto3
endpoint, bucket, prefix = base.rsplit("/", 2)
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1")
probe = s3.get_object(Bucket=bucket, Key=f"{prefix}/{os.path.relpath(paths[0], root)}")["Body"].read()
assert probe, "moto stored an empty object; the upload is broken"
PY
  store_config="{\"url\": \"s3://bench/agg\", \"endpoint\": \"http://127.0.0.1:$port\", \"region\": \"us-east-1\", \"accessKeyId\": \"t\", \"secretAccessKey\": \"t\"}"
fi
curl -sf -X PUT "$url/v1/database/proj/sync/config" -H "X-Admin-API-Key: $key" -H "Authorization: Bearer $token" \
  -d "{\"objectStore\": $store_config}" >/dev/null

start=$(date +%s%3N)
id="$(curl -sf -X POST "$url/v1/database/proj/sync/resync-projections?batchSize=1000&delaySeconds=0" \
  -H "X-Admin-API-Key: $key" -H "Authorization: Bearer $token" | python3 -c 'import sys,json;print(json.load(sys.stdin)["instanceId"])')"
EPOCH_BENCH_TOKEN="$token" wrk -t1 -c4 -d3600s --latency -s benches/http/ingest_shadow.lua \
  "$url/v1/database/$db/call/ingest_shadow" > "$tmp/wrk.txt" &
wrk_pid=$!
while :; do
  status="$(curl -sf "$url/v1/database/proj/sync/workflows/$id" -H "X-Admin-API-Key: $key" -H "Authorization: Bearer $token" \
    | python3 -c 'import sys,json;v=json.load(sys.stdin);print(v["status"], v["done"])')"
  case "$status" in complete*|errored*|terminated*) break;; esac
  sleep 0.2
done
end=$(date +%s%3N)
kill -INT $wrk_pid; wait $wrk_pid 2>/dev/null || true
secs=$(python3 -c "print(($end - $start) / 1000)")
echo "resync of $n aggregates (${s3:-file}): $status in ${secs}s = $(python3 -c "print(round($n / (($end - $start) / 1000)))") aggregates/s"
echo "other reducer calls meanwhile: $(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt") calls/s, p99 $(awk '$1=="99%" {print $2}' "$tmp/wrk.txt")"
