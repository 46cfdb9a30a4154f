#!/usr/bin/env bash
# Builds SpacetimeDB 2.8.3's `spacetimedb-standalone` server and `spacetimedb-cli` (installed as
# `spacetime` and `spacetimedb-cli`) from the local mirror, for running the 2.x reference server.
#
#   scripts/build-spacetimedb-2.sh        -> $HOME/.cache/epoch/spacetimedb-2.8.3/bin/
#
# Idempotent: if both binaries are installed it prints their directory and exits at once.
# Offline-friendly: only crates.io is needed (GitHub is not). To make that possible the exported
# sources are patched (never the mirror):
#   * the workspace member `crates/bench` (git dependency on an iai-callgrind fork) is dropped;
#   * the CLI's `rolldown*` dependencies (git; TypeScript bundler) are dropped, and bundling a
#     TypeScript module fails with "bundling TypeScript modules is not available in this build";
#   * `rust-toolchain.toml` is deleted (the installed stable toolchain is used);
#   * V8 (`librusty_v8.a` is normally downloaded) is replaced by a static archive of stubs that
#     abort, and the host refuses JavaScript modules before V8 would ever be initialised.
# The server is built with `allow_loopback_http_for_tests` so procedures may reach 127.0.0.1.
#
# Environment: SPACETIMEDB_MIRROR (default /work/.mirror/clockworklabs+SpacetimeDB/repo),
#              SPACETIMEDB_CACHE (default $HOME/.cache/epoch/spacetimedb-2.8.3).
# Exit codes: 0 built/installed, 2 the mirror (or its tag) is missing, 1 anything else.
set -euo pipefail

tag=v2.8.3
mirror="${SPACETIMEDB_MIRROR:-/work/.mirror/clockworklabs+SpacetimeDB/repo}"
base="${SPACETIMEDB_CACHE:-$HOME/.cache/epoch/spacetimedb-2.8.3}"
src="$base/src"
bin="$base/bin"
stubdir="$base/v8-stub"
export CARGO_TARGET_DIR="$base/target"

log() { echo "build-spacetimedb-2: $*" >&2; }

if [ -x "$bin/spacetime" ] && [ -x "$bin/spacetimedb-standalone" ]; then
  echo "$bin"
  exit 0
fi

if ! git -C "$mirror" rev-parse -q --verify "$tag^{commit}" >/dev/null 2>&1; then
  if [ -d "$mirror" ]; then
    echo "build-spacetimedb-2: the SpacetimeDB mirror at $mirror has no tag $tag" >&2
  else
    echo "build-spacetimedb-2: the SpacetimeDB git mirror is missing: expected a bare repository at" \
      "$mirror (set SPACETIMEDB_MIRROR to another copy holding tag $tag)" >&2
  fi
  exit 2
fi
commit="$(git -C "$mirror" rev-parse "$tag^{commit}")"

for tool in cargo gcc ar python3 tar; do
  command -v "$tool" >/dev/null || { log "$tool is required"; exit 1; }
done

# ---------------------------------------------------------------------------------------------
# 1. Export and patch the sources (only when missing; done in a temporary directory first so an
#    interrupted export is never mistaken for a complete one).
# ---------------------------------------------------------------------------------------------
if [ ! -f "$src/.epoch-patched" ]; then
  log "exporting $tag ($commit) to $src"
  rm -rf "$src" "$src.tmp"
  mkdir -p "$src.tmp"
  # One blob under crates/engine/testdata/v1.2/replicas is missing from the mirror; git archive
  # still reports it on stderr even when it is excluded, so that one message is filtered out.
  git -C "$mirror" archive "$tag" -- . ':(exclude)crates/engine/testdata/v1.2/replicas' \
    2> >(grep -v "crates/engine/testdata/v1.2/replicas" >&2) | tar -x -C "$src.tmp"
  [ -f "$src.tmp/Cargo.toml" ] && [ -f "$src.tmp/crates/standalone/Cargo.toml" ] \
    || { log "export of $tag is incomplete"; exit 1; }

  rm -f "$src.tmp/rust-toolchain.toml"

  python3 - "$src.tmp" <<'PY'
import pathlib, re, sys

root = pathlib.Path(sys.argv[1])

def edit(rel, fn):
    p = root / rel
    old = p.read_text()
    new = fn(old)
    if new == old:
        sys.exit(f"patch of {rel} did not apply")
    p.write_text(new)

def drop_lines(pattern, n_expected):
    def fn(text):
        lines = text.splitlines(keepends=True)
        kept = [l for l in lines if not re.match(pattern, l)]
        if len(lines) - len(kept) != n_expected:
            sys.exit(f"expected to drop {n_expected} lines matching {pattern!r}, "
                     f"found {len(lines) - len(kept)}")
        return "".join(kept)
    return fn

# Workspace: no crates/bench (git dependency), no rolldown (git dependency).
edit("Cargo.toml", drop_lines(r'\s*"crates/bench",\s*$', 1))
edit("Cargo.toml", drop_lines(r'rolldown\w* = \{ git = ', 4))
# CLI: no rolldown; TypeScript bundling reports an error instead.
edit("crates/cli/Cargo.toml", drop_lines(r'rolldown\w*\.workspace = true', 4))
edit("crates/cli/src/tasks/javascript.rs", lambda _: '''\
// Patched by epoch's scripts/build-spacetimedb-2.sh: the rolldown bundler (a git dependency) is
// not available, so TypeScript modules cannot be built by this CLI.
use std::path::{Path, PathBuf};

pub(crate) fn build_javascript(_project_path: &Path, _build_debug: bool) -> anyhow::Result<PathBuf> {
    anyhow::bail!("bundling TypeScript modules is not available in this build")
}
''')

# Host: V8 is a stub archive here. V8 is initialised lazily by the first JavaScript module
# (V8_RUNTIME_GLOBAL); refuse such modules before that can happen.
def refuse_js(text):
    anchor = ("        core: AllocatedJobCore,\n"
              "    ) -> anyhow::Result<ModuleWithInstance> {\n"
              "        V8_RUNTIME_GLOBAL\n")
    if text.count(anchor) != 1:
        sys.exit("V8Runtime::make_actor not found in crates/core/src/host/v8/mod.rs")
    return text.replace(anchor, anchor.replace(
        "        V8_RUNTIME_GLOBAL\n",
        "        if true {\n"
        "            // Patched by epoch's scripts/build-spacetimedb-2.sh: V8 is not linked.\n"
        "            anyhow::bail!(\"JavaScript modules are not supported by this build (V8 is not available)\");\n"
        "        }\n"
        "        V8_RUNTIME_GLOBAL\n"))
edit("crates/core/src/host/v8/mod.rs", refuse_js)
PY
  touch "$src.tmp/.epoch-patched"
  mv "$src.tmp" "$src"
fi
