//! Differential test of the WebSocket protocol against SpacetimeDB 1.3.0's recorded answers.
//!
//! One scripted session (the `bank` fixture; every client message, errors included, and SQL DML
//! seen by a subscriber) runs over each protocol: JSON, and BSATN decoded with its size hints.
//! The answers are normalised (identities, tokens, connection ids, timestamps and durations;
//! table order inside an update, which 1.3 leaves to a hash map) and compared step by step with
//! `tests/differential/ws/<protocol>.json`, recorded from the reference server with
//! `EPOCH_CAPTURE_REFERENCE=http://127.0.0.1:3900 cargo test --test ws_differential`.
//! Steps listed in `tests/differential/ws-known-differences.json` must differ (with the reason
//! there); every other step must match.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::ws::{client, connect, decode_server_message_with, decompress, Ws, BSATN, JSON};
use serde_json::{json, Value};
use tungstenite::Message;

struct Step {
    name: &'static str,
    /// The message, as JSON (for the JSON protocol) and as BSATN.
    json: Option<Value>,
    bsatn: Option<Vec<u8>>,
    /// Or an SQL statement over HTTP (by the owner) instead of a message.
    sql: Option<&'static str>,
    /// How many messages answer it.
    answers: usize,
}

fn msg(name: &'static str, json: Value, bsatn: Vec<u8>, answers: usize) -> Step {
    Step { name, json: Some(json), bsatn: Some(bsatn), sql: None, answers }
}

fn transfer_args(from: u32, to: u32, amount: i64) -> Vec<u8> {
    let mut b = from.to_le_bytes().to_vec();
    b.extend_from_slice(&to.to_le_bytes());
    b.extend_from_slice(&amount.to_le_bytes());
    b
}

fn steps() -> Vec<Step> {
    let call = |reducer: &str, json_args: &str, args: Vec<u8>, rid: u32, flags: u8| {
        (
            json!({"CallReducer": {"reducer": reducer, "args": json_args, "request_id": rid, "flags": flags}}),
            client::call_reducer(reducer, &args, rid, flags),
        )
    };
    let single = |q: &str, rid: u32, qid: u32| {
        (
            json!({"SubscribeSingle": {"query": q, "request_id": rid, "query_id": {"id": qid}}}),
            client::subscribe_single(q, rid, qid),
        )
    };
    let mut out = Vec::new();
    let legacy = ["SELECT * FROM account WHERE id < 2", "SELECT * FROM account WHERE branch = 2"];
    out.push(msg(
        "subscribe_legacy",
        json!({"Subscribe": {"query_strings": legacy, "request_id": 1}}),
        client::subscribe(&legacy, 1),
        1,
    ));
    let (j, b) = call("transfer", "[0, 1, 10]", transfer_args(0, 1, 10), 2, 0);
    out.push(msg("call_committed", j, b, 1));
    let (j, b) = call("transfer", "[0, 1, 100000]", transfer_args(0, 1, 100_000), 3, 0);
    out.push(msg("call_failed", j, b, 1));
    let (j, b) = call("nope", "[]", Vec::new(), 4, 0);
    out.push(msg("call_unknown_reducer", j, b, 1));
    let (j, b) = call("transfer", "[\"x\"]", vec![1, 2], 5, 0);
    out.push(msg("call_bad_args", j, b, 1));
    let (j, b) = call("transfer", "[2, 3, 5]", transfer_args(2, 3, 5), 6, 1);
    out.push(msg("call_no_success_notify_unwatched", j, b, 0));
    let (j, b) = single("SELECT * FROM account WHERE id = 2", 7, 1);
    out.push(msg("subscribe_single", j, b, 1));
    let (j, b) = single("SELECT * FROM ledger", 8, 2);
    out.push(msg("subscribe_private_as_owner", j, b, 1));
    let (j, b) = single("SELECT * FROM nope", 9, 3);
    out.push(msg("subscribe_unknown_table", j, b, 1));
    let (j, b) = single("SELECT balance FROM account", 10, 4);
    out.push(msg("subscribe_projection", j, b, 1));
    let (j, b) = single("SELEC * FROM account", 11, 5);
    out.push(msg("subscribe_syntax_error", j, b, 1));
    let (j, b) = single("SELECT * FROM account", 12, 1);
    out.push(msg("subscribe_query_id_in_use", j, b, 1));
    let multi = ["SELECT * FROM account WHERE id = 3", "SELECT * FROM account WHERE id = 3", "SELECT * FROM ledger"];
    out.push(msg(
        "subscribe_multi",
        json!({"SubscribeMulti": {"query_strings": multi, "request_id": 13, "query_id": {"id": 6}}}),
        client::subscribe_multi(&multi, 13, 6),
        1,
    ));
    let (j, b) = call("transfer", "[3, 2, 7]", transfer_args(3, 2, 7), 14, 0);
    out.push(msg("call_seen_by_several_queries", j, b, 1));
    out.push(Step {
        name: "sql_dml_seen_by_subscriber",
        json: None,
        bsatn: None,
        sql: Some("UPDATE account SET balance = 55 WHERE id = 0"),
        answers: 1,
    });
    out.push(msg(
        "unsubscribe_multi",
        json!({"UnsubscribeMulti": {"request_id": 15, "query_id": {"id": 6}}}),
        client::unsubscribe(15, 6, true),
        1,
    ));
    out.push(msg(
        "unsubscribe",
        json!({"Unsubscribe": {"request_id": 16, "query_id": {"id": 1}}}),
        client::unsubscribe(16, 1, false),
        1,
    ));
    out.push(msg(
        "unsubscribe_unknown",
        json!({"Unsubscribe": {"request_id": 17, "query_id": {"id": 1}}}),
        client::unsubscribe(17, 1, false),
        1,
    ));
    out.push(msg(
        "one_off",
        json!({"OneOffQuery": {"message_id": "0a0b", "query_string": "SELECT * FROM account WHERE id < 3"}}),
        client::one_off(&[10, 11], "SELECT * FROM account WHERE id < 3"),
        1,
    ));
    out.push(msg(
        "one_off_error",
        json!({"OneOffQuery": {"message_id": "0c", "query_string": "SELECT * FROM nope"}}),
        client::one_off(&[12], "SELECT * FROM nope"),
        1,
    ));
    out
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// Publishes `bank` on `base` with three accounts; returns (database name, owner token).
fn prepare(base: &str) -> (String, String) {
    let v: Value = http().post(format!("{base}/v1/identity")).send().unwrap().json().unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    let db = format!("wsdiff{}", common::rand_suffix());
    let r = http()
        .put(format!("{base}/v1/database/{db}"))
        .bearer_auth(&token)
        .body(std::fs::read(common::fixture("bank")).unwrap())
        .send()
        .unwrap();
    assert!(r.status().is_success(), "publish: {}", r.text().unwrap());
    let r = http()
        .post(format!("{base}/v1/database/{db}/call/open_accounts"))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body("[0, 4, 100]")
        .send()
        .unwrap();
    assert!(r.status().is_success());
    (db, token)
}

/// The next message, or `{"missing": true}` after a quiet second.
fn next(ws: &mut Ws) -> Value {
    ws.sock.get_ref().set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    loop {
        match ws.sock.read() {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Message::Binary(b)) => return decode_server_message_with(&decompress(&b), true),
            Ok(Message::Close(c)) => return json!({"closed": c.map(|c| (u16::from(c.code), c.reason.to_string()))}),
            Ok(_) => continue,
            Err(_) => return json!({"missing": true}),
        }
    }
}

/// Runs the session on `base` over `protocol`; returns each step's normalised answers.
fn run(base: &str, protocol: &str) -> Vec<(String, Value)> {
    let (db, token) = prepare(base);
    let mut ws = connect(base, &db, protocol, "compression=None", Some(&token)).unwrap();
    let mut out = vec![("identity_token".to_string(), Value::Array(vec![normalise(next(&mut ws))]))];
    for step in steps() {
        if let Some(q) = step.sql {
            let r = http().post(format!("{base}/v1/database/{db}/sql")).bearer_auth(&token).body(q).send().unwrap();
            assert!(r.status().is_success(), "{q}: {}", r.text().unwrap());
        } else if protocol == JSON {
            ws.send_json(step.json.clone().unwrap());
        } else {
            ws.send_binary(step.bsatn.clone().unwrap());
        }
        let mut answers: Vec<Value> = (0..step.answers).map(|_| normalise(next(&mut ws))).collect();
        if step.answers == 0 {
            // Nothing may come: a quiet moment proves it.
            let extra = next(&mut ws);
            if extra != json!({"missing": true}) {
                answers.push(normalise(extra));
            }
        }
        out.push((step.name.to_string(), Value::Array(answers)));
    }
    ws.close();
    out
}

/// Replaces what legitimately differs between servers and runs.
fn normalise(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let v = match k.as_str() {
                    "__identity__" => json!("<identity>"),
                    "token" => json!("<token>"),
                    "__connection_id__" => json!("<connection_id>"),
                    "__timestamp_micros_since_unix_epoch__" | "__time_duration_micros__" => json!(0),
                    "total_host_execution_duration_micros" => json!(0),
                    // Energy is the reference's own accounting (Epoch meters time, not energy).
                    "quanta" => json!(0),
                    // 1.3 orders tables and updates by hash, and rows as its pages hold
                    // them; compare them sorted.
                    "tables" | "updates" | "rows" | "deletes" | "inserts" => match normalise(v) {
                        Value::Array(mut a) => {
                            a.sort_by_key(|x| x.to_string());
                            Value::Array(a)
                        }
                        other => other,
                    },
                    _ => normalise(v),
                };
                out.insert(k, v);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        Value::String(s) => Value::String(mask_hex(&s)),
        other => other,
    }
}

/// Runs of 32 or more hex digits (identities, connection ids) inside text.
fn mask_hex(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let run = b[i..].iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if run >= 32 {
            out.push_str("<hex>");
            i += run;
        } else {
            let n = run.max(1);
            out.push_str(&s[i..i + n]);
            i += n;
        }
    }
    out
}

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/differential/ws")
}

fn file_of(protocol: &str) -> PathBuf {
    reference_dir().join(if protocol == JSON { "json.json" } else { "bsatn.json" })
}

#[test]
fn websocket_answers_match_the_reference() {
    if let Ok(reference) = std::env::var("EPOCH_CAPTURE_REFERENCE") {
        std::fs::create_dir_all(reference_dir()).unwrap();
        for protocol in [JSON, BSATN] {
            let steps: serde_json::Map<String, Value> = run(&reference, protocol).into_iter().collect();
            std::fs::write(file_of(protocol), serde_json::to_string_pretty(&steps).unwrap() + "\n").unwrap();
        }
        return;
    }
    let known: Value =
        serde_json::from_str(&std::fs::read_to_string(reference_dir().join("../ws-known-differences.json")).unwrap())
            .unwrap();
    let server = common::Server::start(&[]);
    let mut problems = Vec::new();
    let actual_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ws-differential-actual");
    std::fs::create_dir_all(&actual_dir).unwrap();
    for protocol in [JSON, BSATN] {
        let want: Value = serde_json::from_str(&std::fs::read_to_string(file_of(protocol)).unwrap()).unwrap();
        let got = run(&server.url, protocol);
        let got_map: serde_json::Map<String, Value> = got.iter().cloned().collect();
        let name = file_of(protocol).file_name().unwrap().to_owned();
        std::fs::write(actual_dir.join(name), serde_json::to_string_pretty(&got_map).unwrap()).unwrap();
        for (step, answers) in &got {
            let expected_to_differ = known[protocol].get(step).is_some() || known["both"].get(step).is_some();
            let same = want.get(step) == Some(answers);
            if same && expected_to_differ {
                problems.push(format!("{protocol} {step}: listed as a known difference but now matches; unlist it"));
            } else if !same && !expected_to_differ {
                problems.push(format!(
                    "{protocol} {step}:\n  reference: {}\n  epoch:     {}",
                    want.get(step).map(Value::to_string).unwrap_or_default(),
                    answers
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}
