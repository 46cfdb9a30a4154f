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

host="$(rustc -vV | sed -n 's/^host: //p')"
cd "$src"

# ---------------------------------------------------------------------------------------------
# 2. V8 stand-in: librusty_v8.a made of aborting stubs for every extern symbol the v8 crate
#    declares (its extern "C" blocks in src/**/*.rs, those generated by macro_rules! included,
#    and the prebuilt bindgen file for this target, whose C++ symbols carry link_name).
# ---------------------------------------------------------------------------------------------
stub_archive="$stubdir/librusty_v8.a"
if [ ! -f "$stub_archive" ]; then
  log "fetching crates"
  cargo fetch --target "$host"
  v8_dir="$(cargo metadata --format-version 1 --filter-platform "$host" \
    | python3 -c 'import json,os,sys
pk=[p for p in json.load(sys.stdin)["packages"] if p["name"]=="v8" and p["source"]]
print(os.path.dirname(pk[0]["manifest_path"]) if len(pk)==1 else "")')"
  [ -n "$v8_dir" ] && [ -d "$v8_dir/src" ] || { log "cannot find the v8 crate's sources"; exit 1; }
  binding="$v8_dir/gen/src_binding_release_$host.rs"
  [ -f "$binding" ] || { log "missing $binding"; exit 1; }
  log "generating V8 stubs from $v8_dir"
  rm -rf "$stubdir"; mkdir -p "$stubdir"
  mapfile -d '' v8_sources < <(find "$v8_dir/src" -name '*.rs' -print0 | sort -z)
  python3 - "$binding" "${v8_sources[@]}" > "$stubdir/v8_stubs.c" <<'PY'
import pathlib, re, sys

def blank(text):
    """Copy of text with comments and string/char literal contents replaced by spaces."""
    out = list(text); i = 0; n = len(text)
    def wipe(a, b):
        for k in range(a, b):
            if out[k] != "\n": out[k] = " "
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i); j = n if j < 0 else j
            wipe(i, j); i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j): depth += 1; j += 2
                elif text.startswith("*/", j): depth -= 1; j += 2
                else: j += 1
            wipe(i, j); i = j
        elif re.match(r'(?:b|c)?r#*"', text[i:i+40]) and (i == 0 or not (text[i-1].isalnum() or text[i-1] == "_")):
            m = re.match(r'(?:b|c)?r(#*)"', text[i:])
            close = '"' + m.group(1)
            j = text.find(close, i + m.end()); j = n if j < 0 else j + len(close)
            wipe(i + 1, j - 1); i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            wipe(i + 1, j); i = j + 1
        elif c == "'":
            m = re.match(r"'(\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'", text[i:])
            if m: wipe(i + 1, i + m.end() - 1); i += m.end()
            else: i += 1  # a lifetime
        else:
            i += 1
    return "".join(out)

def match_close(b, start):
    """b[start] is an opening bracket; returns the index just past its match."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    stack = []
    for j in range(start, len(b)):
        ch = b[j]
        if ch in pairs: stack.append(pairs[ch])
        elif ch in ")]}":
            if not stack or stack.pop() != ch: raise ValueError("unbalanced brackets")
            if not stack: return j + 1
    raise ValueError("unclosed bracket")

EXTERN = re.compile(r'\bextern\s+"[^"\n]*"\s*\{')  # on blanked text, whose ABI string is blank
ITEM = re.compile(r'\b(fn|static)\s+(?:mut\s+)?(\$\w+|\[<[^>]*>\]|\w+)')

def extern_items(text, b, lo, hi):
    """(kind, name or macro template, link_name) of each item of the extern blocks in b[lo:hi]."""
    items = []
    for m in EXTERN.finditer(b, lo, hi):
        end = match_close(b, m.end() - 1)
        pos = m.end()
        while True:
            it = ITEM.search(b, pos, end)
            if not it: break
            ln = re.findall(r'link_name\s*=\s*"([^"]*)"', text[pos:it.start()])
            j = it.end(); depth = 0  # the item ends at its ';' at bracket depth 0
            while j < end:
                ch = b[j]
                if ch in "([{": depth += 1
                elif ch in ")]}": depth -= 1
                elif ch == ";" and depth == 0: break
                j += 1
            items.append((it.group(1), it.group(2), ln[-1] if ln else None))
            pos = j + 1
    return items

funcs, datas, unresolved = set(), set(), []
def add(kind, name, link_name):
    sym = (link_name if link_name is not None else name).replace("\\u{1}", "").lstrip("\x01")
    (funcs if kind == "fn" else datas).add(sym)

for path in sys.argv[1:]:
    text = pathlib.Path(path).read_text()
    b = blank(text)
    macros = []  # (name, start, end, $vars:ident in the first rule's matcher)
    for m in re.finditer(r'\bmacro_rules!\s*(\w+)\s*\{', b):
        hi = match_close(b, m.end() - 1)
        arrow = b.find("=>", m.end(), hi)
        macros.append((m.group(1), m.start(), hi, re.findall(r'\$(\w+):ident', b[m.end():arrow])))
    in_macro = lambda pos: any(lo <= pos < hi for _, lo, hi, _ in macros)
    for m in EXTERN.finditer(b):
        if not in_macro(m.start()):
            for item in extern_items(text, b, m.start(), match_close(b, m.end() - 1)):
                add(*item)
    # extern blocks inside macro_rules!: expand them for each invocation in the same file
    for mname, lo, hi, vars_ in macros:
        templates = extern_items(text, b, lo, hi)
        if not templates: continue
        for im in re.finditer(r'\b' + mname + r'!\s*[\(\{\[]', b):
            if lo <= im.start() < hi: continue
            args = re.sub(r'#\s*\[[^\]]*\]', " ", b[im.end():match_close(b, im.end() - 1) - 1])
            idents = re.findall(r'[A-Za-z_]\w*', args)
            if len(idents) != len(vars_):
                unresolved.append(f"{path}: {mname}!({' '.join(args.split())})"); continue
            env = dict(zip(vars_, idents))
            for kind, name, ln in templates:
                s = re.sub(r'\$(\w+)', lambda v: env.get(v.group(1), v.group(0)), name)
                if s.startswith("[<"): s = re.sub(r'\s+', "", s[2:-2])
                if "$" in s: unresolved.append(f"{path}: {name}"); continue
                add(kind, s, ln)

for u in unresolved: print("warning: unexpanded macro item:", u, file=sys.stderr)
print(f"v8 stubs: {len(funcs)} functions, {len(datas)} data symbols", file=sys.stderr)
out = ["/* Generated by epoch's scripts/build-spacetimedb-2.sh: stand-ins for librusty_v8.a.",
       "   Every function aborts: this SpacetimeDB build refuses JavaScript modules and never",
       "   starts V8. */",
       "#include <stdio.h>", "#include <stdlib.h>", "",
       "__attribute__((noreturn, cold)) static void v8_stub_called(const char *name) {",
       '  fprintf(stderr, "fatal: V8 is not available in this build (%s called)\\n", name);',
       "  abort();", "}", ""]
for k, s in enumerate(sorted(funcs)):
    out.append(f'void v8_stub_fn_{k}(void) __asm__("{s}");\n'
               f'void v8_stub_fn_{k}(void) {{ v8_stub_called("{s}"); }}')
for k, s in enumerate(sorted(datas)):
    out.append(f'extern unsigned char v8_stub_data_{k}[256] __asm__("{s}");\n'
               f'__attribute__((aligned(64))) unsigned char v8_stub_data_{k}[256];')
print("\n".join(out))
PY
  gcc -O1 -fPIC -c "$stubdir/v8_stubs.c" -o "$stubdir/v8_stubs.o"
  ar rcs "$stub_archive.tmp" "$stubdir/v8_stubs.o"
  mv "$stub_archive.tmp" "$stub_archive"
fi

# ---------------------------------------------------------------------------------------------
# 3. Build (about 30 minutes on 2 cores) and install.
# ---------------------------------------------------------------------------------------------
log "building in $src (target dir $CARGO_TARGET_DIR)"
start=$(date +%s)
SPACETIMEDB_NIX_BUILD_GIT_COMMIT="$commit" RUSTY_V8_ARCHIVE="$stub_archive" \
  cargo build --release -p spacetimedb-standalone -p spacetimedb-cli \
    --features spacetimedb-standalone/allow_loopback_http_for_tests
log "build took $(( $(date +%s) - start ))s"

out="$CARGO_TARGET_DIR/release"
mkdir -p "$bin"
install -m 755 "$out/spacetimedb-standalone" "$bin/spacetimedb-standalone"
install -m 755 "$out/spacetimedb-cli" "$bin/spacetimedb-cli"
install -m 755 "$out/spacetimedb-cli" "$bin/spacetime"
"$bin/spacetime" --version >/dev/null
"$bin/spacetimedb-standalone" --help >/dev/null
echo "$bin"
