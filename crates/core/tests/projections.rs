//! The `projections` fixture module: idempotent ingest that never lets older versions win.
mod common;
use common::*;
use epoch_core::ReducerOutcome;
use serde_json::json;

fn stats(db: &epoch_core::Database, source: &str) -> (u64, u64) {
    let s = rows(db, "ingest_stats").into_iter().find(|r| r["source"] == source).unwrap();
    (s["applied"].as_u64().unwrap(), s["skipped_stale"].as_u64().unwrap())
}

#[test]
fn project_aggregate_applies_newer_versions_only() {
    let mut db = load("projections");
    let p = |t: &str, id: &str, v: u64, s: &str| json!([t, id, v, s]).to_string();
    assert_eq!(call(&mut db, "project_aggregate", &p("user", "u1", 2, "{\"v\":2}")), ReducerOutcome::Committed);
    assert_eq!(call(&mut db, "project_aggregate", &p("user", "u1", 1, "{\"v\":1}")), ReducerOutcome::Committed);
    assert_eq!(call(&mut db, "project_aggregate", &p("user", "u1", 2, "{\"v\":2b}")), ReducerOutcome::Committed);
    assert_eq!(call(&mut db, "project_aggregate", &p("lock", "l1", 1, "{}")), ReducerOutcome::Committed);
    let rows_ = rows(&db, "aggregate_projection");
    let u1 = rows_.iter().find(|r| r["key"] == "user/u1").unwrap();
    assert_eq!((u1["version"].as_u64(), u1["state"].as_str()), (Some(2), Some("{\"v\":2}")));
    assert_eq!(stats(&db, "aggregate"), (2, 2));
    assert_eq!(
        call(&mut db, "project_aggregate", &p("", "x", 1, "")),
        ReducerOutcome::Failed("aggregate type and id are required".into())
    );
    assert_eq!(call(&mut db, "forget_aggregate", "[\"user\", \"u1\"]"), ReducerOutcome::Committed);
    assert_eq!(rows(&db, "aggregate_projection").len(), 1);
}

#[test]
fn ingest_shadow_guards_versions_per_thing_and_shadow() {
    let mut db = load("projections");
    let s = |thing: &str, shadow: &str, v: u64| json!([thing, shadow, v, format!("{{\"v\":{v}}}")]).to_string();
    for (t, sh, v) in [("t1", "a", 1), ("t1", "a", 3), ("t1", "a", 2), ("t1", "b", 1), ("t2", "a", 5)] {
        assert_eq!(call(&mut db, "ingest_shadow", &s(t, sh, v)), ReducerOutcome::Committed);
    }
    let rows_ = rows(&db, "device_named_shadow");
    assert_eq!(rows_.len(), 3);
    assert_eq!(rows_.iter().find(|r| r["key"] == "t1/a").unwrap()["version"], 3);
    assert_eq!(stats(&db, "shadow"), (4, 1));
    assert_eq!(
        call(&mut db, "ingest_shadow", &s("", "a", 1)),
        ReducerOutcome::Failed("thing and shadow names are required".into())
    );
}

#[test]
fn ingest_record_creates_updates_deletes_and_reset_repo_clears_by_did() {
    let mut db = load("projections");
    let rec = |did: &str, rkey: &str, r: Option<&str>| {
        let record = match r {
            Some(s) => json!({"some": s}),
            None => json!({"none": []}),
        };
        json!([did, "app.forum.post", rkey, "cid1", record]).to_string()
    };
    assert_eq!(call(&mut db, "ingest_record", &rec("did:plc:a", "1", Some("x"))), ReducerOutcome::Committed);
    assert_eq!(call(&mut db, "ingest_record", &rec("did:plc:a", "1", Some("y"))), ReducerOutcome::Committed);
    assert_eq!(call(&mut db, "ingest_record", &rec("did:plc:a", "2", Some("z"))), ReducerOutcome::Committed);
    assert_eq!(call(&mut db, "ingest_record", &rec("did:plc:b", "1", Some("w"))), ReducerOutcome::Committed);
    let r = rows(&db, "forum_record");
    assert_eq!(r.len(), 3);
    assert_eq!(r.iter().find(|x| x["uri"] == "at://did:plc:a/app.forum.post/1").unwrap()["record"], "y");
    assert_eq!(call(&mut db, "ingest_record", &rec("did:plc:a", "2", None)), ReducerOutcome::Committed);
    assert_eq!(rows(&db, "forum_record").len(), 2);
    assert_eq!(
        call(&mut db, "ingest_record", &rec("plc:a", "1", Some("x"))),
        ReducerOutcome::Failed("not a DID: plc:a".into())
    );
    assert_eq!(call(&mut db, "reset_repo", "[\"did:plc:a\"]"), ReducerOutcome::Committed);
    let left = rows(&db, "forum_record");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["did"], "did:plc:b");
}
