//! The WebSocket API (protocol v1) over real sockets against the real binary and the `chat`
//! fixture: the upgrade's checks, every client and server message in JSON and BSATN, every
//! compression, lifecycle reducers, private tables, errors and limits.

mod common;

use common::ws::{self, client, connect, Ws, BSATN, JSON};
use common::Server;
use serde_json::{json, Value};

fn setup(extra: &[&str]) -> (Server, String, String) {
    let server = Server::start(extra);
    let (_, token) = server.identity();
    let db = format!("ws{}", common::rand_suffix());
    assert!(server.publish(&token, &db, "chat").status().is_success());
    set_handle(&server, &token, &db, "owner");
    (server, token, db)
}

/// `chat` keeps handles unique, absent ones included (as 1.3 compares `None`s): give each
/// member a handle before another one connects.
fn set_handle(server: &Server, token: &str, db: &str, handle: &str) {
    let (status, body) = server.call(token, db, "set_handle", &format!("[\"{handle}\"]"));
    assert_eq!(status, 200, "{body}");
}

fn named(server: &Server, db: &str, handle: &str) -> String {
    let (_, token) = server.identity();
    set_handle(server, &token, db, handle);
    token
}

/// Rows of table `table` in a database update (JSON protocol): (deletes, inserts) as parsed JSON.
fn rows_of(update: &Value, table: &str) -> (Vec<Value>, Vec<Value>) {
    let mut deletes = Vec::new();
    let mut inserts = Vec::new();
    for t in update["tables"].as_array().unwrap() {
        if t["table_name"] != table {
            continue;
        }
        for u in t["updates"].as_array().unwrap() {
            let parse = |v: &Value| serde_json::from_str::<Value>(v.as_str().unwrap()).unwrap();
            deletes.extend(u["deletes"].as_array().unwrap().iter().map(parse));
            inserts.extend(u["inserts"].as_array().unwrap().iter().map(parse));
        }
    }
    (deletes, inserts)
}

fn committed(tx: &Value) -> &Value {
    &tx["status"]["Committed"]
}

fn http_status(e: tungstenite::Error) -> (u16, String) {
    match e {
        tungstenite::Error::Http(resp) => {
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[test]
fn the_upgrade_is_checked_as_1_3_checks_it() {
    let (server, token, db) = setup(&[]);
    let base = &server.url;
    let (status, body) = http_status(connect(base, &db, "", "", None).err().unwrap());
    assert_eq!((status, body.as_str()), (400, "no valid protocol selected"));
    let (status, _) = http_status(connect(base, "no-such-db", JSON, "", None).err().unwrap());
    assert_eq!(status, 404);
    let (status, body) = http_status(connect(base, &db, JSON, "compression=Zstd", None).err().unwrap());
    assert_eq!(status, 400);
    assert!(body.contains("unknown variant `Zstd`"), "{body}");
    let zero = "0".repeat(32);
    let (status, body) = http_status(connect(base, &db, JSON, &format!("connection_id={zero}"), None).err().unwrap());
    assert_eq!((status, body.as_str()), (400, "Invalid connection ID: the all-zeros ConnectionId is reserved."));
    // A plain GET is told to upgrade.
    let r = server.http().get(format!("{base}/v1/database/{db}/subscribe")).send().unwrap();
    assert_eq!(r.status().as_u16(), 426);

    // Offering both picks binary; the identity headers come with the 101, and the first
    // message is IdentityToken with the same identity and token.
    let mut c = connect(base, &db, &format!("{JSON}, {BSATN}"), "compression=None", Some(&token)).unwrap();
    assert_eq!(c.protocol, BSATN);
    let header_identity = c.headers["spacetime-identity"].to_str().unwrap().to_string();
    let first = c.recv_raw().unwrap();
    let tungstenite::Message::Binary(b) = first else { panic!("binary first") };
    assert_eq!(b[0], 0, "uncompressed tag");
    let hello = ws::decode_server_message(&b[1..]);
    let hello = &hello["IdentityToken"];
    assert_eq!(hello["token"], token);
    assert_eq!(
        format!("{:0>64}", hello["identity"]["__identity__"].as_str().unwrap().trim_start_matches("0x")),
        header_identity
    );
    c.close();

    // Anonymous clients get a fresh identity, and a chosen connection id is kept.
    let mut anon = connect(base, &db, JSON, "connection_id=000000000000000000000000000000ff", None).unwrap();
    let hello = anon.recv_variant("IdentityToken");
    assert!(!hello["token"].as_str().unwrap().is_empty());
    assert_eq!(hello["connection_id"]["__connection_id__"], json!(255));
    anon.close();
}

#[test]
fn json_clients_subscribe_call_and_see_each_others_changes() {
    let (server, owner_token, db) = setup(&[]);
    let base = &server.url;
    let other_token = named(&server, &db, "other");
    let mut a = connect(base, &db, JSON, "", Some(&owner_token)).unwrap();
    let a_identity = a.recv_variant("IdentityToken")["identity"].clone();
    let mut b = connect(base, &db, JSON, "light=true", Some(&other_token)).unwrap();
    b.recv_variant("IdentityToken");

    subscribe_both(&mut a, &mut b, &a_identity);
    calls_reach_the_caller_and_light_clients(&mut a, &mut b, &a_identity);
    sql_changes_and_unsubscribes(&server, &owner_token, &db, &mut a, &mut b, &a_identity);
    subscription_errors_and_private_tables(&mut a, &mut b);
    one_off_queries(&mut b);
    leaving_and_a_bad_frame(&mut a, b);
}

/// Legacy Subscribe: the initial rows, as objects by column name; client_connected ran for both.
fn subscribe_both(a: &mut Ws, b: &mut Ws, a_identity: &Value) {
    a.send_json(
        json!({"Subscribe": {"query_strings": ["SELECT * FROM member", "SELECT * FROM post"], "request_id": 5}}),
    );
    let init = a.recv_variant("InitialSubscription");
    assert_eq!(init["request_id"], 5);
    let (_, members) = rows_of(&init["database_update"], "member");
    assert_eq!(members.len(), 2, "{init}");
    assert!(members.iter().all(|m| m["online"] == true));
    assert!(members.iter().any(|m| m["identity"] == *a_identity));
    b.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM post", "request_id": 1, "query_id": {"id": 1}}}));
    let applied = b.recv_variant("SubscribeApplied");
    assert_eq!(applied["query_id"]["id"], 1);
    assert_eq!(applied["rows"]["table_name"], "post");
}

/// Calls over the socket: results to the caller, light updates to others, failures to the
/// caller only, and NoSuccessNotify.
fn calls_reach_the_caller_and_light_clients(a: &mut Ws, b: &mut Ws, a_identity: &Value) {
    // A's call: A gets the full update with its request id; B (light) gets the light one.
    a.send_json(json!({"CallReducer": {"reducer": "send_post", "args": "[\"hello\"]", "request_id": 42, "flags": 0}}));
    let tx = a.recv_variant("TransactionUpdate");
    assert_eq!(tx["reducer_call"]["reducer_name"], "send_post");
    assert_eq!(tx["reducer_call"]["request_id"], 42);
    assert_eq!(tx["reducer_call"]["args"], "[\"hello\"]");
    assert_eq!(tx["caller_identity"], *a_identity);
    let (_, posts) = rows_of(committed(&tx), "post");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0][3], "hello", "transaction rows are positional: {}", posts[0]);
    let light = b.recv_variant("TransactionUpdateLight");
    assert_eq!(light["request_id"], 42);
    assert_eq!(rows_of(&light["update"], "post").1, posts);

    // An update of a row is a delete plus an insert.
    a.send_json(json!({"CallReducer": {"reducer": "set_handle", "args": "[\"ann\"]", "request_id": 43, "flags": 0}}));
    let tx = a.recv_variant("TransactionUpdate");
    let (deleted, inserted) = rows_of(committed(&tx), "member");
    assert_eq!((deleted.len(), inserted.len()), (1, 1), "{tx}");
    assert_eq!(deleted[0][0], inserted[0][0]);
    assert_eq!(inserted[0][1], json!({"some": "ann"}));

    // A failure reaches its caller only, with the reducer's message; a refused call too.
    a.send_json(json!({"CallReducer": {"reducer": "send_post", "args": "[\"\"]", "request_id": 44, "flags": 0}}));
    let tx = a.recv_variant("TransactionUpdate");
    assert_eq!(tx["status"], json!({"Failed": "empty post"}));
    a.send_json(json!({"CallReducer": {"reducer": "nope", "args": "[]", "request_id": 45, "flags": 0}}));
    let tx = a.recv_variant("TransactionUpdate");
    assert_eq!(tx["status"], json!({"Failed": "no such reducer"}));
    assert_eq!(tx["reducer_call"]["reducer_id"], u32::MAX);
    a.send_json(json!({"CallReducer": {"reducer": "on_connect", "args": "[]", "request_id": 46, "flags": 0}}));
    let tx = a.recv_variant("TransactionUpdate");
    assert!(tx["status"]["Failed"].as_str().unwrap().contains("lifecycle reducer"), "{tx}");
    // NoSuccessNotify: a success the caller's queries do not see is not sent to it.
    a.send_json(json!({"CallReducer": {"reducer": "send_post", "args": "[\"quiet\"]", "request_id": 47, "flags": 1}}));
    // ... but B sees it, and A's next message is about its later call.
    let light = b.recv_variant("TransactionUpdateLight");
    assert_eq!(rows_of(&light["update"], "post").1[0][3], "quiet");
    let tx = a.recv_variant("TransactionUpdate");
    assert_eq!(tx["reducer_call"]["request_id"], 47, "A's queries see its post: {tx}");
}

/// SQL DML reaches subscribers; Unsubscribe and the Multi messages answer with their rows.
fn sql_changes_and_unsubscribes(
    server: &Server,
    owner_token: &str,
    db: &str,
    a: &mut Ws,
    b: &mut Ws,
    a_identity: &Value,
) {
    // SQL DML reaches subscribers like a reducer, with no reducer name.
    let (status, _) = server.sql(Some(owner_token), db, "DELETE FROM post WHERE body = 'quiet'");
    assert_eq!(status, 200);
    let tx = a.recv_variant("TransactionUpdate");
    assert_eq!(tx["reducer_call"]["reducer_name"], "");
    assert_eq!(tx["caller_identity"], *a_identity, "the SQL caller is named");
    assert_eq!(rows_of(committed(&tx), "post").0.len(), 1);
    b.recv_variant("TransactionUpdateLight");

    // Unsubscribe returns the query's rows as deletes.
    b.send_json(json!({"Unsubscribe": {"request_id": 2, "query_id": {"id": 1}}}));
    let gone = b.recv_variant("UnsubscribeApplied");
    assert_eq!(gone["rows"]["table_rows"]["updates"][0]["deletes"].as_array().unwrap().len(), 1);
    b.send_json(json!({"Unsubscribe": {"request_id": 3, "query_id": {"id": 1}}}));
    let err = b.recv_variant("SubscriptionError");
    assert!(err["error"].as_str().unwrap().starts_with("Subscription not found"), "{err}");
    assert_eq!(err["request_id"], json!({"some": 3}));

    // Multi: several queries under one id, answered and withdrawn together.
    b.send_json(json!({"SubscribeMulti": {"query_strings": ["SELECT * FROM post", "SELECT * FROM member WHERE online = true"], "request_id": 4, "query_id": {"id": 9}}}));
    let multi = b.recv_variant("SubscribeMultiApplied");
    assert_eq!(rows_of(&multi["update"], "post").1.len(), 1);
    assert_eq!(rows_of(&multi["update"], "member").1.len(), 2);
    b.send_json(json!({"UnsubscribeMulti": {"request_id": 5, "query_id": {"id": 9}}}));
    let multi = b.recv_variant("UnsubscribeMultiApplied");
    assert_eq!(rows_of(&multi["update"], "member").0.len(), 2);
}

/// Subscription errors (bad SQL, unknown or private tables, projections, a query id in use)
/// and the owner's view of a private table.
fn subscription_errors_and_private_tables(a: &mut Ws, b: &mut Ws) {
    // Errors: bad SQL, an unknown table, a private table for a non-owner, a projection, a
    // query id in use.
    for (i, (q, want)) in [
        ("SELEC * FROM post", ""),
        ("SELECT * FROM nope", "`nope` is not a valid table"),
        ("SELECT * FROM audit", "`audit` is not a valid table"),
        ("SELECT body FROM post", "Column projections are not supported in subscriptions"),
    ]
    .iter()
    .enumerate()
    {
        b.send_json(json!({"SubscribeSingle": {"query": q, "request_id": 10 + i, "query_id": {"id": 20 + i}}}));
        let err = b.recv_variant("SubscriptionError");
        let text = err["error"].as_str().unwrap();
        assert!(text.contains(want) && text.ends_with(&format!(", executing: `{q}`")), "{q}: {text}");
        assert_eq!(err["query_id"], json!({"some": 20 + i}));
    }
    // The owner sees the private table.
    a.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM audit", "request_id": 7, "query_id": {"id": 7}}}));
    assert_eq!(a.recv_variant("SubscribeApplied")["rows"]["table_name"], "audit");
    a.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM post", "request_id": 8, "query_id": {"id": 7}}}));
    let tx = a.recv_variant("TransactionUpdate");
    assert!(tx["status"]["Failed"].as_str().unwrap().contains("already exists"), "{tx}");
}

/// One-off queries: rows as objects, errors as text; private tables for the owner only.
fn one_off_queries(b: &mut Ws) {
    b.send_json(json!({"OneOffQuery": {"message_id": "0102", "query_string": "SELECT * FROM post"}}));
    let r = b.recv_variant("OneOffQueryResponse");
    assert_eq!(r["message_id"], "0102");
    assert_eq!(r["error"], json!({"none": []}));
    assert_eq!(r["tables"][0]["table_name"], "post");
    let row: Value = serde_json::from_str(r["tables"][0]["rows"][0].as_str().unwrap()).unwrap();
    assert_eq!(row["body"], "hello");
    b.send_json(json!({"OneOffQuery": {"message_id": "03", "query_string": "SELECT * FROM audit"}}));
    let r = b.recv_variant("OneOffQueryResponse");
    assert_eq!(r["error"], json!({"some": "`audit` is not a valid table"}));
    assert_eq!(r["tables"], json!([]));
}

/// Leaving runs client_disconnected (A sees B go offline); a bad frame closes with 1011.
fn leaving_and_a_bad_frame(a: &mut Ws, b: Ws) {
    // Leaving runs client_disconnected: A sees B go offline.
    a.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM member", "request_id": 9, "query_id": {"id": 30}}}));
    a.recv_variant("SubscribeApplied");
    b.close();
    let tx = a.recv_variant("TransactionUpdate");
    assert_eq!(tx["reducer_call"]["reducer_name"], "on_disconnect");
    let (_, now) = rows_of(committed(&tx), "member");
    assert_eq!(now[0][2], false, "{tx}");

    // A bad frame closes the connection with 1011 and the reason.
    a.send_json(json!({"Bogus": {}}));
    loop {
        match a.recv_raw() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1011);
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

#[test]
fn binary_clients_get_every_message_in_bsatn_with_each_compression() {
    let (server, token, db) = setup(&[]);
    let base = &server.url;
    // Enough posts that the initial rows exceed the compression threshold.
    let mut writer = connect(base, &db, BSATN, "compression=None", Some(&token)).unwrap();
    writer.recv_variant("IdentityToken");
    for i in 0..40 {
        writer.send_binary(client::call_reducer("send_post", &bsatn_string(&format!("post number {i:04}")), i, 1));
    }
    writer.send_binary(client::call_reducer("set_handle", &bsatn_string("w"), 99, 0));
    let tx = writer.recv_variant("TransactionUpdate");
    assert_eq!(tx["reducer_call"]["request_id"], 99, "calls are handled in order: {tx}");

    for (round, (compression, tag)) in [("None", 0u8), ("Brotli", 1), ("Gzip", 2)].into_iter().enumerate() {
        // Each round adds one post.
        let posts = 40 + round;
        binary_round(base, &db, &token, (compression, tag), posts);
    }
}

/// One round of the binary test with one compression (`tag` is its frame tag): every client
/// message in BSATN, with `posts` posts in the table beforehand.
fn binary_round(base: &str, db: &str, token: &str, (compression, tag): (&str, u8), posts: usize) {
    let mut c = connect(base, db, BSATN, &format!("compression={compression}"), Some(token)).unwrap();
    // Small messages are never compressed.
    let tungstenite::Message::Binary(hello) = c.recv_raw().unwrap() else { panic!() };
    assert_eq!(hello[0], 0, "{compression}: IdentityToken is small");
    c.send_binary(client::subscribe(&["SELECT * FROM post"], 3));
    let tungstenite::Message::Binary(frame) = c.recv_raw().unwrap() else { panic!() };
    assert_eq!(frame[0], tag, "{compression}");
    let init = ws::decode_server_message(&ws::decompress(&frame));
    let init = &init["InitialSubscription"];
    assert_eq!(init["request_id"], 3);
    let table = &init["database_update"]["tables"][0];
    assert_eq!(table["table_name"], "post");
    assert!(table["table_id"].as_u64().unwrap() >= 4096, "user tables are numbered from 4096");
    assert_eq!(table["num_rows"], posts);
    assert_eq!(table["updates"][0]["inserts"].as_array().unwrap().len(), posts);

    c.send_binary(client::subscribe_single("SELECT * FROM member", 4, 1));
    let applied = c.recv_variant("SubscribeApplied");
    assert_eq!(applied["rows"]["table_name"], "member");
    c.send_binary(client::one_off(&[7, 7], "SELECT * FROM post WHERE id = 1"));
    let r = c.recv_variant("OneOffQueryResponse");
    assert_eq!(r["message_id"], "0707");
    assert_eq!(r["tables"][0]["rows"].as_array().unwrap().len(), 1);
    c.send_binary(client::subscribe_multi(&["SELECT * FROM post WHERE id = 2"], 5, 2));
    let m = c.recv_variant("SubscribeMultiApplied");
    assert_eq!(m["update"]["tables"][0]["num_rows"], 1);
    c.send_binary(client::unsubscribe(6, 2, true));
    let m = c.recv_variant("UnsubscribeMultiApplied");
    assert_eq!(m["update"]["tables"][0]["updates"][0]["deletes"].as_array().unwrap().len(), 1);
    c.send_binary(client::unsubscribe(7, 1, false));
    c.recv_variant("UnsubscribeApplied");
    c.send_binary(client::subscribe_single("SELECT * FROM nope", 8, 3));
    let e = c.recv_variant("SubscriptionError");
    assert_eq!(e["request_id"], json!({"some": 8}));
    assert_eq!(e["table_id"], json!({"none": []}));
    // A reducer call: arguments are echoed as BSATN.
    c.send_binary(client::call_reducer("send_post", &bsatn_string("bin"), 11, 0));
    let tx = c.recv_variant("TransactionUpdate");
    assert_eq!(tx["reducer_call"]["args"], hex::encode(bsatn_string("bin")));
    assert_eq!(committed(&tx)["tables"][0]["num_rows"], 1);
    // An unknown flag closes the connection with the decoder's message.
    c.send_binary(client::call_reducer("send_post", &bsatn_string("x"), 12, 7));
    loop {
        match c.recv_raw() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1011);
                assert_eq!(frame.reason.as_str(), "invalid call reducer flag 7");
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame: {e}"),
        }
    }
}

fn bsatn_string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as u32).to_le_bytes().to_vec();
    b.extend_from_slice(s.as_bytes());
    b
}

#[test]
fn limits_refuse_with_clear_reasons_and_a_slow_client_is_cut_off() {
    let (server, token, db) = setup(&[
        "--max-subscriptions-per-client",
        "2",
        "--max-initial-rows",
        "3",
        "--max-clients-per-database",
        "3",
        "--max-ws-queued-messages",
        "50",
        "--max-ws-message-bytes",
        "65536",
    ]);
    let base = &server.url;
    let mut a = connect(base, &db, JSON, "", Some(&token)).unwrap();
    a.recv_variant("IdentityToken");
    for i in 0..5 {
        a.send_json(json!({"CallReducer": {"reducer": "send_post", "args": format!("[\"p{i}\"]"), "request_id": i, "flags": 0}}));
        a.recv_variant("TransactionUpdate");
    }
    subscription_limits(&mut a);
    oversized_message_closes_with_1009(&mut a);
    let held = client_limit(base, &db, &token);
    slow_client_is_cut_off(&server, &token, &db, held);
}

/// The initial-rows and subscriptions-per-client limits refuse with their reasons.
fn subscription_limits(a: &mut Ws) {
    a.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM post", "request_id": 1, "query_id": {"id": 1}}}));
    let e = a.recv_variant("SubscriptionError");
    assert!(e["error"].as_str().unwrap().contains("initial rows exceed 3"), "{e}");
    for id in 1..=2 {
        a.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM post WHERE id = 1", "request_id": id, "query_id": {"id": id}}}));
        a.recv_variant("SubscribeApplied");
    }
    a.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM member", "request_id": 3, "query_id": {"id": 3}}}));
    let e = a.recv_variant("SubscriptionError");
    assert!(e["error"].as_str().unwrap().contains("at most 2 subscriptions"), "{e}");
}

/// A message over the size limit closes the connection (1009).
fn oversized_message_closes_with_1009(a: &mut Ws) {
    let big = "x".repeat(70_000);
    a.send_json(
        json!({"CallReducer": {"reducer": "send_post", "args": format!("[\"{big}\"]"), "request_id": 9, "flags": 0}}),
    );
    loop {
        match a.recv_raw() {
            Ok(tungstenite::Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1009);
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("no close frame for a message over the limit: {e}"),
        }
    }
}

/// Connections per database: the fourth client is closed with 1013; the three held are returned.
fn client_limit(base: &str, db: &str, token: &str) -> Vec<Ws> {
    let mut held: Vec<Ws> = Vec::new();
    for _ in 0..3 {
        let mut c = connect(base, db, JSON, "", Some(token)).unwrap();
        c.recv_variant("IdentityToken");
        held.push(c);
    }
    let mut extra = connect(base, db, JSON, "", Some(token)).unwrap();
    match extra.recv_raw() {
        Ok(tungstenite::Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1013);
            assert!(f.reason.as_str().contains("serves 3 clients"), "{}", f.reason);
        }
        other => panic!("expected a close for the fourth client: {other:?}"),
    }
    held
}

/// A client that never reads is cut off once its queue overflows; the others carry on.
fn slow_client_is_cut_off(server: &Server, token: &str, db: &str, mut held: Vec<Ws>) {
    let base = &server.url;
    let mut slow = held.pop().unwrap();
    slow.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM post WHERE id > 5", "request_id": 1, "query_id": {"id": 1}}}));
    let mut fast = held.pop().unwrap();
    let body = "y".repeat(60_000);
    for i in 0..200 {
        fast.send_json(json!({"CallReducer": {"reducer": "send_post", "args": format!("[\"{body}\"]"), "request_id": i, "flags": 0}}));
        fast.recv_variant("TransactionUpdate");
    }
    let (status, text) = server.sql(Some(token), db, "SELECT id FROM post WHERE id > 100");
    assert_eq!(status, 200, "{text}");
    // The slow client's connection was closed with the reason (or dropped, if even the close
    // frame could not get through).
    let mut closed = false;
    for _ in 0..10_000 {
        match slow.recv_raw() {
            Ok(tungstenite::Message::Close(Some(f))) => {
                assert!(f.reason.as_str().contains("too slow"), "{}", f.reason);
                closed = true;
                break;
            }
            Ok(_) => continue,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed);
    let metrics = server.http().get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("epoch_ws_connections"), "{metrics}");
    assert!(metrics.contains("epoch_subscription_queries{"), "{metrics}");
}

/// `epoch subscribe` prints the initial rows and each update as JSON lines, rows by column.
#[test]
fn epoch_subscribe_prints_updates_as_json_lines() {
    use std::io::{BufRead, BufReader};
    let server = Server::start(&[]);
    let dir = std::env::temp_dir().join(format!("epoch-subscribe-cmd-{}", common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("cli.json");
    let epoch = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_epoch"))
            .args(["--server", &server.url, "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let bank = common::fixture("bank").to_string_lossy().to_string();
    assert!(epoch(&["publish", "bank", "--wasm", &bank]).status.success());
    assert!(epoch(&["call", "bank", "open_accounts", "0", "3", "100"]).status.success());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_epoch"))
        .args(["--server", &server.url, "--config"])
        .arg(&config)
        .args([
            "subscribe",
            "bank",
            "SELECT * FROM account WHERE id < 2",
            "-n",
            "1",
            "-t",
            "30",
            "--print-initial-update",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let initial: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(initial["account"]["inserts"].as_array().unwrap().len(), 2, "{initial}");
    assert!(epoch(&["call", "bank", "transfer", "0", "1", "30"]).status.success());
    let update: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let mut balances: Vec<i64> =
        update["account"]["inserts"].as_array().unwrap().iter().map(|r| r["balance"].as_i64().unwrap()).collect();
    balances.sort();
    assert_eq!(balances, vec![70, 130], "{update}");
    assert!(child.wait().unwrap().success());
    // A timeout ends it cleanly.
    let out = epoch(&["subscribe", "bank", "SELECT * FROM account", "-t", "1"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out after 1s"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A scheduled reducer's call and the removal of its one-shot row reach clients as one
/// transaction, named after the reducer, as 1.3 commits them.
#[test]
fn a_scheduled_call_and_its_rows_removal_are_one_update() {
    let server = Server::start(&[]);
    let (_, token) = server.identity();
    let db = format!("sched{}", common::rand_suffix());
    assert!(server.publish(&token, &db, "typecheck").status().is_success());
    let mut c = connect(&server.url, &db, JSON, "", Some(&token)).unwrap();
    c.recv_variant("IdentityToken");
    let queries = ["SELECT * FROM tick_schedule", "SELECT * FROM tick_log"];
    c.send_json(json!({"SubscribeMulti": {"query_strings": queries, "request_id": 1, "query_id": {"id": 1}}}));
    c.recv_variant("SubscribeMultiApplied");
    c.send_json(
        json!({"CallReducer": {"reducer": "schedule_once", "args": "[\"once\", 50]", "request_id": 2, "flags": 0}}),
    );
    let tx = c.recv_variant("TransactionUpdate");
    assert_eq!(rows_of(committed(&tx), "tick_schedule").1.len(), 1, "{tx}");
    let tx = c.recv_variant("TransactionUpdate");
    assert_eq!(tx["reducer_call"]["reducer_name"], "tick", "{tx}");
    assert_eq!(rows_of(committed(&tx), "tick_log").1.len(), 1, "{tx}");
    assert_eq!(rows_of(committed(&tx), "tick_schedule").0.len(), 1, "the row's removal comes with the call: {tx}");
}

/// The token may come as `?token=` (as the SDKs send it after `POST /v1/identity/websocket-token`);
/// a failing `client_connected` refuses the connection as 1.3 does (it ends with no message);
/// a client that just drops its TCP connection is disconnected (`client_disconnected` runs).
#[test]
fn token_in_the_query_refused_connections_and_dropped_sockets() {
    let (server, owner, db) = setup(&[]);
    let (identity, token) = server.identity();
    let short = server
        .http()
        .post(format!("{}/v1/identity/websocket-token", server.url))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json::<Value>()
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut c = connect(&server.url, &db, JSON, &format!("token={short}"), None).unwrap();
    let hello = c.recv_variant("IdentityToken");
    let hex = hello["identity"]["__identity__"].as_str().unwrap().trim_start_matches("0x").to_string();
    assert_eq!(format!("{hex:0>64}"), identity);
    // This member has no handle; chat refuses a second member without one (1.3 compares
    // `None`s as equal), so an anonymous client is refused by client_connected.
    let mut refused = connect(&server.url, &db, JSON, "", None).unwrap();
    match refused.recv_raw() {
        Err(_) | Ok(tungstenite::Message::Close(_)) => {}
        Ok(other) => panic!("a refused client got {other:?}"),
    }
    // Dropping the socket without a close frame: the member goes offline.
    let mut watcher = connect(&server.url, &db, JSON, "", Some(&owner)).unwrap();
    watcher.recv_variant("IdentityToken");
    watcher.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM member WHERE online = false", "request_id": 1, "query_id": {"id": 1}}}));
    watcher.recv_variant("SubscribeApplied");
    let stream = c.sock.get_ref().try_clone().unwrap();
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);
    let tx = watcher.recv_variant("TransactionUpdate");
    assert_eq!(tx["reducer_call"]["reducer_name"], "on_disconnect", "{tx}");
    let (_, inserted) = rows_of(committed(&tx), "member");
    assert_eq!(inserted.len(), 1, "the dropped client went offline: {tx}");
    assert_eq!(
        inserted[0][0]["__identity__"].as_str().map(|h| format!("{:0>64}", h.trim_start_matches("0x"))),
        Some(identity)
    );
}

/// A query naming `:sender` selects each caller's own rows, even with no row-level security:
/// two clients sending the same text never share its rows.
#[test]
fn sender_queries_are_each_callers_own() {
    let (server, owner, db) = setup(&[]);
    let alice = named(&server, &db, "alice");
    let bob = named(&server, &db, "bob");
    let q = "SELECT * FROM post WHERE author = :sender";
    let mut clients = Vec::new();
    for (who, text) in [(&alice, "from alice"), (&bob, "from bob")] {
        assert_eq!(server.call(who, &db, "send_post", &format!("[\"{text}\"]")).0, 200);
        let mut c = connect(&server.url, &db, JSON, "", Some(who)).unwrap();
        c.recv_variant("IdentityToken");
        c.send_json(json!({"SubscribeSingle": {"query": q, "request_id": 1, "query_id": {"id": 1}}}));
        let applied = c.recv_variant("SubscribeApplied");
        let rows = applied["rows"]["table_rows"]["updates"][0]["inserts"].as_array().unwrap().clone();
        assert_eq!(rows.len(), 1, "{applied}");
        assert!(rows[0].as_str().unwrap().contains(text), "{applied}");
        clients.push(c);
    }
    let _ = owner;
}

/// The documented limit of a client message is 32 MiB, whatever its framing: a 20 MiB message
/// in one frame is read and answered (tungstenite's own frame limit is 16 MiB), and one over
/// 32 MiB is refused with a close frame, code 1009, rather than a dropped connection.
#[test]
fn messages_up_to_32_mib_in_one_frame_are_read_and_larger_ones_are_closed_with_1009() {
    let (server, token, db) = setup(&[]);
    let mut a = connect(&server.url, &db, BSATN, "compression=None", Some(&token)).unwrap();
    a.recv_variant("IdentityToken");
    a.send_binary(client::call_reducer("no_such_reducer", &vec![7u8; 20 << 20], 1, 0));
    let tx = a.recv_variant("TransactionUpdate");
    assert_eq!(tx["status"], json!({"Failed": "no such reducer"}), "the 20 MiB frame was read");

    let mut b = connect(&server.url, &db, BSATN, "compression=None", Some(&token)).unwrap();
    b.recv_variant("IdentityToken");
    // The server refuses the frame from its header: the rest of it may not be taken.
    let _ = b.sock.send(tungstenite::Message::Binary(client::call_reducer("x", &vec![7u8; 33 << 20], 2, 0).into()));
    let code = loop {
        match b.recv_raw() {
            Ok(tungstenite::Message::Close(Some(f))) => break Some((u16::from(f.code), f.reason.to_string())),
            Ok(_) => continue,
            Err(e) => panic!("no close frame before the connection ended: {e}"),
        }
    };
    let (code, reason) = code.unwrap();
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("33554432"), "the reason names the limit: {reason}");

    // The first client is still served.
    a.send_binary(client::call_reducer("no_such_reducer", b"", 3, 0));
    assert_eq!(a.recv_variant("TransactionUpdate")["status"], json!({"Failed": "no such reducer"}));
}

/// The value of the unlabelled series `name` in the server's `/metrics`.
fn metric(server: &Server, name: &str) -> u64 {
    let text = server.http().get(format!("{}/metrics", server.url)).send().unwrap().text().unwrap();
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The server's resident memory, in kB.
fn rss_kb(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 100 posts of 2 KB: each subscribe or unsubscribe answer carries about 200 KB.
fn fill_posts(server: &Server, token: &str, db: &str) {
    let body = "p".repeat(2000);
    for _ in 0..100 {
        assert_eq!(server.call(token, db, "send_post", &json!([body]).to_string()).0, 200);
    }
}

/// `clients` connections that each send 120 subscribe/unsubscribe pairs of every post (about
/// 48 MB of answers) and read nothing.
fn flood(server: &Server, token: &str, db: &str, clients: usize) -> Vec<Ws> {
    let senders: Vec<_> = (0..clients)
        .map(|_| {
            let mut c = connect(&server.url, db, BSATN, "compression=None", Some(token)).unwrap();
            c.recv_variant("IdentityToken");
            c.sock.get_mut().set_write_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            std::thread::spawn(move || {
                for i in 0..120u32 {
                    let sub = client::subscribe_single("SELECT * FROM post", 2 * i, i);
                    let unsub = client::unsubscribe(2 * i + 1, i, false);
                    if c.sock.send(tungstenite::Message::Binary(sub.into())).is_err()
                        || c.sock.send(tungstenite::Message::Binary(unsub.into())).is_err()
                    {
                        break;
                    }
                }
                c
            })
        })
        .collect();
    senders.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Clients that pipeline subscribe/unsubscribe and never read, each under the per-client limit
/// (64 MiB), together far over the server's budget: the ones holding the most are cut off, the
/// server's memory stays bounded, and a client that reads keeps being served.
#[test]
fn clients_that_never_read_are_cut_off_by_the_servers_output_budget() {
    let (server, token, db) = setup(&["--max-ws-total-queued-bytes", &(16 << 20).to_string()]);
    fill_posts(&server, &token, &db);
    let mut good = connect(&server.url, &db, JSON, "", Some(&token)).unwrap();
    good.recv_variant("IdentityToken");
    good.send_json(json!({"Subscribe": {"query_strings": ["SELECT * FROM member"], "request_id": 1}}));
    good.recv_variant("InitialSubscription");
    let before = rss_kb(&server);

    // Six clients, 120 subscribe/unsubscribe pairs each: about 48 MB of answers per client.
    let mut offenders = flood(&server, &token, &db, 6);
    let mut peak = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while metric(&server, "epoch_ws_connections") > 1 {
        peak = peak.max(rss_kb(&server));
        assert!(std::time::Instant::now() < deadline, "the clients that never read are still connected");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let cuts = metric(&server, "epoch_ws_budget_cuts_total");
    assert!(cuts >= 1, "the offenders are cut by the server's budget ({cuts} cuts)");
    // Each offender had queued hundreds of subscriptions when it was cut, far more than the
    // writer had reached: what was left is skipped, not computed for nobody.
    let orphaned = metric(&server, "epoch_ws_orphaned_requests_total");
    assert!(orphaned >= 1, "the requests of cut clients were still answered ({orphaned} skipped)");
    let grown = peak.saturating_sub(before);
    assert!(grown < 96 << 10, "the server grew by {grown} kB with 6 clients that never read");
    // An offender that reads now finds its connection ended (by a 1008 close, when the close
    // frame got through at all).
    for c in &mut offenders {
        c.sock.get_mut().set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let drained_by = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            assert!(std::time::Instant::now() < drained_by, "an offender is still being sent data");
            match c.sock.read() {
                Ok(tungstenite::Message::Close(Some(f))) => {
                    assert_eq!(u16::from(f.code), 1008, "{}", f.reason);
                    break;
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    panic!("an offender is still connected")
                }
                Err(_) => break,
            }
        }
    }
    // The reading client was served throughout and still is.
    good.send_json(
        json!({"CallReducer": {"reducer": "send_post", "args": "[\"still here\"]", "request_id": 7, "flags": 0}}),
    );
    let tx = good.recv_variant("TransactionUpdate");
    assert!(tx["status"].get("Committed").is_some(), "{tx}");
}

/// Slow clients that held a lot and then went away leave the server about as small as before
/// them: the memory their queues held goes back to the system, not only to the allocator.
#[test]
fn memory_slow_clients_held_is_given_back_when_they_leave() {
    let (server, token, db) = setup(&[]);
    fill_posts(&server, &token, &db);
    let before = rss_kb(&server);
    let offenders = flood(&server, &token, &db, 4);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while metric(&server, "epoch_ws_queued_bytes") < 64 << 20 {
        assert!(std::time::Instant::now() < deadline, "the slow clients never held 64 MiB");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let peak = rss_kb(&server);
    assert!(peak > before + (64 << 10), "the slow clients grew the server ({before} kB, then {peak} kB)");
    for c in offenders {
        let _ = c.sock.get_ref().shutdown(std::net::Shutdown::Both);
    }
    while metric(&server, "epoch_ws_connections") > 0 {
        assert!(std::time::Instant::now() < deadline, "the slow clients are still connected");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The memory goes back on a blocking thread, just after the last connection ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut after = rss_kb(&server);
    while after > before + (32 << 10) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = rss_kb(&server);
    }
    assert!(after <= before + (32 << 10), "{before} kB before, {peak} kB with the slow clients, {after} kB after");
}
