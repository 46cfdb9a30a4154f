#!/usr/bin/env python3
"""Differential test harness: capture a server's answers to tests/differential/sequences.json.

Usage:
    python3 tests/differential/capture.py http://127.0.0.1:3900 [OUT_DIR] [SEQUENCES]

SEQUENCES defaults to sequences.json (SpacetimeDB 1.3); sequences-2x.json holds the scenarios of
2.x modules, captured against SpacetimeDB 2.8.3 into reference-2x/ (see README-2x.md).

Runs every scenario of sequences.json, in file order, against the server at argv[1] and writes
OUT_DIR/<scenario>.json (default OUT_DIR: tests/differential/reference/). The Rust test
crates/cli/tests/differential.rs replays the same scenarios against Epoch and MUST mirror everything
below exactly; change both together. It writes Epoch's answers, in the same format, to
target/tmp/differential-actual/, so `diff -r tests/differential/reference target/tmp/differential-actual`
shows every difference.

Refreshing the reference (database names are fixed, so the server needs a fresh data dir):
    rm -rf /tmp/ref-diff-data
    nohup /root/.cache/epoch-reference/run.sh 127.0.0.1:3900 /tmp/ref-diff-data >/tmp/ref.log 2>&1 &
    until curl -s http://127.0.0.1:3900/v1/ping; do sleep 1; done
    python3 tests/differential/capture.py http://127.0.0.1:3900
    kill <the server's pid>
Two captures against two fresh reference servers gave byte-identical files. A full run takes about
15 s (the typecheck-spin scenario waits for the reference to stop an endless reducer).

Scenario format (sequences.json): a list of {"name", "actors", "steps"}.
  * "actors": names of identities created, in order, with POST /v1/identity at the start of the
    scenario (these requests are not recorded).
  * A step: {"as", "method", "path", "headers", "body", "body_file"} plus optional keys
      "save_db": label under which to remember the database identity this publish returns
                 (default: the returned "domain", if any);
      "sort_array": KEY: sort the elements of the first `"KEY":[...]` array of the body after
                    normalisation, so storage order does not matter ("rows" for SQL results,
                    "identities" for /v1/identity/:id/databases);
      "record_headers": extra response header names to record for this step (e.g. CORS headers,
                    checked on a few steps only so one missing header does not flood the report);
      "ignore_body": record the body as "<ignored>" (e.g. the server's public key);
      "sort_json": parse the body as JSON and sort every array in it, at any depth, by its
                 elements' compact JSON text, then write it compactly again (2.8.3 builds
                 /schema?version=10 from hash maps: its order changes from one run to the next);
      "save_plan": label under which to remember the migration token of this step's
                 pre_publish answer (`"token":"0x…"`), for {plan:X} in later steps;
      "note": free text, ignored.
  * "as": an actor name, or "anon" for no Authorization header. For an actor the runner sends
    `Authorization: Bearer <token>`.
  * "body": a string or null; "body_file": a fixture module name (tests/fixtures/modules/<name>.wasm)
    or null, sent as the raw body.
  * In "path", header values and "body", the runner substitutes {token:X} and {identity:X} (actor X's
    token and bare-hex identity), {db:X} (the bare-hex identity of the database labelled X) and
    {plan:X} (the migration token saved under X).

Requests: raw HTTP/1.1 over a socket (urllib would add a Content-Type to every POST, which would
defeat the "missing content-type" cases). Exactly these lines, in this order:
    <METHOD> <path> HTTP/1.1 / Host: <host>:<port> / Connection: close /
    Authorization: Bearer <token> (actors only) / the step's headers sorted by name /
    Content-Length: <n> (when a body is given, or the method is POST, PUT or PATCH).
The response is read to EOF; chunked bodies are decoded.

Recorded per step: "request" ("METHOD template-path", for humans), "status", "headers" (only the
names in RECORDED_HEADERS plus the step's record_headers that are present, values normalised with
normalise_text), and "body" (normalised text).
spacetime-execution-duration-micros, spacetime-energy-used, date, content-length etc. are never
recorded; CORS headers only on the few steps that ask for them.

Normalisation (function normalise_body / normalise_text), in this order:
  0. ignore_body: the body becomes "<ignored>" and nothing else applies.
  1. NDJSON log bodies (content-type application/x-ndjson): drop every line containing
     `"filename":"spacetimedb"`. Those are the host's own lines ("Creating table ...",
     "Invoking `init` reducer", "Database initialized"), whose wording is internal to the
     reference. Everything else is compared exactly (after steps 2-5): module log lines (level,
     target, filename, line_number, message), "external" lines that the reference writes for
     failed external calls (unknown reducer, invalid arguments), reducer Err lines, and Panic
     lines including their "trace" (the demangled wasm frame names, which come from the module's
     name section and so are reproducible). Logs are fetched with num_lines=1000 (the whole log);
     small num_lines tails are compared too, and are picked so that they hold no host lines.
     Scenarios that panic have their own database so their traces do not hide other log
     differences.
  2. JWTs (`eyJ[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]*\\.[A-Za-z0-9_-]*`) become <token>, then
     `"token":"0x<hex>"` (a migration token, which hashes the database's random identity)
     becomes `"token":"<migration-token>"`.
  3. 64-hex-digit identities, optionally prefixed by 0x, not touching [0-9A-Za-z_] on either side,
     become <identity:X> for a known actor or database X, else <identity>. Exception: the value of
     "initial_program" (a module hash, deterministic) is kept as is.
  4. 16-hex-digit words (same boundaries) equal to the first 16 digits of a known identity become
     <identity-prefix:X> (the permission-denied messages abbreviate database identities).
  5. `"F":<-?digits>` becomes `"F":0` for F in ts, total_duration_micros,
     __timestamp_micros_since_unix_epoch__, iat, exp.
  6. If the step has sort_array KEY: the elements of the first `"KEY":[` array are sorted (as text,
     by code point); an empty array stays empty.
Body bytes are decoded as UTF-8, invalid sequences replaced (U+FFFD).

Python 3.11 standard library only.
"""
import json
import os
import re
import socket
import sys
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODULES = os.path.join(ROOT, "tests", "fixtures", "modules")

RECORDED_HEADERS = [
    "content-type",
    "allow",
    "upgrade",
    "cache-control",
    "spacetime-identity",
    "spacetime-identity-token",
]
ZEROED_FIELDS = ["ts", "total_duration_micros", "__timestamp_micros_since_unix_epoch__", "iat", "exp"]

WORD = re.compile(r"[0-9A-Za-z_]")
HEX = "0123456789abcdefABCDEF"
JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
ID_RE = re.compile(r"(?<![0-9A-Za-z_])(0x)?([0-9a-fA-F]{64})(?![0-9A-Za-z_])")
PREFIX_RE = re.compile(r"(?<![0-9A-Za-z_])([0-9a-fA-F]{16})(?![0-9A-Za-z_])")
ZERO_RE = re.compile(r'"(' + "|".join(ZEROED_FIELDS) + r')":-?[0-9]+')
SUBST_RE = re.compile(r"\{(token|identity|db|plan):([A-Za-z0-9_-]+)\}")
PLAN_TOKEN_RE = re.compile(r'"token":"(0x[0-9a-fA-F]+)"')
INITIAL_PROGRAM = '"initial_program":"'


# ------------------------------------------------------------------------------------------------
# Normalisation (mirrored by crates/cli/tests/differential.rs)

def normalise_text(text, known):
    """Steps 2-5. `known` maps lowercase bare-hex identities to labels."""
    text = JWT_RE.sub("<token>", text)
    text = PLAN_TOKEN_RE.sub('"token":"<migration-token>"', text)

    def identity(m):
        start = m.start()
        # keep the module hash of describe's "initial_program"
        if text[max(0, start - len(INITIAL_PROGRAM)):start] == INITIAL_PROGRAM:
            return m.group(0)
        label = known.get(m.group(2).lower())
        return f"<identity:{label}>" if label else "<identity>"

    text = ID_RE.sub(identity, text)
    prefixes = {}
    for hex_id, label in known.items():
        prefixes.setdefault(hex_id[:16], label)

    def prefix(m):
        label = prefixes.get(m.group(1).lower())
        return f"<identity-prefix:{label}>" if label else m.group(0)

    text = PREFIX_RE.sub(prefix, text)
    text = ZERO_RE.sub(lambda m: f'"{m.group(1)}":0', text)
    return text


def split_json_array(text, start):
    """`text[start]` is '['; returns (element texts, index just past the closing ']')."""
    assert text[start] == "["
    elems, depth, in_str, esc = [], 0, False, False
    i, elem_start = start + 1, start + 1
    while i < len(text):
        c = text[i]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            if depth == 0:
                last = text[elem_start:i]
                if last.strip() or elems:
                    elems.append(last)
                return elems, i + 1
            depth -= 1
        elif c == "," and depth == 0:
            elems.append(text[elem_start:i])
            elem_start = i + 1
        i += 1
    raise ValueError("unterminated JSON array")


def sort_array(text, name):
    key = '"' + name + '":['
    at = text.find(key)
    if at < 0:
        return text
    start = at + len(key) - 1
    elems, end = split_json_array(text, start)
    return text[: start + 1] + ",".join(sorted(elems)) + text[end - 1:]


def normalise_body(body, content_type, step, known):
    text = body.decode("utf-8", errors="replace")
    if step.get("ignore_body"):
        return "<ignored>"
    if content_type.startswith("application/x-ndjson"):
        lines = text.split("\n")
        text = "\n".join(line for line in lines if '"filename":"spacetimedb"' not in line)
    text = normalise_text(text, known)
    if step.get("sort_array"):
        text = sort_array(text, step["sort_array"])
    if step.get("sort_json"):
        text = compact(sort_json(json.loads(text)))
    return text


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sort_json(value):
    """Every array in `value`, at any depth, sorted by its elements' compact JSON text."""
    if isinstance(value, list):
        return sorted((sort_json(v) for v in value), key=compact)
    if isinstance(value, dict):
        return {k: sort_json(v) for k, v in value.items()}
    return value


# ------------------------------------------------------------------------------------------------
# HTTP

def http(host, port, method, path, headers, body):
    """headers: list of (name, value) in sending order. Returns (status, {lower name: value}, bytes)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    with socket.create_connection((host, port), timeout=300) as s:
        s.sendall(request)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise RuntimeError(f"malformed response to {method} {path}: {raw[:200]!r}")
    head_lines = head.decode("latin-1").split("\r\n")
    status = int(head_lines[0].split(" ")[1])
    resp_headers = {}
    for line in head_lines[1:]:
        name, _, value = line.partition(":")
        resp_headers[name.strip().lower()] = value.strip()
    if "chunked" in resp_headers.get("transfer-encoding", "").lower():
        rest = dechunk(rest)
    elif "content-length" in resp_headers:
        rest = rest[: int(resp_headers["content-length"])]
    return status, resp_headers, rest


def dechunk(data):
    out, i = b"", 0
    while True:
        j = data.index(b"\r\n", i)
        size = int(data[i:j].split(b";")[0].strip(), 16)
        if size == 0:
            return out
        out += data[j + 2: j + 2 + size]
        i = j + 2 + size + 2


# ------------------------------------------------------------------------------------------------
# Runner

def substitute(text, actors, dbs, plans):
    def repl(m):
        kind, name = m.group(1), m.group(2)
        if kind == "plan":
            if name not in plans:
                raise KeyError(f"unknown plan label {name!r}")
            return plans[name]
        if kind == "db":
            if name not in dbs:
                raise KeyError(f"unknown database label {name!r}")
            return dbs[name]
        if name not in actors:
            raise KeyError(f"unknown actor {name!r}")
        return actors[name][kind]

    return SUBST_RE.sub(repl, text)


def run_scenario(host, port, scenario):
    actors, dbs, plans = {}, {}, {}  # name -> {"identity","token"}; label -> hex; label -> token
    for name in scenario["actors"]:
        status, _, body = http(host, port, "POST", "/v1/identity", [], None)
        if status != 200:
            raise RuntimeError(f"POST /v1/identity: {status}")
        j = json.loads(body)
        actors[name] = {"identity": j["identity"].lower(), "token": j["token"]}
    results = []
    for step in scenario["steps"]:
        known = {a["identity"]: name for name, a in actors.items()}
        known.update({hex_id: label for label, hex_id in dbs.items()})
        method = step["method"]
        path = substitute(step["path"], actors, dbs, plans)
        headers = []
        if step["as"] != "anon":
            headers.append(("Authorization", "Bearer " + actors[step["as"]]["token"]))
        for k in sorted(step.get("headers") or {}):
            headers.append((k, substitute(step["headers"][k], actors, dbs, plans)))
        body = None
        if step.get("body_file"):
            name = step["body_file"]
            name = name if name.endswith(".wasm") else name + ".wasm"
            with open(os.path.join(MODULES, name), "rb") as f:
                body = f.read()
        elif step.get("body") is not None:
            body = substitute(step["body"], actors, dbs, plans).encode()
        status, resp_headers, resp_body = http(host, port, method, path, headers, body)
        if step.get("save_plan"):
            m = PLAN_TOKEN_RE.search(resp_body.decode("utf-8", "replace"))
            if m:
                plans[step["save_plan"]] = m.group(1)
        # remember published databases
        if status == 200 and path.startswith("/v1/database") and method in ("PUT", "POST") \
                and "/names" not in path and "/call/" not in path and "/sql" not in path:
            try:
                success = json.loads(resp_body)["Success"]
                label = step.get("save_db") or success.get("domain")
                if label:
                    dbs[label] = success["database_identity"].lower()
            except (ValueError, KeyError, TypeError):
                pass
        known = {a["identity"]: name for name, a in actors.items()}
        known.update({hex_id: label for label, hex_id in dbs.items()})
        content_type = resp_headers.get("content-type", "")
        names = RECORDED_HEADERS + [h.lower() for h in step.get("record_headers") or [] if h.lower() not in RECORDED_HEADERS]
        recorded = {h: normalise_text(resp_headers[h], known) for h in names if h in resp_headers}
        results.append({
            "request": f"{method} {step['path']}",
            "status": status,
            "headers": recorded,
            "body": normalise_body(resp_body, content_type, step, known),
        })
    return results


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    url = urlsplit(sys.argv[1])
    host, port = url.hostname, url.port or 80
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "reference")
    sequences = sys.argv[3] if len(sys.argv) > 3 else os.path.join(HERE, "sequences.json")
    os.makedirs(out_dir, exist_ok=True)
    with open(sequences) as f:
        scenarios = json.load(f)
    for scenario in scenarios:
        steps = run_scenario(host, port, scenario)
        with open(os.path.join(out_dir, scenario["name"] + ".json"), "w") as f:
            f.write('{\n  "scenario": ' + json.dumps(scenario["name"]) + ',\n  "steps": [\n')
            f.write(",\n".join("    " + json.dumps(s, ensure_ascii=False) for s in steps))
            f.write("\n  ]\n}\n")
        print(f"{scenario['name']}: {len(steps)} steps", file=sys.stderr)


if __name__ == "__main__":
    main()
