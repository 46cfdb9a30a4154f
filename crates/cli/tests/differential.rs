//! Differential tests against SpacetimeDB 1.3.0's and 2.8.3's recorded HTTP answers.
//!
//! (The 2.8.3 suite is the same machinery with its own files: `sequences-2x.json`,
//! `reference-2x/`, `known-differences-2x.json`; see `tests/differential/README-2x.md`.)
//!
//! `tests/differential/sequences.json` lists scenarios of HTTP requests; `tests/differential/capture.py`
//! ran them once against the reference server and stored the normalised answers in
//! `tests/differential/reference/<scenario>.json`. This test starts `epoch start` on a free port with a
//! fresh data directory, replays every scenario exactly like capture.py (same request bytes, same
//! substitutions, same normalisation: see capture.py's header, which this file mirrors), and
//! compares status, recorded headers and body step by step. All mismatches are collected and
//! reported together. Epoch's own normalised answers are written to
//! `$CARGO_TARGET_TMPDIR/differential-actual/<scenario>.json` (same format as the reference) for
//! diffing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const RECORDED_HEADERS: &[&str] =
    &["content-type", "allow", "upgrade", "cache-control", "spacetime-identity", "spacetime-identity-token"];
const ZEROED_FIELDS: &[&str] = &["ts", "total_duration_micros", "__timestamp_micros_since_unix_epoch__", "iat", "exp"];
const INITIAL_PROGRAM: &str = "\"initial_program\":\"";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

// ------------------------------------------------------------------------------------------------
// The server under test

struct Server {
    child: Child,
    dir: PathBuf,
    host: String,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_epoch() -> Server {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("epoch-differential-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_epoch"))
        .args(["start", "--listen-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start epoch");
    let mut server = Server { child, dir, host: String::new(), port: 0 };
    let stdout = server.child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.trim().strip_prefix("epoch listening on http://") {
                    break rest.to_string();
                }
            }
            _ => panic!(
                "epoch exited before listening; stderr: {}",
                std::fs::read_to_string(server.dir.join("stderr.log")).unwrap_or_default()
            ),
        }
    };
    // keep draining stdout so the server never blocks on a full pipe
    std::thread::spawn(move || for _ in lines {});
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    server.host = host.to_string();
    server.port = port.parse().expect("port");
    server
}

// ------------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client (mirrors capture.py's `http`)

struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

fn http(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let mut lines =
        vec![format!("{method} {path} HTTP/1.1"), format!("Host: {host}:{port}"), "Connection: close".to_string()];
    for (k, v) in headers {
        lines.push(format!("{k}: {v}"));
    }
    if body.is_some() || matches!(method, "POST" | "PUT" | "PATCH") {
        lines.push(format!("Content-Length: {}", body.map_or(0, |b| b.len())));
    }
    let mut request = (lines.join("\r\n") + "\r\n\r\n").into_bytes();
    request.extend_from_slice(body.unwrap_or_default());
    let mut stream = TcpStream::connect((host, port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(300))).unwrap();
    stream.write_all(&request).map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| {
        format!("malformed response to {method} {path}: {:?}", String::from_utf8_lossy(&raw[..raw.len().min(200)]))
    })?;
    // latin-1, like capture.py
    let head: String = raw[..split].iter().map(|&b| b as char).collect();
    let mut rest = raw[split + 4..].to_vec();
    let mut head_lines = head.split("\r\n");
    let status_line = head_lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut resp_headers = BTreeMap::new();
    for line in head_lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        resp_headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    if resp_headers.get("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        rest = dechunk(&rest)?;
    } else if let Some(len) = resp_headers.get("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad content-length {len:?}"))?;
        rest.truncate(len);
    }
    Ok(Response { status, headers: resp_headers, body: rest })
}

fn dechunk(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let j = i + data[i..].windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_text = String::from_utf8_lossy(&data[i..j]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(j + 2..j + 2 + size).ok_or("short chunk")?);
        i = j + 2 + size + 2;
    }
}

// ------------------------------------------------------------------------------------------------
// Normalisation (mirrors capture.py's normalise_text / normalise_body)

/// Known identities in capture.py's dict order: actors, then databases. (lowercase hex, label)
type Known = Vec<(String, String)>;

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_jwt_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// `eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*` at `i`: the end of the match.
fn match_jwt(b: &[u8], i: usize) -> Option<usize> {
    if !b[i..].starts_with(b"eyJ") {
        return None;
    }
    let mut j = i + 3;
    for part in 0..3 {
        while j < b.len() && is_jwt_char(b[j]) {
            j += 1;
        }
        if part < 2 {
            if j < b.len() && b[j] == b'.' {
                j += 1;
            } else {
                return None;
            }
        }
    }
    Some(j)
}

/// `n` hex digits at `i`, followed by a non-word byte or the end.
fn hex_run(b: &[u8], i: usize, n: usize) -> bool {
    i + n <= b.len() && b[i..i + n].iter().all(u8::is_ascii_hexdigit) && (i + n == b.len() || !is_word(b[i + n]))
}

fn replace_jwts(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = match_jwt(b, i) {
            out.extend_from_slice(b"<token>");
            i = end;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn label_of<'a>(known: &'a Known, hex: &str) -> Option<&'a str> {
    let hex = hex.to_ascii_lowercase();
    // a later entry for the same identity wins, as in a Python dict update
    known.iter().rev().find(|(h, _)| *h == hex).map(|(_, l)| l.as_str())
}

fn replace_identities(text: &str, known: &Known) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if i == 0 || !is_word(b[i - 1]) {
            let m = if b[i..].starts_with(b"0x") && hex_run(b, i + 2, 64) {
                Some((i + 2, i + 66))
            } else if hex_run(b, i, 64) {
                Some((i, i + 64))
            } else {
                None
            };
            if let Some((hex_start, end)) = m {
                if b[..i].ends_with(INITIAL_PROGRAM.as_bytes()) {
                    out.extend_from_slice(&b[i..end]);
                } else {
                    let hex = std::str::from_utf8(&b[hex_start..end]).unwrap();
                    match label_of(known, hex) {
                        Some(label) => out.extend_from_slice(format!("<identity:{label}>").as_bytes()),
                        None => out.extend_from_slice(b"<identity>"),
                    }
                }
                i = end;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn replace_prefixes(text: &str, known: &Known) -> String {
    // first label per prefix, in dict order (Python's setdefault over the deduplicated dict)
    let mut dedup: Vec<(String, String)> = Vec::new();
    for (hex, label) in known {
        match dedup.iter_mut().find(|(h, _)| h == hex) {
            Some(entry) => entry.1 = label.clone(),
            None => dedup.push((hex.clone(), label.clone())),
        }
    }
    let mut prefixes: Vec<(String, String)> = Vec::new();
    for (hex, label) in &dedup {
        let p = hex[..16].to_string();
        if !prefixes.iter().any(|(q, _)| *q == p) {
            prefixes.push((p, label.clone()));
        }
    }
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if (i == 0 || !is_word(b[i - 1])) && hex_run(b, i, 16) {
            let word = std::str::from_utf8(&b[i..i + 16]).unwrap();
            let lower = word.to_ascii_lowercase();
            match prefixes.iter().find(|(p, _)| *p == lower) {
                Some((_, label)) => out.extend_from_slice(format!("<identity-prefix:{label}>").as_bytes()),
                None => out.extend_from_slice(word.as_bytes()),
            }
            i += 16;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn zero_fields(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    'outer: while i < b.len() {
        if b[i] == b'"' {
            for f in ZEROED_FIELDS {
                let key = format!("\"{f}\":");
                if b[i..].starts_with(key.as_bytes()) {
                    let mut j = i + key.len();
                    if j < b.len() && b[j] == b'-' {
                        j += 1;
                    }
                    let digits = j;
                    while j < b.len() && b[j].is_ascii_digit() {
                        j += 1;
                    }
                    if j > digits {
                        out.extend_from_slice(key.as_bytes());
                        out.push(b'0');
                        i = j;
                        continue 'outer;
                    }
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

const PLAN_TOKEN_KEY: &str = "\"token\":\"";

/// The migration token at the start of `text` (`0x` and hex digits, then a closing quote).
fn plan_token_at(text: &str) -> Option<&str> {
    let digits = text.strip_prefix("0x")?;
    let n = digits.bytes().take_while(u8::is_ascii_hexdigit).count();
    (n > 0 && digits.as_bytes().get(n) == Some(&b'"')).then(|| &text[..n + 2])
}

/// `"token":"0x<hex>"` → `"token":"<migration-token>"` (it hashes a random database identity).
fn replace_plan_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PLAN_TOKEN_KEY) {
        let value_start = at + PLAN_TOKEN_KEY.len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if let Some(token) = plan_token_at(rest) {
            out.push_str("<migration-token>");
            rest = &rest[token.len()..];
        }
    }
    out.push_str(rest);
    out
}

fn normalise_text(text: &str, known: &Known) -> String {
    let text = replace_plan_tokens(&replace_jwts(text));
    let text = replace_identities(&text, known);
    let text = replace_prefixes(&text, known);
    zero_fields(&text)
}

/// `text[start]` is '['; the element texts and the index just past the closing ']'.
fn split_json_array(text: &str, start: usize) -> (Vec<String>, usize) {
    let b = text.as_bytes();
    assert_eq!(b[start], b'[');
    let mut elems = Vec::new();
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    let mut elem_start = start + 1;
    for i in start + 1..b.len() {
        let c = b[i];
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'[' || c == b'{' {
            depth += 1;
        } else if c == b']' || c == b'}' {
            if depth == 0 {
                let last = &text[elem_start..i];
                if !last.trim().is_empty() || !elems.is_empty() {
                    elems.push(last.to_string());
                }
                return (elems, i + 1);
            }
            depth -= 1;
        } else if c == b',' && depth == 0 {
            elems.push(text[elem_start..i].to_string());
            elem_start = i + 1;
        }
    }
    panic!("unterminated JSON array in {text:?}");
}

fn sort_array(text: &str, name: &str) -> String {
    let key = format!("\"{name}\":[");
    let Some(at) = text.find(&key) else { return text.to_string() };
    let start = at + key.len() - 1;
    let (mut elems, end) = split_json_array(text, start);
    elems.sort();
    format!("{}{}{}", &text[..start + 1], elems.join(","), &text[end - 1..])
}

fn normalise_body(body: &[u8], content_type: &str, step: &Value, known: &Known) -> String {
    let mut text = String::from_utf8_lossy(body).into_owned();
    if step.get("ignore_body").and_then(Value::as_bool).unwrap_or(false) {
        return "<ignored>".to_string();
    }
    if content_type.starts_with("application/x-ndjson") {
        text = text.split('\n').filter(|l| !l.contains("\"filename\":\"spacetimedb\"")).collect::<Vec<_>>().join("\n");
    }
    let mut text = normalise_text(&text, known);
    if let Some(name) = step.get("sort_array").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        text = sort_array(&text, name);
    }
    if step.get("sort_json").and_then(Value::as_bool).unwrap_or(false) {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            text = sort_json(v).to_string();
        }
    }
    text
}

/// Every array in `v`, at any depth, sorted by its elements' compact JSON text (capture.py's
/// `sort_json`).
fn sort_json(v: Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.into_iter().map(sort_json).collect();
            items.sort_by_cached_key(|i| i.to_string());
            Value::Array(items)
        }
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, sort_json(v))).collect()),
        other => other,
    }
}

// ------------------------------------------------------------------------------------------------
// The runner (mirrors capture.py's run_scenario)

struct Actor {
    name: String,
    identity: String,
    token: String,
}

struct Ctx {
    actors: Vec<Actor>,
    dbs: Vec<(String, String)>,   // (label, hex), in first-insertion order
    plans: Vec<(String, String)>, // (label, migration token)
}

impl Ctx {
    fn known(&self) -> Known {
        let mut k: Known = self.actors.iter().map(|a| (a.identity.clone(), a.name.clone())).collect();
        k.extend(self.dbs.iter().map(|(l, h)| (h.clone(), l.clone())));
        k
    }

    /// `{token:X}`, `{identity:X}`, `{db:X}`, `{plan:X}`.
    fn substitute(&self, text: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let parsed = after.split_once(':').and_then(|(kind, tail)| {
                if !matches!(kind, "token" | "identity" | "db" | "plan") {
                    return None;
                }
                let n = tail.bytes().take_while(|&c| is_jwt_char(c)).count();
                (n > 0 && tail.as_bytes().get(n) == Some(&b'}')).then(|| (kind, &tail[..n], &tail[n + 1..]))
            });
            match parsed {
                Some((kind, name, tail)) => {
                    let value = match kind {
                        "db" => self.dbs.iter().find(|(l, _)| l == name).map(|(_, h)| h.clone()),
                        "plan" => self.plans.iter().find(|(l, _)| l == name).map(|(_, t)| t.clone()),
                        _ => self.actors.iter().find(|a| a.name == name).map(|a| {
                            if kind == "token" {
                                a.token.clone()
                            } else {
                                a.identity.clone()
                            }
                        }),
                    };
                    out.push_str(&value.ok_or_else(|| format!("unknown {kind} {name:?} in {text:?}"))?);
                    rest = tail;
                }
                None => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// RECORDED_HEADERS plus the step's `record_headers`, lowercased.
fn recorded_header_names(step: &Value) -> Vec<String> {
    let mut names: Vec<String> = RECORDED_HEADERS.iter().map(|h| h.to_string()).collect();
    for h in step.get("record_headers").and_then(Value::as_array).into_iter().flatten() {
        let h = h.as_str().unwrap().to_ascii_lowercase();
        if !names.contains(&h) {
            names.push(h);
        }
    }
    names
}

struct Recorded {
    request: String,
    status: u16,
    headers: Vec<(String, String)>, // in recorded_header_names order, like capture.py's dict
    body: String,
}

fn run_step(server: &Server, ctx: &mut Ctx, step: &Value) -> Result<Recorded, String> {
    let method = step["method"].as_str().unwrap();
    let template = step["path"].as_str().unwrap();
    let path = ctx.substitute(template)?;
    let mut headers = Vec::new();
    let as_ = step["as"].as_str().unwrap();
    if as_ != "anon" {
        let actor = ctx.actors.iter().find(|a| a.name == as_).ok_or_else(|| format!("unknown actor {as_}"))?;
        headers.push(("Authorization".to_string(), format!("Bearer {}", actor.token)));
    }
    if let Some(h) = step.get("headers").and_then(Value::as_object) {
        let mut names: Vec<&String> = h.keys().collect();
        names.sort();
        for k in names {
            headers.push((k.clone(), ctx.substitute(h[k].as_str().unwrap())?));
        }
    }
    let body: Option<Vec<u8>> =
        if let Some(name) = step.get("body_file").and_then(Value::as_str).filter(|s| !s.is_empty()) {
            let file = if name.ends_with(".wasm") { name.to_string() } else { format!("{name}.wasm") };
            let p = repo_root().join("tests/fixtures/modules").join(file);
            Some(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?)
        } else if let Some(b) = step.get("body").and_then(Value::as_str) {
            Some(ctx.substitute(b)?.into_bytes())
        } else {
            None
        };
    let resp = http(&server.host, server.port, method, &path, &headers, body.as_deref())?;
    if let Some(label) = step.get("save_plan").and_then(Value::as_str) {
        let text = String::from_utf8_lossy(&resp.body);
        let token = text.find(PLAN_TOKEN_KEY).and_then(|at| plan_token_at(&text[at + PLAN_TOKEN_KEY.len()..]));
        if let Some(token) = token {
            ctx.plans.retain(|(l, _)| l != label);
            ctx.plans.push((label.to_string(), token.to_string()));
        }
    }
    if resp.status == 200
        && path.starts_with("/v1/database")
        && matches!(method, "PUT" | "POST")
        && !path.contains("/names")
        && !path.contains("/call/")
        && !path.contains("/sql")
    {
        if let Ok(v) = serde_json::from_slice::<Value>(&resp.body) {
            if let Some(success) = v.get("Success") {
                let label = step
                    .get("save_db")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .or_else(|| success.get("domain").and_then(Value::as_str).filter(|s| !s.is_empty()));
                if let (Some(label), Some(id)) = (label, success.get("database_identity").and_then(Value::as_str)) {
                    let id = id.to_ascii_lowercase();
                    match ctx.dbs.iter_mut().find(|(l, _)| l == label) {
                        Some(entry) => entry.1 = id,
                        None => ctx.dbs.push((label.to_string(), id)),
                    }
                }
            }
        }
    }
    let known = ctx.known();
    let content_type = resp.headers.get("content-type").cloned().unwrap_or_default();
    let headers = recorded_header_names(step)
        .into_iter()
        .filter_map(|h| resp.headers.get(&h).map(|v| (h.clone(), normalise_text(v, &known))))
        .collect();
    Ok(Recorded {
        request: format!("{method} {template}"),
        status: resp.status,
        headers,
        body: normalise_body(&resp.body, &content_type, step, &known),
    })
}

fn create_actor(server: &Server, name: &str) -> Result<Actor, String> {
    let resp = http(&server.host, server.port, "POST", "/v1/identity", &[], None)?;
    if resp.status != 200 {
        return Err(format!("POST /v1/identity: {}", resp.status));
    }
    let v: Value = serde_json::from_slice(&resp.body).map_err(|e| format!("POST /v1/identity: {e}"))?;
    Ok(Actor {
        name: name.to_string(),
        identity: v["identity"].as_str().unwrap_or_default().to_ascii_lowercase(),
        token: v["token"].as_str().unwrap_or_default().to_string(),
    })
}

/// JSON text with Python's `json.dumps` separators (", " and ": "), so that the files Epoch's
/// answers are written to are byte-comparable with capture.py's.
fn py_json(v: &Value) -> String {
    match v {
        Value::Array(items) => format!("[{}]", items.iter().map(py_json).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), py_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

fn recorded_json(scenario: &str, steps: &[Option<Recorded>]) -> String {
    let lines: Vec<String> = steps
        .iter()
        .map(|r| match r {
            Some(r) => {
                let mut o = serde_json::Map::new();
                o.insert("request".into(), r.request.clone().into());
                o.insert("status".into(), r.status.into());
                o.insert(
                    "headers".into(),
                    Value::Object(r.headers.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect()),
                );
                o.insert("body".into(), r.body.clone().into());
                format!("    {}", py_json(&Value::Object(o)))
            }
            None => "    null".to_string(),
        })
        .collect();
    format!("{{\n  \"scenario\": {},\n  \"steps\": [\n{}\n  ]\n}}\n", Value::from(scenario), lines.join(",\n"))
}

/// Short bodies in full; long ones around their first difference.
fn body_diff(expected: &str, actual: &str) -> String {
    const SHORT: usize = 1500;
    if expected.len() <= SHORT && actual.len() <= SHORT {
        return format!("    body expected: {expected:?}\n    body actual:   {actual:?}");
    }
    let first = expected.bytes().zip(actual.bytes()).take_while(|(a, b)| a == b).count();
    let window = |s: &str| {
        let floor = |mut i: usize| {
            i = i.min(s.len());
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let (from, to) = (floor(first.saturating_sub(300)), floor(first + 700));
        format!("{}{:?}{}", if from > 0 { "…" } else { "" }, &s[from..to], if to < s.len() { "…" } else { "" })
    };
    format!(
        "    body differs from byte {first} (expected {} bytes, actual {} bytes)\n    body expected: {}\n    body actual:   {}",
        expected.len(),
        actual.len(),
        window(expected),
        window(actual)
    )
}

/// Steps where Epoch knowingly answers differently, each with its reason:
/// `tests/differential/known-differences.json`. A listed step that starts matching fails the
/// test, so the list only shrinks.
fn load_known_differences(file: &str) -> BTreeMap<(String, usize), String> {
    let path = repo_root().join("tests/differential").join(file);
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|_| b"[]".to_vec())).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let key = (d["scenario"].as_str().unwrap().to_string(), d["step"].as_u64().unwrap() as usize);
            (key, d["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

/// One recorded reference: its scenarios, answers and known differences, under
/// `tests/differential/`.
struct Suite {
    /// The reference server, for messages.
    reference: &'static str,
    sequences: &'static str,
    answers: &'static str,
    known_differences: &'static str,
    /// Where Epoch's answers are written, under `$CARGO_TARGET_TMPDIR`.
    actual: &'static str,
}

#[test]
fn http_answers_match_spacetimedb_1_3() {
    compare(Suite {
        reference: "SpacetimeDB 1.3",
        sequences: "sequences.json",
        answers: "reference",
        known_differences: "known-differences.json",
        actual: "differential-actual",
    });
}

/// 2.x modules (the fixtures built against the `spacetimedb` 2.8.3 crate, `*_28.wasm`) against
/// SpacetimeDB 2.8.3's answers (`tests/differential/README-2x.md` says how they were taken).
#[test]
fn http_answers_match_spacetimedb_2_8() {
    compare(Suite {
        reference: "SpacetimeDB 2.8.3",
        sequences: "sequences-2x.json",
        answers: "reference-2x",
        known_differences: "known-differences-2x.json",
        actual: "differential-actual-2x",
    });
}

fn compare(suite: Suite) {
    let dir = repo_root().join("tests/differential");
    let scenarios: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(suite.sequences)).unwrap()).unwrap();
    let actual_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(suite.actual);
    std::fs::create_dir_all(&actual_dir).unwrap();

    let server = start_epoch();
    let mut mismatches: Vec<String> = Vec::new();
    let mut known_differences = load_known_differences(suite.known_differences);
    let mut total_steps = 0;

    for scenario in scenarios.as_array().unwrap() {
        let name = scenario["name"].as_str().unwrap();
        let steps = scenario["steps"].as_array().unwrap();
        total_steps += steps.len();
        let reference: Value = match std::fs::read_to_string(dir.join(suite.answers).join(format!("{name}.json"))) {
            Ok(text) => serde_json::from_str(&text).unwrap(),
            Err(e) => {
                mismatches.push(format!("[{name}] no reference file: {e}"));
                continue;
            }
        };
        let expected = reference["steps"].as_array().unwrap();
        if expected.len() != steps.len() {
            mismatches.push(format!(
                "[{name}] reference has {} steps, sequences.json {}: re-run capture.py",
                expected.len(),
                steps.len()
            ));
            continue;
        }
        let mut ctx = Ctx { actors: Vec::new(), dbs: Vec::new(), plans: Vec::new() };
        let mut setup_ok = true;
        for actor in scenario["actors"].as_array().unwrap() {
            match create_actor(&server, actor.as_str().unwrap()) {
                Ok(a) => ctx.actors.push(a),
                Err(e) => {
                    mismatches.push(format!("[{name}] creating actor {actor}: {e}"));
                    setup_ok = false;
                }
            }
        }
        if !setup_ok {
            continue;
        }
        let mut recorded = Vec::new();
        for (i, (step, exp)) in steps.iter().zip(expected).enumerate() {
            let method = step["method"].as_str().unwrap();
            let path = step["path"].as_str().unwrap();
            let note = step.get("note").and_then(Value::as_str).map(|n| format!(" ({n})")).unwrap_or_default();
            let head = format!("[{name} #{i}] {method} {path} as {}{note}", step["as"].as_str().unwrap());
            let got = match run_step(&server, &mut ctx, step) {
                Ok(r) => r,
                Err(e) => {
                    mismatches.push(format!("{head}\n    request failed: {e}"));
                    recorded.push(None);
                    continue;
                }
            };
            let mut diffs = Vec::new();
            let exp_status = exp["status"].as_u64().unwrap();
            if u64::from(got.status) != exp_status {
                diffs.push(format!("    status: expected {exp_status}, got {}", got.status));
            }
            let exp_headers: BTreeMap<String, String> = exp["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let got_headers: BTreeMap<String, String> = got.headers.iter().cloned().collect();
            if exp_headers != got_headers {
                for h in recorded_header_names(step) {
                    let (e, g) = (exp_headers.get(&h), got_headers.get(&h));
                    if e != g {
                        diffs.push(format!("    header {h}: expected {e:?}, got {g:?}"));
                    }
                }
            }
            let exp_body = exp["body"].as_str().unwrap();
            if exp_body != got.body {
                diffs.push(body_diff(exp_body, &got.body));
            }
            let known = known_differences.remove(&(name.to_string(), i));
            match (diffs.is_empty(), known) {
                (false, None) => mismatches.push(format!("{head}\n{}", diffs.join("\n"))),
                (true, Some(reason)) => mismatches.push(format!(
                    "{head}\n    now matches the reference: remove it from known-differences.json ({reason})"
                )),
                _ => {}
            }
            recorded.push(Some(got));
        }
        std::fs::write(actual_dir.join(format!("{name}.json")), recorded_json(name, &recorded)).unwrap();
    }
    drop(server);

    if !mismatches.is_empty() {
        panic!(
            "{} of {total_steps} steps differ from {} (Epoch's answers: {}):\n\n{}\n",
            mismatches.len(),
            suite.reference,
            actual_dir.display(),
            mismatches.join("\n\n")
        );
    }
}
