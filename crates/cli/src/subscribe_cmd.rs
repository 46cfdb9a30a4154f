//! `epoch subscribe DATABASE QUERY…`: subscribes over the WebSocket (JSON protocol) and prints
//! each update as one JSON line, `{"table": {"deletes": [...], "inserts": [...]}}`, rows as
//! objects by column name, as `spacetime subscribe` prints them.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::Message;

use crate::client::Session;

/// What to print and when to stop.
pub struct Options {
    pub num_updates: Option<u64>,
    pub timeout: Option<Duration>,
    pub print_initial: bool,
}

impl Session {
    pub fn subscribe(&self, db: &str, queries: &[String], opts: Options) -> Result<()> {
        let columns = self.columns(db)?;
        let url = format!("{}/v1/database/{db}/subscribe", self.server().replacen("http", "ws", 1));
        let mut req = url.into_client_request()?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("v1.json.spacetimedb"));
        req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {}", self.token()))?);
        let host = req.uri().authority().context("the server URL has no host")?.to_string();
        let stream = TcpStream::connect(&host).with_context(|| format!("connecting to {host}"))?;
        let (mut ws, _) = tungstenite::client(req, stream).map_err(|e| anyhow::anyhow!("WebSocket handshake: {e}"))?;
        let deadline = opts.timeout.map(|t| Instant::now() + t);
        let subscribe = json!({"Subscribe": {"query_strings": queries, "request_id": 0}});
        ws.send(Message::Text(subscribe.to_string().into()))?;
        let mut initial_seen = false;
        let mut printed = 0u64;
        loop {
            if opts.num_updates.is_some_and(|n| printed >= n) {
                break;
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    eprintln!("timed out after {}s", opts.timeout.unwrap_or_default().as_secs());
                    break;
                }
                ws.get_ref().set_read_timeout(Some(left))?;
            }
            let msg = match ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    continue
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    bail!("disconnected by server")
                }
                Err(e) => return Err(e.into()),
            };
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Close(frame) => {
                    bail!("disconnected by server{}", frame.map(|f| format!(": {}", f.reason)).unwrap_or_default())
                }
                _ => continue,
            };
            let v: Value = serde_json::from_str(&text)?;
            if let Some(init) = v.get("InitialSubscription") {
                initial_seen = true;
                if opts.print_initial {
                    println!("{}", render(&init["database_update"], &columns));
                }
            } else if let Some(tx) = v.get("TransactionUpdate") {
                match (&tx["status"], initial_seen) {
                    (status, false) if status.get("Failed").is_some() => {
                        bail!("encountered failed transaction: {}", status["Failed"].as_str().unwrap_or_default())
                    }
                    (status, true) if status.get("Committed").is_some() => {
                        println!("{}", render(&status["Committed"], &columns));
                        printed += 1;
                    }
                    _ => {}
                }
            } else if let Some(light) = v.get("TransactionUpdateLight") {
                println!("{}", render(&light["update"], &columns));
                printed += 1;
            }
        }
        let _ = ws.close(None);
        Ok(())
    }

    /// Column names of every table, from the schema.
    fn columns(&self, db: &str) -> Result<BTreeMap<String, Vec<String>>> {
        let schema: Value = self.get_json(&format!("/v1/database/{db}/schema?version=9"))?;
        let types = schema["typespace"]["types"].as_array().cloned().unwrap_or_default();
        let mut out = BTreeMap::new();
        for t in schema["tables"].as_array().cloned().unwrap_or_default() {
            let name = t["name"].as_str().unwrap_or_default().to_string();
            let r = t["product_type_ref"].as_u64().unwrap_or(0) as usize;
            let cols = types
                .get(r)
                .and_then(|ty| ty["Product"]["elements"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|e| e["name"]["some"].as_str().unwrap_or_default().to_string())
                .collect();
            out.insert(name, cols);
        }
        Ok(out)
    }
}

/// One update as `{"table": {"deletes": [...], "inserts": [...]}}`, rows as objects.
fn render(update: &Value, columns: &BTreeMap<String, Vec<String>>) -> Value {
    let mut out = Map::new();
    for t in update["tables"].as_array().cloned().unwrap_or_default() {
        let name = t["table_name"].as_str().unwrap_or_default().to_string();
        let cols = columns.get(&name).cloned().unwrap_or_default();
        let entry = out.entry(name).or_insert_with(|| json!({"deletes": [], "inserts": []}));
        for u in t["updates"].as_array().cloned().unwrap_or_default() {
            for field in ["deletes", "inserts"] {
                for r in u[field].as_array().cloned().unwrap_or_default() {
                    let row: Value = serde_json::from_str(r.as_str().unwrap_or("null")).unwrap_or(Value::Null);
                    let row = match row {
                        Value::Array(values) => {
                            Value::Object(cols.iter().cloned().zip(values).collect::<Map<String, Value>>())
                        }
                        other => other,
                    };
                    if let Some(list) = entry[field].as_array_mut() {
                        list.push(row);
                    }
                }
            }
        }
    }
    Value::Object(out)
}
