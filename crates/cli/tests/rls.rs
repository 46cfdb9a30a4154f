//! Row-level security (`#[client_visibility_filter]`) with the `rls` test module: two filters on
//! `message` (a caller's own messages, and public ones) are a union; every caller but the owner
//! sees only what they select, through `/sql`, one-off queries and subscriptions; the owner
//! sees everything. A module whose filter does not compile is refused at publish and leaves
//! the name free for the fixed module.

mod common;

use std::collections::BTreeSet;

use common::ws::{connect, JSON};
use common::Server;
use serde_json::{json, Value};

fn texts(server: &Server, token: &str, q: &str) -> BTreeSet<String> {
    let (status, body) = server.sql(Some(token), "rlsdb", q);
    assert_eq!(status, 200, "{q}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v[0]["rows"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap().to_string()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn callers_see_only_the_rows_the_filters_select() {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    // A filter naming a column that does not exist: refused; as in 1.3 the name stays, naming
    // a database that does not exist.
    let r = server.publish(&owner, "rlsdb", "rls_bad");
    assert_eq!(r.status().as_u16(), 400);
    let text = r.text().unwrap();
    assert!(text.contains("row-level security") && text.contains("writer"), "{text}");
    let (status, body) = server.sql(Some(&owner), "rlsdb", "SELECT * FROM message");
    assert_eq!((status, body.as_str()), (404, "No such database."), "no database was created");
    // The fixed module publishes under the same name.
    let r = server.publish(&owner, "rlsdb", "rls");
    assert!(r.status().is_success(), "{}", r.text().unwrap());

    let (_, alice) = server.identity();
    let (_, bob) = server.identity();
    let (_, stranger) = server.identity();
    for (who, text, public) in
        [(&alice, "alice secret", false), (&alice, "alice public", true), (&bob, "bob secret", false)]
    {
        assert_eq!(server.call(who, "rlsdb", "post", &format!("[\"{text}\", {public}]")).0, 200);
    }
    let q = "SELECT text FROM message";
    assert_eq!(texts(&server, &alice, q), set(&["alice secret", "alice public"]));
    assert_eq!(texts(&server, &bob, q), set(&["bob secret", "alice public"]));
    assert_eq!(texts(&server, &stranger, q), set(&["alice public"]));
    assert_eq!(texts(&server, &owner, q), set(&["alice secret", "alice public", "bob secret"]));
    // Filters come before the query's own conditions and counts.
    assert_eq!(texts(&server, &bob, "SELECT text FROM message WHERE public = false"), set(&["bob secret"]));
    let (_, body) = server.sql(Some(&bob), "rlsdb", "SELECT COUNT(*) AS n FROM message");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()[0]["rows"], json!([[2]]));

    // Subscriptions: alice's initial rows and updates are hers and the public ones.
    let mut ws = connect(&server.url, "rlsdb", JSON, "", Some(&alice)).unwrap();
    ws.recv_variant("IdentityToken");
    ws.send_json(
        json!({"SubscribeSingle": {"query": "SELECT * FROM message", "request_id": 1, "query_id": {"id": 1}}}),
    );
    let applied = ws.recv_variant("SubscribeApplied");
    assert_eq!(applied["rows"]["table_rows"]["num_rows"], 2, "{applied}");
    assert_eq!(server.call(&bob, "rlsdb", "post", "[\"bob hidden\", false]").0, 200);
    assert_eq!(server.call(&bob, "rlsdb", "post", "[\"bob shared\", true]").0, 200);
    let tx = ws.recv_variant("TransactionUpdate");
    let inserted = &tx["status"]["Committed"]["tables"][0]["updates"][0]["inserts"];
    assert_eq!(inserted.as_array().unwrap().len(), 1, "{tx}");
    assert!(inserted[0].as_str().unwrap().contains("bob shared"), "only the public post reaches alice: {tx}");
    // One-off queries too.
    ws.send_json(json!({"OneOffQuery": {"message_id": "01", "query_string": "SELECT * FROM message"}}));
    let r = ws.recv_variant("OneOffQueryResponse");
    assert_eq!(r["tables"][0]["rows"].as_array().unwrap().len(), 3, "{r}");
    // The system tables show the filters and the connected client, as they are now.
    let (_, body) = server.sql(Some(&bob), "rlsdb", "SELECT * FROM st_row_level_security");
    let rls: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(rls[0]["rows"].as_array().unwrap().len(), 2, "{body}");
    assert!(rls[0]["rows"].as_array().unwrap().iter().all(|r| r[0] == 4097), "{body}");
    let (_, body) = server.sql(Some(&owner), "rlsdb", "SELECT * FROM st_client");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()[0]["rows"].as_array().unwrap().len(),
        1,
        "alice's socket: {body}"
    );
    // The owner's subscription sees every row.
    let mut ows = connect(&server.url, "rlsdb", JSON, "", Some(&owner)).unwrap();
    ows.recv_variant("IdentityToken");
    ows.send_json(
        json!({"SubscribeSingle": {"query": "SELECT * FROM message", "request_id": 1, "query_id": {"id": 1}}}),
    );
    assert_eq!(ows.recv_variant("SubscribeApplied")["rows"]["table_rows"]["num_rows"], 5);
}
