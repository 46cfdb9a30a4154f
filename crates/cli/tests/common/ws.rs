//! A blocking WebSocket client of the v1 protocol for tests, with its own decoder of BSATN
//! server messages (written from the protocol notes, independently of the server's encoder)
//! into the JSON shape the `v1.json.spacetimedb` protocol sends, rows as hex strings.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

pub const BSATN: &str = "v1.bsatn.spacetimedb";
pub const JSON: &str = "v1.json.spacetimedb";

pub struct Ws {
    pub sock: WebSocket<TcpStream>,
    pub protocol: String,
    /// The 101 response's headers.
    pub headers: tungstenite::http::HeaderMap,
}

/// Connects to `base` (`http://host:port`) database `db`, offering `protocol`, with `query`
/// (e.g. `compression=None`) and an optional bearer token.
pub fn connect(
    base: &str,
    db: &str,
    protocol: &str,
    query: &str,
    token: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let url = format!("{}/v1/database/{db}/subscribe?{query}", base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request()?;
    if !protocol.is_empty() {
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocol).unwrap());
    }
    if let Some(t) = token {
        req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    }
    let host = base.trim_start_matches("http://");
    let stream = TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (sock, resp) = tungstenite::client(req, stream).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::ConnectionClosed,
    })?;
    let protocol =
        resp.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    Ok(Ws { sock, protocol, headers: resp.headers().clone() })
}

/// How long [`Ws::recv`] waits for a data message, pings or not.
pub const DATA_DEADLINE: Duration = Duration::from_secs(90);

impl Ws {
    pub fn send_json(&mut self, v: Value) {
        self.sock.send(Message::Text(v.to_string().into())).unwrap();
    }

    pub fn send_binary(&mut self, b: Vec<u8>) {
        self.sock.send(Message::Binary(b.into())).unwrap();
    }

    /// The next data message, as JSON (binary ones decoded); pings are skipped, but only for
    /// [`DATA_DEADLINE`]: the server pings every 15 s, so a reply that never comes would
    /// otherwise keep a test waiting for ever.
    pub fn recv(&mut self) -> Value {
        let deadline = std::time::Instant::now() + DATA_DEADLINE;
        loop {
            assert!(std::time::Instant::now() < deadline, "no data message within {DATA_DEADLINE:?} (pings only)");
            match self.sock.read().expect("a message within the read timeout") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Binary(b) => return decode_server_message(&decompress(&b)),
                Message::Close(c) => panic!("connection closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame, raw (to check tags and close frames).
    pub fn recv_raw(&mut self) -> Result<Message, tungstenite::Error> {
        loop {
            match self.sock.read() {
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                other => return other,
            }
        }
    }

    /// Skips messages until one of variant `name`; returns its payload.
    pub fn recv_variant(&mut self, name: &str) -> Value {
        for _ in 0..1000 {
            let m = self.recv();
            if let Some(p) = m.get(name) {
                return p.clone();
            }
        }
        panic!("no {name} message");
    }

    pub fn close(mut self) {
        let _ = self.sock.close(None);
        for _ in 0..10 {
            if self.sock.read().is_err() {
                break;
            }
        }
    }
}

/// The BSATN payload of a binary server frame, after its compression tag.
pub fn decompress(frame: &[u8]) -> Vec<u8> {
    match frame[0] {
        0 => frame[1..].to_vec(),
        1 => {
            let mut out = Vec::new();
            brotli::BrotliDecompress(&mut &frame[1..], &mut out).unwrap();
            out
        }
        2 => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&frame[1..]).read_to_end(&mut out).unwrap();
            out
        }
        t => panic!("unknown compression tag {t}"),
    }
}

struct R<'a>(&'a [u8], bool);

impl R<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take(16).try_into().unwrap())
    }
    fn str(&mut self) -> String {
        let n = self.u32() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        self.take(n).to_vec()
    }
    fn identity(&mut self) -> Value {
        let b = self.take(32);
        let hex: String = b.iter().rev().map(|x| format!("{x:02x}")).collect();
        let t = hex.trim_start_matches('0');
        json!({"__identity__": format!("0x{}", if t.is_empty() { "0" } else { t })})
    }
    fn option_u32(&mut self) -> Value {
        match self.u8() {
            0 => json!({"some": self.u32()}),
            1 => json!({"none": []}),
            t => panic!("bad option tag {t}"),
        }
    }
    /// A row list: rows as hex strings (with `hints`, `{"size_hint": …, "rows": […]}`).
    fn row_list(&mut self) -> Value {
        let hints = self.1;
        let hint_of = |fixed: Option<usize>| match fixed {
            Some(n) => format!("FixedSize({n})"),
            None => "RowOffsets".to_string(),
        };
        let wrap = |fixed: Option<usize>, rows: Value| {
            if hints {
                json!({"size_hint": hint_of(fixed), "rows": rows})
            } else {
                rows
            }
        };
        let fixed = match self.u8() {
            0 => Some(self.u16() as usize),
            1 => {
                let n = self.u32() as usize;
                let offsets: Vec<u64> = (0..n).map(|_| self.u64()).collect();
                let data = self.bytes();
                let mut rows = Vec::new();
                for (i, o) in offsets.iter().enumerate() {
                    let end = offsets.get(i + 1).map_or(data.len(), |e| *e as usize);
                    rows.push(Value::String(hex::encode(&data[*o as usize..end])));
                }
                return wrap(None, Value::Array(rows));
            }
            t => panic!("bad size hint {t}"),
        };
        let data = self.bytes();
        let n = fixed.unwrap();
        assert!(n > 0 && data.len().is_multiple_of(n), "fixed-size rows fill the data");
        wrap(fixed, Value::Array(data.chunks(n).map(|c| Value::String(hex::encode(c))).collect()))
    }
    fn table_update(&mut self) -> Value {
        let table_id = self.u32();
        let table_name = self.str();
        let num_rows = self.u64();
        let n = self.u32();
        let updates: Vec<Value> = (0..n)
            .map(|_| {
                assert_eq!(self.u8(), 0, "1.3 sends query updates uncompressed");
                let deletes = self.row_list();
                let inserts = self.row_list();
                json!({"deletes": deletes, "inserts": inserts})
            })
            .collect();
        json!({"table_id": table_id, "table_name": table_name, "num_rows": num_rows, "updates": updates})
    }
    fn database_update(&mut self) -> Value {
        let n = self.u32();
        json!({"tables": (0..n).map(|_| self.table_update()).collect::<Vec<_>>()})
    }
}

/// Decodes a BSATN `ServerMessage` into the JSON protocol's shape (rows as hex strings).
pub fn decode_server_message(b: &[u8]) -> Value {
    decode_server_message_with(b, false)
}

/// As [`decode_server_message`]; `hints`: row lists also say their size hint.
pub fn decode_server_message_with(b: &[u8], hints: bool) -> Value {
    let mut r = R(b, hints);
    let v = match r.u8() {
        0 => {
            let du = r.database_update();
            json!({"InitialSubscription": {"database_update": du, "request_id": r.u32(),
                "total_host_execution_duration": {"__time_duration_micros__": r.i64()}}})
        }
        1 => {
            let status = match r.u8() {
                0 => json!({"Committed": r.database_update()}),
                1 => json!({"Failed": r.str()}),
                2 => json!({"OutOfEnergy": []}),
                t => panic!("bad status {t}"),
            };
            let ts = r.i64();
            let caller = r.identity();
            let conn = r.u128();
            let name = r.str();
            let id = r.u32();
            let args = hex::encode(r.bytes());
            let request_id = r.u32();
            let energy = r.u128();
            let dur = r.i64();
            json!({"TransactionUpdate": {"status": status,
                "timestamp": {"__timestamp_micros_since_unix_epoch__": ts},
                "caller_identity": caller, "caller_connection_id": {"__connection_id__": conn.to_string()},
                "reducer_call": {"reducer_name": name, "reducer_id": id, "args": args, "request_id": request_id},
                "energy_quanta_used": {"quanta": energy.to_string()},
                "total_host_execution_duration": {"__time_duration_micros__": dur}}})
        }
        2 => json!({"TransactionUpdateLight": {"request_id": r.u32(), "update": r.database_update()}}),
        3 => {
            let id = r.identity();
            let token = r.str();
            json!({"IdentityToken": {"identity": id, "token": token, "connection_id": {"__connection_id__": r.u128().to_string()}}})
        }
        4 => {
            let message_id = hex::encode(r.bytes());
            let error = match r.u8() {
                0 => json!({"some": r.str()}),
                _ => json!({"none": []}),
            };
            let n = r.u32();
            let tables: Vec<Value> = (0..n).map(|_| json!({"table_name": r.str(), "rows": r.row_list()})).collect();
            json!({"OneOffQueryResponse": {"message_id": message_id, "error": error, "tables": tables,
                "total_host_execution_duration": {"__time_duration_micros__": r.i64()}}})
        }
        t @ (5 | 6) => {
            let request_id = r.u32();
            let micros = r.u64();
            let query_id = r.u32();
            let table_id = r.u32();
            let table_name = r.str();
            let rows = r.table_update();
            let name = if t == 5 { "SubscribeApplied" } else { "UnsubscribeApplied" };
            json!({name: {"request_id": request_id, "total_host_execution_duration_micros": micros,
                "query_id": {"id": query_id}, "rows": {"table_id": table_id, "table_name": table_name, "table_rows": rows}}})
        }
        7 => {
            let micros = r.u64();
            json!({"SubscriptionError": {"total_host_execution_duration_micros": micros, "request_id": r.option_u32(),
                "query_id": r.option_u32(), "table_id": r.option_u32(), "error": r.str()}})
        }
        t @ (8 | 9) => {
            let request_id = r.u32();
            let micros = r.u64();
            let query_id = r.u32();
            let update = r.database_update();
            let name = if t == 8 { "SubscribeMultiApplied" } else { "UnsubscribeMultiApplied" };
            json!({name: {"request_id": request_id, "total_host_execution_duration_micros": micros,
                "query_id": {"id": query_id}, "update": update}})
        }
        t => panic!("unknown server message tag {t}"),
    };
    assert!(r.0.is_empty(), "trailing bytes after a server message");
    v
}

/// BSATN of a client message, built by hand.
pub mod client {
    fn str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    pub fn call_reducer(reducer: &str, args: &[u8], request_id: u32, flags: u8) -> Vec<u8> {
        let mut b = vec![0];
        str(&mut b, reducer);
        b.extend_from_slice(&(args.len() as u32).to_le_bytes());
        b.extend_from_slice(args);
        b.extend_from_slice(&request_id.to_le_bytes());
        b.push(flags);
        b
    }
    pub fn subscribe(queries: &[&str], request_id: u32) -> Vec<u8> {
        let mut b = vec![1];
        b.extend_from_slice(&(queries.len() as u32).to_le_bytes());
        for q in queries {
            str(&mut b, q);
        }
        b.extend_from_slice(&request_id.to_le_bytes());
        b
    }
    pub fn one_off(message_id: &[u8], query: &str) -> Vec<u8> {
        let mut b = vec![2];
        b.extend_from_slice(&(message_id.len() as u32).to_le_bytes());
        b.extend_from_slice(message_id);
        str(&mut b, query);
        b
    }
    pub fn subscribe_single(query: &str, request_id: u32, query_id: u32) -> Vec<u8> {
        let mut b = vec![3];
        str(&mut b, query);
        b.extend_from_slice(&request_id.to_le_bytes());
        b.extend_from_slice(&query_id.to_le_bytes());
        b
    }
    pub fn subscribe_multi(queries: &[&str], request_id: u32, query_id: u32) -> Vec<u8> {
        let mut b = vec![4];
        b.extend_from_slice(&(queries.len() as u32).to_le_bytes());
        for q in queries {
            str(&mut b, q);
        }
        b.extend_from_slice(&request_id.to_le_bytes());
        b.extend_from_slice(&query_id.to_le_bytes());
        b
    }
    pub fn unsubscribe(request_id: u32, query_id: u32, multi: bool) -> Vec<u8> {
        let mut b = vec![if multi { 6 } else { 5 }];
        b.extend_from_slice(&request_id.to_le_bytes());
        b.extend_from_slice(&query_id.to_le_bytes());
        b
    }
}
