#!/usr/bin/env bash
# The races of issue 10 (two identities publishing one new name; a database deleted while its
# resync runs), each tried many times, ending with a SIGKILL in the middle of one. Opt-in: CI
# runs the same tests with a few tries. Usage: scripts/race-soak.sh [TRIES] (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
tries="${1:-200}"
EPOCH_RACE_TRIES="$tries" cargo test --release -p epoch-cli --test hardening -- \
  concurrent_publishes_of_one_new_name a_deleted_databases_workflows_never_touch --test-threads 1
