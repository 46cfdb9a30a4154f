//! What one client's subscription may cost everyone else (issue 23, defect 6): initial rows are
//! computed on the database's writer, so a join whose keys repeat (every pair of 20,000
//! accounts sharing a branch) must stop part-way with a clear `SubscriptionError`, not build
//! millions of pairs while every commit waits; and joins SpacetimeDB 1.3 refuses (no index on
//! the side it probes) are refused here too.

mod common;

use common::ws::{connect, JSON};
use common::Server;
use serde_json::json;

const ACCOUNTS: u32 = 20_000;

fn bank() -> (Server, String) {
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let r = server.publish(&owner, "costly", "bank");
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    for first in (0..ACCOUNTS).step_by(5_000) {
        assert_eq!(server.call(&owner, "costly", "open_accounts", &format!("[{first}, 5000, 1000]")).0, 200);
    }
    (server, owner)
}

#[test]
fn an_expensive_initial_evaluation_stops_part_way_and_commits_go_on() {
    let (server, owner) = bank();
    let (_, stranger) = server.identity();
    let mut ws = connect(&server.url, "costly", JSON, "", Some(&stranger)).unwrap();
    ws.recv_variant("IdentityToken");
    // Each account meets the ~312 of its branch: 6.25 million pairs per query, 20 queries,
    // none of them kept by the WHERE (every balance is 1,000).
    let queries: Vec<String> = (0..20)
        .map(|i| {
            format!("SELECT a.* FROM account a JOIN account b ON a.branch = b.branch WHERE a.balance > {}", 1000 + i)
        })
        .collect();
    ws.send_json(json!({"Subscribe": {"query_strings": queries, "request_id": 1}}));
    // A refused legacy subscription comes back as a failed transaction, as 1.3 sends it.
    let failed = ws.recv_variant("TransactionUpdate");
    let text = failed["status"]["Failed"].as_str().unwrap_or_default();
    assert!(text.contains("to compute its initial rows; add an index or narrow the query"), "{failed}");
    // The writer is free again: the owner's transfer commits, and a cheap query still answers.
    assert_eq!(server.call(&owner, "costly", "transfer", "[1, 2, 10]").0, 200);
    ws.send_json(json!({"SubscribeSingle": {"query": "SELECT * FROM account WHERE id = 2", "request_id": 2, "query_id": {"id": 2}}}));
    let applied = ws.recv_variant("SubscribeApplied");
    assert!(applied.to_string().contains("1010"), "the transfer is in the new subscription's rows: {applied}");
}

#[test]
fn joins_without_an_index_on_the_probed_side_are_refused_as_1_3_refuses_them() {
    let (server, owner) = bank();
    let mut ws = connect(&server.url, "costly", JSON, "", Some(&owner)).unwrap();
    ws.recv_variant("IdentityToken");
    // `ledger` has an index on `from`, none on `to`; `account` on `id` (and `branch`).
    for (i, (query, accepted)) in [
        // 1.3 probes the joined (second) table: its join column needs an index.
        ("SELECT a.* FROM account a JOIN ledger l ON a.id = l.to", false),
        ("SELECT l.* FROM account a JOIN ledger l ON a.id = l.to", false),
        ("SELECT a.* FROM account a JOIN ledger l ON a.id = l.from", true),
        // Unless only the second is compared with constants: then 1.3 walks it and probes the first.
        ("SELECT a.* FROM account a JOIN ledger l ON a.id = l.to WHERE l.amount = 0", true),
        ("SELECT l.* FROM ledger l JOIN account a ON l.to = a.id WHERE a.balance = 7", false),
        ("SELECT l.* FROM ledger l JOIN account a ON l.from = a.id WHERE a.balance = 7", true),
    ]
    .iter()
    .enumerate()
    {
        let id = 10 + i as u32;
        ws.send_json(json!({"SubscribeSingle": {"query": query, "request_id": id, "query_id": {"id": id}}}));
        let answer = loop {
            let msg = ws.recv();
            if msg.get("SubscribeApplied").is_some() || msg.get("SubscriptionError").is_some() {
                break msg;
            }
        };
        if *accepted {
            assert!(answer.get("SubscribeApplied").is_some(), "{query}: {answer}");
        } else {
            let text = answer["SubscriptionError"]["error"].as_str().unwrap_or_default();
            assert_eq!(text, format!("Subscriptions require indexes on join columns, executing: `{query}`"));
        }
    }
}
