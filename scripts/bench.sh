#!/usr/bin/env bash
# The side-by-side benchmark outside CI: builds Epoch in release mode and runs `epoch bench`
# against the reference SpacetimeDB 1.3 server when it is built (../shared/tools/build-reference.sh
# writes it to ~/.cache/epoch-reference), writing the table to bench-results.json.
# Usage: scripts/bench.sh [--quick] [--only WORKLOADS] [--seconds N] ...   (any `epoch bench` option)
set -euo pipefail
cd "$(dirname "$0")/.."
ref="${EPOCH_REFERENCE:-$HOME/.cache/epoch-reference}"
cargo build --release -q -p epoch-cli
args=(--json "${EPOCH_BENCH_JSON:-bench-results.json}")
if [ -x "$ref/spacetimedb-standalone" ] || [ -f "$ref" ]; then
  args+=(--reference "$ref")
else
  echo "reference server not built: Epoch's figures only (run ../shared/tools/build-reference.sh for ratios)" >&2
fi
exec ./target/release/epoch bench "${args[@]}" "$@"
