//! The `bank` fixture module, driven in-process: every reducer behaves as its source says.
mod common;
use common::*;
use epoch_core::ReducerOutcome;
use serde_json::json;

fn balances(db: &epoch_core::Database) -> Vec<(u64, i64)> {
    let mut v: Vec<_> =
        rows(db, "account").iter().map(|r| (r["id"].as_u64().unwrap(), r["balance"].as_i64().unwrap())).collect();
    v.sort();
    v
}

#[test]
fn open_accounts_creates_numbered_accounts_with_branches() {
    let mut db = load("bank");
    assert_eq!(call(&mut db, "open_accounts", "[100, 70, 5]"), ReducerOutcome::Committed);
    let accounts = rows(&db, "account");
    assert_eq!(accounts.len(), 70);
    assert!(accounts.iter().all(|a| a["balance"] == 5 && a["branch"] == a["id"].as_u64().unwrap() % 64));
}

#[test]
fn transfer_moves_money_and_writes_the_ledger() {
    let mut db = load("bank");
    call(&mut db, "open_accounts", "[0, 3, 100]");
    assert_eq!(call(&mut db, "transfer", "[0, 1, 40]"), ReducerOutcome::Committed);
    assert_eq!(call(&mut db, "transfer", "[1, 2, 140]"), ReducerOutcome::Committed);
    assert_eq!(balances(&db), vec![(0, 60), (1, 0), (2, 240)]);
    let ledger = rows(&db, "ledger");
    assert_eq!(
        ledger,
        vec![json!({"seq": 1, "from": 0, "to": 1, "amount": 40}), json!({"seq": 2, "from": 1, "to": 2, "amount": 140})]
    );
}

#[test]
fn transfer_failures_return_the_module_error_and_change_nothing() {
    let mut db = load("bank");
    call(&mut db, "open_accounts", "[0, 2, 100]");
    let cases = [
        ("[0, 1, 101]", "insufficient funds"),
        ("[0, 0, 1]", "bad transfer"),
        ("[0, 1, 0]", "bad transfer"),
        ("[5, 1, 1]", "unknown source"),
        ("[0, 5, 1]", "unknown target"),
    ];
    for (args, msg) in cases {
        assert_eq!(call(&mut db, "transfer", args), ReducerOutcome::Failed(msg.into()), "transfer {args}");
    }
    assert_eq!(balances(&db), vec![(0, 100), (1, 100)]);
    assert!(rows(&db, "ledger").is_empty());
    // The ledger's sequence keeps counting from where it was: failed calls hand out no duplicates.
    call(&mut db, "transfer", "[0, 1, 1]");
    assert_eq!(rows(&db, "ledger").len(), 1);
}

#[test]
fn transfer_fast_keeps_no_ledger_and_conserves_money() {
    let mut db = load("bank");
    call(&mut db, "open_accounts", "[0, 10, 1000]");
    for i in 0..200u32 {
        let (from, to) = (i % 10, (i * 7 + 3) % 10);
        let out = call(&mut db, "transfer_fast", &format!("[{from}, {to}, {}]", i % 50 + 1));
        assert!(matches!(out, ReducerOutcome::Committed | ReducerOutcome::Failed(_)));
    }
    assert!(rows(&db, "ledger").is_empty());
    assert_eq!(balances(&db).iter().map(|(_, b)| b).sum::<i64>(), 10_000);
    assert_eq!(call(&mut db, "transfer_fast", "[0, 1, 100000]"), ReducerOutcome::Failed("insufficient funds".into()));
}

#[test]
fn audit_branch_reads_through_the_branch_index() {
    let mut db = load("bank");
    call(&mut db, "open_accounts", "[0, 200, 10]");
    assert_eq!(call(&mut db, "audit_branch", "[3]"), ReducerOutcome::Committed);
    assert_eq!(call(&mut db, "audit_branch", "[63]"), ReducerOutcome::Committed);
}

#[test]
fn arguments_are_checked_against_the_reducer_signature() {
    let mut db = load("bank");
    for bad in ["[1, 2]", "[1, 2, 3, 4]", "[-1, 2, 3]", "[\"a\", 2, 3]", "{\"from\": 1}", "not json"] {
        let err = db
            .call("transfer", epoch_core::ReducerArgs::Json(bad.into()), epoch_core::Caller::identity(OWNER))
            .unwrap_err();
        assert!(matches!(err, epoch_core::CallError::InvalidArguments { .. }), "{bad}: {err}");
    }
    let err =
        db.call("nope", epoch_core::ReducerArgs::Json("[]".into()), epoch_core::Caller::identity(OWNER)).unwrap_err();
    assert_eq!(err, epoch_core::CallError::NoSuchReducer("nope".into()));
    // Arguments by name work too.
    call(&mut db, "open_accounts", r#"{"first": 0, "count": 2, "balance": 9}"#);
    assert_eq!(balances(&db), vec![(0, 9), (1, 9)]);
}

#[test]
fn csv_import_takes_columns_in_any_order_and_is_all_or_nothing() {
    let mut db = load("bank");
    call(&mut db, "open_accounts", "[0, 2, 100]");
    // Columns in another order than the table's, and a quoted cell.
    let n = db.import_csv("account", "branch,id,balance\n3,10,\"50\"\n4,11,60\n", OWNER).unwrap();
    assert_eq!(n, 2);
    assert_eq!(balances(&db), vec![(0, 100), (1, 100), (10, 50), (11, 60)]);
    // A key already held fails the file, naming the file's line; nothing is kept.
    let e = db.import_csv("account", "id,balance,branch\n12,1,0\n0,5,0\n", OWNER).unwrap_err();
    assert!(e.contains("line 3") && e.contains("nothing was imported"), "{e}");
    let e = db.import_csv("account", "id,balance\n13,1\n", OWNER).unwrap_err();
    assert!(e.contains("no column \"branch\""), "{e}");
    let e = db.import_csv("account", "id,balance,branch\n13,lots,0\n", OWNER).unwrap_err();
    assert!(e.contains("line 2, column \"balance\""), "{e}");
    assert_eq!(balances(&db), vec![(0, 100), (1, 100), (10, 50), (11, 60)]);
    assert!(db.import_csv("nope", "a\n", OWNER).unwrap_err().contains("no table"));
}
