//! The `typecheck` fixture module: every value type, index kind, failure mode and schedule.
mod common;
use common::*;
use std::time::Duration;

use epoch_core::{Caller, DatabaseHandle, HostConfig, ReducerArgs, ReducerOutcome};
use epoch_sats::{AlgebraicValue, F32, F64, I256, U256};
use serde_json::json;

/// Arguments for `insert_scalars` as JSON text, and the row values expected back (without the id).
fn scalar_case(which: usize) -> (String, Vec<AlgebraicValue>) {
    use AlgebraicValue as V;
    let s = |x: &str| V::string(x);
    match which {
        0 => (
            format!(
                "[false, {}, 0, {}, 0, {}, 0, {}, 0, {}, 0, \"-0x8{}\", \"0x0\", {:e}, {:e}, \"\"]",
                i8::MIN, i16::MIN, i32::MIN, i64::MIN, i128::MIN, "0".repeat(63), f32::MIN, f64::MIN
            ),
            vec![
                V::Bool(false), V::I8(i8::MIN), V::U8(0), V::I16(i16::MIN), V::U16(0), V::I32(i32::MIN), V::U32(0),
                V::I64(i64::MIN), V::U64(0), V::I128(i128::MIN), V::U128(0), V::I256(Box::new(I256::MIN)),
                V::U256(Box::new(U256::ZERO)), V::F32(F32(f32::MIN)), V::F64(F64(f64::MIN)), s(""),
            ],
        ),
        1 => (
            format!(
                "[true, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, \"0x7{}\", \"0x{}\", {:e}, {:e}, \"ünïcødé ✓ \\\"q\\\"\\n\"]",
                i8::MAX, u8::MAX, i16::MAX, u16::MAX, i32::MAX, u32::MAX, i64::MAX, u64::MAX, i128::MAX, u128::MAX,
                "f".repeat(63), "f".repeat(64), f32::MAX, f64::MAX
            ),
            vec![
                V::Bool(true), V::I8(i8::MAX), V::U8(u8::MAX), V::I16(i16::MAX), V::U16(u16::MAX), V::I32(i32::MAX),
                V::U32(u32::MAX), V::I64(i64::MAX), V::U64(u64::MAX), V::I128(i128::MAX), V::U128(u128::MAX),
                V::I256(Box::new(I256::MAX)), V::U256(Box::new(U256::MAX)), V::F32(F32(f32::MAX)),
                V::F64(F64(f64::MAX)), s("ünïcødé ✓ \"q\"\n"),
            ],
        ),
        _ => (
            "[true, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, \"-0x1\", \"0x1\", 1e-45, 5e-324, \"x\"]".to_string(),
            vec![
                V::Bool(true), V::I8(-1), V::U8(1), V::I16(-1), V::U16(1), V::I32(-1), V::U32(1), V::I64(-1),
                V::U64(1), V::I128(-1), V::U128(1), V::I256(Box::new(I256::new(-1))), V::U256(Box::new(U256::new(1))),
                V::F32(F32(1e-45)), V::F64(F64(5e-324)), s("x"),
            ],
        ),
    }
}

#[test]
fn extreme_scalars_round_trip_through_arguments_table_and_read_back() {
    let mut db = load("typecheck");
    for case in 0..3 {
        let (args, _) = scalar_case(case);
        assert_eq!(call(&mut db, "insert_scalars", &args), ReducerOutcome::Committed, "{args}");
    }
    let got = db.rows("scalars").unwrap();
    assert_eq!(got.len(), 3);
    for (case, row) in got.iter().enumerate() {
        let elems = row.as_product().unwrap();
        assert_eq!(elems[0], AlgebraicValue::U32(case as u32 + 1), "auto_inc u32 id");
        assert_eq!(&elems[1..], &scalar_case(case).1[..], "case {case}");
    }
    // The JSON read-back writes the extremes exactly as SpacetimeDB does.
    let text = db.rows_json("scalars").unwrap().join("\n");
    for needle in [
        "\"u128_\":340282366920938463463374607431768211455",
        "\"i128_\":-170141183460469231731687303715884105728",
        "\"u256_\":\"0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\"",
        "\"i256_\":\"-0x8000000000000000000000000000000000000000000000000000000000000000\"",
        "\"f64_\":1.7976931348623157e308",
    ] {
        assert!(text.contains(needle), "missing {needle} in {text}");
    }
}

#[test]
fn composite_values_round_trip_and_update_by_primary_key() {
    let mut db = load("typecheck");
    let row = json!({
        "key": "k1", "bytes": "00ff10", "words": ["a", "", "c"], "maybe": {"some": -7},
        "nested": {"some": [{"some": 1}, {"none": []}, {"some": 65535}]},
        "shape": {"Rect": {"w": 3, "h": 4}},
        "shapes": [{"Point": []}, {"Circle": 1.5}, {"Label": "hi"}],
        "level": {"High": []}, "size": {"w": 0, "h": 4294967295u32}
    });
    assert_eq!(call(&mut db, "put_composite", &row.to_string()), ReducerOutcome::Committed);
    assert_eq!(rows(&db, "composite"), vec![row.clone()]);
    let mut row2 = row.clone();
    row2["maybe"] = json!({"none": []});
    row2["nested"] = json!({"none": []});
    assert_eq!(call(&mut db, "put_composite", &row2.to_string()), ReducerOutcome::Committed);
    assert_eq!(rows(&db, "composite"), vec![row2]);
    assert_eq!(call(&mut db, "remove_composite", "[\"k1\"]"), ReducerOutcome::Committed);
    assert!(rows(&db, "composite").is_empty());
    assert_eq!(call(&mut db, "remove_composite", "[\"k1\"]"), ReducerOutcome::Failed("no composite k1".into()));
}

#[test]
fn stamp_records_sender_timestamp_and_duration() {
    let mut db = load("typecheck");
    let before = epoch_core::now_micros();
    assert_eq!(call(&mut db, "stamp", "[-1500]"), ReducerOutcome::Committed);
    let r = &rows(&db, "specials")[0];
    let who = r["who"]["__identity__"].as_str().unwrap();
    // OWNER is 32 bytes of 7, little-endian: the u256 is 0x0707…07.
    assert_eq!(who, format!("0x7{}", "07".repeat(31)));
    assert_eq!(r["conn"], json!({"none": []}));
    let at = r["at"]["__timestamp_micros_since_unix_epoch__"].as_i64().unwrap();
    assert!(at >= before && at <= epoch_core::now_micros());
    assert_eq!(r["span"], json!({"__time_duration_micros__": -1500}));
}

#[test]
fn failed_and_panicking_reducers_leave_nothing_behind() {
    let mut db = load("typecheck");
    call(&mut db, "fill_grid", "[2, 2, \"base\"]");
    let before = rows(&db, "grid");
    assert_eq!(call(&mut db, "insert_then_fail", "[\"gone\"]"), ReducerOutcome::Failed("deliberate failure".into()));
    match call(&mut db, "insert_then_panic", "[\"gone\"]") {
        ReducerOutcome::Panicked(msg) => assert!(msg.contains("deliberate panic"), "{msg}"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(rows(&db, "grid"), before);
    // The module keeps working after the trap, and the sequence never reuses an id.
    assert_eq!(call(&mut db, "fill_grid", "[1, 1, \"after\"]"), ReducerOutcome::Committed);
    let ids: Vec<i64> = rows(&db, "grid").iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 5);
    let mut dedup = ids.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 5);
}

#[test]
fn spin_is_stopped_at_the_time_limit_and_the_next_call_succeeds() {
    let config = HostConfig { reducer_timeout: Duration::from_millis(200), ..HostConfig::default() };
    let mut db = load_with("typecheck", config);
    let started = std::time::Instant::now();
    assert_eq!(call(&mut db, "spin", "[]"), ReducerOutcome::OutOfTime(Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(call(&mut db, "fill_grid", "[1, 1, \"alive\"]"), ReducerOutcome::Committed);
    assert_eq!(rows(&db, "grid").len(), 1);
}

#[test]
fn duplicate_key_returns_its_error_and_rolls_back() {
    let mut db = load("typecheck");
    assert_eq!(call(&mut db, "duplicate_key", "[]"), ReducerOutcome::Failed("unique violation".into()));
    assert!(rows(&db, "secret").is_empty());
    assert_eq!(call(&mut db, "keep_secret", "[\"one\"]"), ReducerOutcome::Committed);
    assert_eq!(call(&mut db, "keep_secret", "[\"two\"]"), ReducerOutcome::Committed);
    let s = rows(&db, "secret");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["note"], "two");
}

#[test]
fn index_range_delete_deletes_exactly_the_range() {
    let mut db = load("typecheck");
    call(&mut db, "fill_grid", "[4, 10, \"t\"]");
    assert_eq!(call(&mut db, "clear_column", "[2, 3, 7]"), ReducerOutcome::Committed);
    let mut left: Vec<(i64, i64)> =
        rows(&db, "grid").iter().map(|r| (r["x"].as_i64().unwrap(), r["y"].as_i64().unwrap())).collect();
    left.sort();
    let expected: Vec<(i64, i64)> =
        (0..4).flat_map(|x| (0..10).map(move |y| (x, y))).filter(|&(x, y)| !(x == 2 && (3..7).contains(&y))).collect();
    assert_eq!(left, expected);
    assert!(db.logs().tail(None).iter().any(|l| l.message == "cleared 4 cells"));
    // An empty and an inverted range delete nothing.
    call(&mut db, "clear_column", "[2, 5, 5]");
    call(&mut db, "clear_column", "[1, 8, 2]");
    assert_eq!(rows(&db, "grid").len(), 36);
}

#[test]
fn retag_updates_through_the_unique_id_and_the_tag_index() {
    let mut db = load("typecheck");
    call(&mut db, "fill_grid", "[3, 3, \"old\"]");
    call(&mut db, "fill_grid", "[1, 1, \"keep\"]");
    assert_eq!(call(&mut db, "retag", "[\"old\", \"new\"]"), ReducerOutcome::Committed);
    let tags: Vec<String> = rows(&db, "grid").iter().map(|r| r["tag"].as_str().unwrap().to_string()).collect();
    assert_eq!(tags.iter().filter(|t| *t == "new").count(), 9);
    assert_eq!(tags.iter().filter(|t| *t == "keep").count(), 1);
    assert_eq!(call(&mut db, "retag", "[\"old\", \"x\"]"), ReducerOutcome::Failed("no cells tagged old".into()));
}

#[test]
fn module_logs_keep_level_target_file_and_line() {
    let mut db = load("typecheck");
    // `init` ran at creation and logged the owner.
    assert!(db.logs().tail(None).iter().any(|l| l.message.starts_with("typecheck init by")));
    call(&mut db, "log_levels", "[\"hello\"]");
    let logs = db.logs().tail(Some(5));
    let levels: Vec<_> = logs.iter().map(|l| (l.level.as_str(), l.message.as_str())).collect();
    assert_eq!(
        levels,
        vec![
            ("Error", "E hello"),
            ("Warn", "W hello"),
            ("Info", "I hello"),
            ("Debug", "D hello"),
            ("Trace", "T hello")
        ]
    );
    assert!(logs
        .iter()
        .all(|l| l.filename.as_deref().is_some_and(|f| f.ends_with("lib.rs")) && l.line_number.is_some()));
    assert!(logs.iter().all(|l| l.target.as_deref() == Some("typecheck")));
}

#[test]
fn lifecycle_reducers_cannot_be_called_directly() {
    let mut db = load("typecheck");
    let err = db.call("init", ReducerArgs::Json("[]".into()), Caller::identity(OWNER)).unwrap_err();
    assert_eq!(err, epoch_core::CallError::LifecycleReducer("init".into()));
}

#[test]
fn scheduled_ticks_fire_as_the_module_identity_and_stop_after_cancel() {
    let db = load("typecheck");
    let (handle, _thread) = DatabaseHandle::spawn(db, "typecheck");
    let call = |name: &'static str, args: &'static str| {
        handle
            .with(move |db| db.call(name, ReducerArgs::Json(args.into()), Caller::identity(OWNER)).unwrap().outcome)
            .unwrap()
    };
    let ticks = |label: &'static str| {
        handle.with(move |db| rows(db, "tick_log").iter().filter(|r| r["label"] == label).count()).unwrap()
    };
    assert_eq!(call("schedule_ticks", "[\"every\", 50]"), ReducerOutcome::Committed);
    assert_eq!(call("schedule_once", "[\"once\", 100]"), ReducerOutcome::Committed);
    // Wait (bounded) for both kinds to fire.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (ticks("every") < 3 || ticks("once") < 1) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ticks("every") >= 3, "interval ticks fired {} times", ticks("every"));
    assert_eq!(ticks("once"), 1);
    // The one-shot row is gone after it fired; the interval row stays until cancelled.
    let schedule = handle.with(|db| rows(db, "tick_schedule")).unwrap();
    assert_eq!(schedule.len(), 1);
    assert_eq!(schedule[0]["label"], "every");
    assert_eq!(call("cancel_ticks", "[]"), ReducerOutcome::Committed);
    let after_cancel = ticks("every");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ticks("every"), after_cancel, "no tick after cancel_ticks");
    assert_eq!(ticks("once"), 1);
    // `tick` refuses other callers: only the scheduler (the module's own identity) may call it.
    let row = r#"[{"scheduled_id": 99, "scheduled_at": {"Time": {"__timestamp_micros_since_unix_epoch__": 0}}, "label": "forged"}]"#;
    assert_eq!(call("tick", row), ReducerOutcome::Failed("tick may only be called by the scheduler".into()));
}
