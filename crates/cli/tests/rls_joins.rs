//! Row-level security through join subscriptions, as a hostile client would try it (issue 23,
//! defects 1 and 2), with the `rls` test module (a caller sees its own messages and the public
//! ones): a join's initial rows pass the filters like its later updates, and the side of a join
//! the query does not return is filtered too, so its hidden values cannot be read out one
//! comparison at a time.

mod common;

use common::ws::{connect, Ws, JSON};
use common::Server;
use serde_json::{json, Value};

/// The text column of every row a `SubscribeApplied` carries.
fn applied_texts(applied: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for update in applied["rows"]["table_rows"]["updates"].as_array().into_iter().flatten() {
        for row in update["inserts"].as_array().into_iter().flatten() {
            let row: Value = serde_json::from_str(row.as_str().expect("a JSON row")).expect("row JSON");
            out.push(row["text"].as_str().expect("the text column").to_string());
        }
    }
    out.sort();
    out
}

fn subscribe(ws: &mut Ws, query: &str, id: u32) -> Value {
    ws.send_json(json!({"SubscribeSingle": {"query": query, "request_id": id, "query_id": {"id": id}}}));
    loop {
        let msg = ws.recv();
        if msg.get("SubscribeApplied").is_some() || msg.get("SubscriptionError").is_some() {
            return msg;
        }
    }
}

fn setup() -> (Server, String, String) {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let r = server.publish(&owner, "rlsjoin", "rls");
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let (_, alice) = server.identity();
    for (text, public) in [("alice secret", false), ("alice public", true)] {
        assert_eq!(server.call(&alice, "rlsjoin", "post", &format!("[\"{text}\", {public}]")).0, 200);
    }
    let (_, stranger) = server.identity();
    (server, alice, stranger)
}

#[test]
fn a_join_subscription_returns_only_visible_rows_initially_and_after_commits() {
    let (server, alice, stranger) = setup();
    let mut ws = connect(&server.url, "rlsjoin", JSON, "", Some(&stranger)).unwrap();
    ws.recv_variant("IdentityToken");
    let applied = subscribe(&mut ws, "SELECT a.* FROM message a JOIN message b ON a.id = b.id", 1);
    let applied = &applied["SubscribeApplied"];
    assert_eq!(applied_texts(applied), vec!["alice public".to_string()], "{applied}");
    // Later commits: the hidden post never arrives, the public one does, once.
    assert_eq!(server.call(&alice, "rlsjoin", "post", "[\"alice second secret\", false]").0, 200);
    assert_eq!(server.call(&alice, "rlsjoin", "post", "[\"alice news\", true]").0, 200);
    let tx = ws.recv_variant("TransactionUpdate").to_string();
    assert!(tx.contains("alice news") && !tx.contains("secret"), "{tx}");
}

#[test]
fn the_side_a_join_does_not_return_is_filtered_too() {
    let (server, _alice, stranger) = setup();
    let mut ws = connect(&server.url, "rlsjoin", JSON, "", Some(&stranger)).unwrap();
    ws.recv_variant("IdentityToken");
    // The oracle: a public row of the author comes back only if the author's hidden row
    // compares true. "alice secret" >= 'a' holds and >= 'b' does not; both must answer alike.
    let oracle = |guess: &str| {
        format!(
            "SELECT a.* FROM message a JOIN message b ON a.author = b.author \
             WHERE a.public = true AND b.public = false AND b.text >= '{guess}'"
        )
    };
    for (i, guess) in ["a", "alice s", "b", "z"].iter().enumerate() {
        let applied = subscribe(&mut ws, &oracle(guess), 10 + i as u32);
        let applied = applied.get("SubscribeApplied").unwrap_or_else(|| panic!("{applied}"));
        assert!(applied_texts(applied).is_empty(), "guess {guess:?} answered rows: {applied}");
    }
    // The same join over rows the caller may see on both sides still answers.
    let visible = "SELECT a.* FROM message a JOIN message b ON a.author = b.author \
                   WHERE a.public = true AND b.public = true";
    let applied = subscribe(&mut ws, visible, 20);
    assert_eq!(applied_texts(&applied["SubscribeApplied"]), vec!["alice public".to_string()], "{applied}");
}
