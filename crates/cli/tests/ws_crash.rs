//! Crash: clients subscribed while another writes as fast as it can; the server is SIGKILLed and
//! restarted. Every update a client received before the crash is in the restarted database (only
//! durable transactions are sent), a reconnecting client's initial rows equal the database, and
//! `client_disconnected` ran for the connections the crash cut. A SIGTERM stops the server
//! cleanly, disconnecting its clients first.

mod common;

use std::collections::BTreeSet;

use common::ws::{connect, JSON};
use common::Server;
use serde_json::{json, Value};

fn posts_in(update: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for t in update["tables"].as_array().unwrap() {
        if t["table_name"] != "post" {
            continue;
        }
        for u in t["updates"].as_array().unwrap() {
            for r in u["inserts"].as_array().unwrap() {
                let row: Value = serde_json::from_str(r.as_str().unwrap()).unwrap();
                // Stored rows come as objects, transaction rows positionally.
                let body = row.get("body").cloned().unwrap_or_else(|| row[3].clone());
                out.push(body.as_str().unwrap().to_string());
            }
        }
    }
    out
}

fn members_online(server: &Server, token: &str, db: &str) -> usize {
    let (status, body) = server.sql(Some(token), db, "SELECT * FROM member WHERE online = true");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()[0]["rows"].as_array().unwrap().len()
}

#[test]
fn updates_sent_before_a_crash_survive_it_and_cut_clients_are_disconnected() {
    let dir = std::env::temp_dir().join(format!("epoch-ws-crash-{}-{}", std::process::id(), common::rand_suffix()));
    let server = Server::start_in(dir.clone(), &[]);
    let (_, owner) = server.identity();
    let db = format!("crash{}", common::rand_suffix());
    assert!(server.publish(&owner, &db, "chat").status().is_success());
    let (status, _) = server.call(&owner, &db, "set_handle", "[\"owner\"]");
    assert_eq!(status, 200);

    let mut reader = connect(&server.url, &db, JSON, "", Some(&owner)).unwrap();
    reader.recv_variant("IdentityToken");
    reader.send_json(json!({"Subscribe": {"query_strings": ["SELECT * FROM post"], "request_id": 1}}));
    reader.recv_variant("InitialSubscription");
    let (_, writer_token) = server.identity();
    let mut writer = connect(&server.url, &db, JSON, "compression=None", Some(&writer_token)).unwrap();
    writer.recv_variant("IdentityToken");
    assert_eq!(members_online(&server, &owner, &db), 2);

    // The writer fires posts without waiting; the reader sees some, then the server dies.
    for i in 0..400 {
        writer.send_json(json!({"CallReducer": {"reducer": "send_post", "args": format!("[\"post {i}\"]"), "request_id": i, "flags": 1}}));
    }
    let mut seen = BTreeSet::new();
    while seen.len() < 50 {
        let tx = reader.recv_variant("TransactionUpdate");
        seen.extend(posts_in(&tx["status"]["Committed"]));
    }
    server.crash();

    let server = Server::start_in(dir.clone(), &[]);
    assert_eq!(members_online(&server, &owner, &db), 0, "client_disconnected ran for both cut connections");
    let mut again = connect(&server.url, &db, JSON, "", Some(&owner)).unwrap();
    again.recv_variant("IdentityToken");
    again.send_json(json!({"Subscribe": {"query_strings": ["SELECT * FROM post"], "request_id": 2}}));
    let init = again.recv_variant("InitialSubscription");
    let now: BTreeSet<String> = posts_in(&init["database_update"]).into_iter().collect();
    assert!(
        seen.is_subset(&now),
        "received before the crash but lost: {:?}",
        seen.difference(&now).collect::<Vec<_>>()
    );
    let (_, body) = server.sql(Some(&owner), &db, "SELECT body FROM post");
    let rows = serde_json::from_str::<Value>(&body).unwrap()[0]["rows"].as_array().unwrap().len();
    assert_eq!(rows, now.len(), "the initial rows are the database's");

    // A clean stop disconnects the clients it has.
    assert_eq!(members_online(&server, &owner, &db), 1);
    let pid = server.pid();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    server.wait_exit();
    let server = Server::start_in(dir.clone(), &[]);
    assert_eq!(members_online(&server, &owner, &db), 0, "client_disconnected ran before the server stopped");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}
