//! The everyday client commands: talk to a server over HTTP, with a saved identity per server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Saved tokens, one per server URL.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub tokens: BTreeMap<String, String>,
}

/// The default config file: `$EPOCH_CONFIG`, else `~/.config/epoch/cli.json`.
pub fn default_config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("EPOCH_CONFIG") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".config").join("epoch").join("cli.json")
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", path.display()))
    }
}

/// A connection to one server with the caller's token.
pub struct Session {
    http: Client,
    server: String,
    token: String,
}

/// The saved token for `server`, logging in (a server-issued identity) when there is none.
pub fn token_for(server: &str, config_path: &Path) -> Result<String> {
    let mut config = Config::load(config_path)?;
    if let Some(t) = config.tokens.get(server) {
        return Ok(t.clone());
    }
    let token = login(&Client::new(), server)?;
    config.tokens.insert(server.to_string(), token.clone());
    config.save(config_path)?;
    Ok(token)
}

impl Session {
    /// Uses the saved token for `server`, logging in (a server-issued identity) when there is none.
    pub fn open(server: &str, config_path: &Path) -> Result<Self> {
        let server = server.trim_end_matches('/').to_string();
        let http = Client::builder().timeout(None).build()?;
        let token = token_for(&server, config_path)?;
        Ok(Self { http, server, token })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// The server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The caller's token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// GETs `path` and parses the JSON answer.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let resp = Self::check(self.http.get(self.url(path)).bearer_auth(&self.token).send()?)?;
        Ok(resp.json()?)
    }

    fn check(resp: Response) -> Result<Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().unwrap_or_default();
        bail!("{} ({})", if body.is_empty() { "request failed" } else { body.trim() }, status)
    }

    pub fn publish(&self, name: &str, wasm: &Path, clear: bool) -> Result<()> {
        let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
        let resp = self
            .http
            .put(self.url(&format!("/v1/database/{name}")))
            .query(&[("clear", clear)])
            .bearer_auth(&self.token)
            .body(bytes)
            .send()
            .with_context(|| format!("connecting to {}", self.server))?;
        let v: Value = Self::check(resp)?.json()?;
        let s = &v["Success"];
        let verb = if s["op"] == "created" { "Created new" } else { "Updated" };
        println!("{verb} database with name: {name}, identity: {}", s["database_identity"].as_str().unwrap_or(""));
        Ok(())
    }

    pub fn call(&self, db: &str, reducer: &str, args: &[String]) -> Result<()> {
        // Each argument is JSON; anything that does not parse is taken as a string.
        let args: Vec<Value> =
            args.iter().map(|a| serde_json::from_str(a).unwrap_or_else(|_| Value::String(a.clone()))).collect();
        let resp = self
            .http
            .post(self.url(&format!("/v1/database/{db}/call/{reducer}")))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/json")
            .body(serde_json::to_string(&args)?)
            .send()
            .with_context(|| format!("connecting to {}", self.server))?;
        if resp.status().as_u16() == 530 {
            bail!("the reducer failed: {}", resp.text().unwrap_or_default());
        }
        Self::check(resp)?;
        Ok(())
    }

    pub fn sql(&self, db: &str, query: &str) -> Result<()> {
        let resp = self
            .http
            .post(self.url(&format!("/v1/database/{db}/sql")))
            .bearer_auth(&self.token)
            .body(query.to_string())
            .send()
            .with_context(|| format!("connecting to {}", self.server))?;
        let v: Value = Self::check(resp)?.json()?;
        for result in v.as_array().into_iter().flatten() {
            print!("{}", format_table(result));
        }
        Ok(())
    }

    pub fn logs(&self, db: &str, num_lines: Option<usize>, follow: bool) -> Result<()> {
        let mut req = self.http.get(self.url(&format!("/v1/database/{db}/logs"))).bearer_auth(&self.token);
        let n = num_lines.or(follow.then_some(10));
        if let Some(n) = n {
            req = req.query(&[("num_lines", n)]);
        }
        let resp = Self::check(req.query(&[("follow", follow)]).send()?)?;
        for line in BufReader::new(resp).lines() {
            let line = line?;
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => println!("{}", format_log(&v)),
                Err(_) => println!("{line}"),
            }
        }
        Ok(())
    }

    pub fn describe(&self, db: &str) -> Result<()> {
        let resp =
            self.http.get(self.url(&format!("/v1/database/{db}/schema?version=9"))).bearer_auth(&self.token).send()?;
        let v: Value = Self::check(resp)?.json()?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        Ok(())
    }

    pub fn delete(&self, db: &str) -> Result<()> {
        let resp = self.http.delete(self.url(&format!("/v1/database/{db}"))).bearer_auth(&self.token).send()?;
        if resp.status() == StatusCode::NOT_FOUND {
            bail!("no database named {db}");
        }
        Self::check(resp)?;
        println!("Deleted {db}");
        Ok(())
    }
}

/// Asks `server` for a new identity; returns its token.
pub fn login(http: &Client, server: &str) -> Result<String> {
    let resp = http.post(format!("{server}/v1/identity")).send().with_context(|| format!("connecting to {server}"))?;
    let v: Value = Session::check(resp)?.json()?;
    v["token"].as_str().map(str::to_string).context("the server answered without a token")
}

/// `epoch login`: a fresh server-issued identity, saved for that server.
pub fn login_command(server: &str, config_path: &Path) -> Result<()> {
    let server = server.trim_end_matches('/');
    let http = Client::new();
    let token = login(&http, server)?;
    let mut config = Config::load(config_path)?;
    config.tokens.insert(server.to_string(), token);
    config.save(config_path)?;
    println!("Logged in to {server}; token saved in {}", config_path.display());
    Ok(())
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// A result as a psql-style table: a header, a rule, the rows.
pub fn format_table(result: &Value) -> String {
    let headers: Vec<String> = result["schema"]["elements"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["name"]["some"].as_str().unwrap_or("").to_string())
        .collect();
    let rows: Vec<Vec<String>> = result["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.as_array().into_iter().flatten().map(cell).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!(" {c:<w$} ")).collect();
        format!("{}\n", parts.join("|").trim_end())
    };
    let mut out = line(&headers);
    out.push_str(&widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

fn format_log(v: &Value) -> String {
    let level = v["level"].as_str().unwrap_or("?").to_uppercase();
    let at = match (v["filename"].as_str(), v["line_number"].as_u64()) {
        (Some(f), Some(l)) => format!("{f}:{l}: "),
        (Some(f), None) => format!("{f}: "),
        _ => String::new(),
    };
    format!("{} {level}: {at}{}", v["ts"], v["message"].as_str().unwrap_or(""))
}
