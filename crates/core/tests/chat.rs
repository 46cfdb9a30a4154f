//! The `chat` fixture module: lifecycle reducers, Option unique columns, private tables.
mod common;
use common::*;
use epoch_core::{Caller, Identity, ReducerOutcome};
use serde_json::json;

const ALICE: Identity = Identity([1; 32]);
const BOB: Identity = Identity([2; 32]);

fn member(db: &epoch_core::Database, who: Identity) -> Option<serde_json::Value> {
    let id = format!("0x{}", hex(who));
    rows(db, "member").into_iter().find(|m| m["identity"]["__identity__"] == json!(id))
}

fn hex(id: Identity) -> String {
    // The u256 prints most significant first, without leading zeros.
    id.to_hex().trim_start_matches('0').to_string()
}

#[test]
fn init_runs_once_with_the_owner_as_sender() {
    let db = load("chat");
    let audit = rows(&db, "audit");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["what"], "init");
    assert_eq!(audit[0]["who"]["__identity__"], json!(format!("0x{}", hex(OWNER))));
}

#[test]
fn connect_and_disconnect_track_members() {
    let mut db = load("chat");
    let r = db.client_connected(Caller::identity(ALICE)).expect("chat has client_connected");
    assert!(r.outcome.is_committed());
    assert_eq!(member(&db, ALICE).unwrap()["online"], true);
    assert_eq!(member(&db, ALICE).unwrap()["handle"], json!({"none": []}));
    db.client_disconnected(Caller::identity(ALICE));
    assert_eq!(member(&db, ALICE).unwrap()["online"], false);
    db.client_connected(Caller::identity(ALICE));
    assert_eq!(rows(&db, "member").len(), 1);
}

#[test]
fn handles_are_validated_and_unique_with_none_equal_to_none_as_in_1_3() {
    let mut db = load("chat");
    db.client_connected(Caller::identity(ALICE));
    // SpacetimeDB 1.3 treats two `None`s in a unique column as equal, so a second member without
    // a handle collides and `client_connected` fails; Epoch does the same.
    let bob = db.client_connected(Caller::identity(BOB)).unwrap();
    assert!(bob.outcome.is_host_failure(), "{:?}", bob.outcome);
    assert_eq!(rows(&db, "member").len(), 1);
    assert_eq!(call_as(&mut db, BOB, "set_handle", "[\"bob\"]"), ReducerOutcome::Committed);
    assert_eq!(rows(&db, "member").len(), 2);
    assert_eq!(
        call_as(&mut db, ALICE, "set_handle", "[\"  \"]"),
        ReducerOutcome::Failed("handle must be 1 to 32 characters".into())
    );
    assert_eq!(call_as(&mut db, ALICE, "set_handle", "[\" alice \"]"), ReducerOutcome::Committed);
    assert_eq!(member(&db, ALICE).unwrap()["handle"], json!({"some": "alice"}));
    // Bob cannot take Alice's handle: the unique constraint on `handle` traps the update.
    let out = call_as(&mut db, BOB, "set_handle", "[\"alice\"]");
    assert!(out.is_host_failure(), "{out:?}");
    assert_eq!(member(&db, BOB).unwrap()["handle"], json!({"some": "bob"}));
}

#[test]
fn posts_can_be_retracted_only_by_their_author_and_purged_by_index() {
    let mut db = load("chat");
    assert_eq!(call_as(&mut db, ALICE, "send_post", "[\"\"]"), ReducerOutcome::Failed("empty post".into()));
    for body in ["one", "two", "three"] {
        assert_eq!(call_as(&mut db, ALICE, "send_post", &json!([body]).to_string()), ReducerOutcome::Committed);
    }
    assert_eq!(call_as(&mut db, BOB, "send_post", "[\"bob's\"]"), ReducerOutcome::Committed);
    assert_eq!(call_as(&mut db, BOB, "retract", "[1]"), ReducerOutcome::Failed("not your post".into()));
    assert_eq!(call_as(&mut db, ALICE, "retract", "[99]"), ReducerOutcome::Failed("no such post".into()));
    assert_eq!(call_as(&mut db, ALICE, "retract", "[1]"), ReducerOutcome::Committed);
    assert_eq!(rows(&db, "audit").last().unwrap()["what"], "retract 1");
    let alice = json!([{"__identity__": format!("0x{}", hex(ALICE))}]).to_string();
    assert_eq!(call(&mut db, "purge_author", &alice), ReducerOutcome::Committed);
    let posts = rows(&db, "post");
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["body"], "bob's");
    assert!(db.logs().tail(Some(1))[0].message == "purged 2 posts");
}
