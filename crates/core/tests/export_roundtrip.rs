//! Export and import are exact: for every table of the `typecheck` fixture module (every SATS
//! type: all integer widths, floats with NaN payloads, infinities and -0.0, strings, byte
//! arrays, options, enums, nested products, identities, timestamps), random rows written as
//! CSV cells, whole CSV files and JSON lines read back equal, bit for bit.

mod common;

use epoch_core::export::{csv_cell, jsonl_row, read_csv, read_csv_cell, read_jsonl_row, write_csv};
use epoch_sats::strategy::{products, Floats};
use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType, Typespace, F64, U256};
use proptest::prelude::*;

/// Every table of the typecheck module: its name and row type, and the typespace.
fn tables() -> (Typespace, Vec<(String, ProductType)>) {
    let db = common::load("typecheck");
    let store = db.store();
    let tables = store.tables().iter().map(|t| (t.schema.name().to_string(), t.schema.row_type().clone())).collect();
    ((*store.typespace).clone(), tables)
}

/// (typespace, table name, row type, rows) for a random table.
fn cases() -> impl Strategy<Value = (Typespace, String, ProductType, Vec<AlgebraicValue>)> {
    let (ts, tables) = tables();
    let per_table: Vec<_> = tables
        .into_iter()
        .map(|(name, row_type)| {
            let ts2 = ts.clone();
            proptest::collection::vec(products(&ts, &row_type, 4, Floats::Any), 1..6)
                .prop_map(move |rows| (ts2.clone(), name.clone(), row_type.clone(), rows))
                .boxed()
        })
        .collect();
    proptest::strategy::Union::new(per_table)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_cell_reads_back_exactly((ts, _name, row_type, rows) in cases()) {
        for row in &rows {
            let AlgebraicValue::Product(values) = row else { unreachable!() };
            for (e, v) in row_type.elements.iter().zip(values.iter()) {
                let cell = csv_cell(&ts, &e.ty, v).unwrap();
                let back = read_csv_cell(&ts, &e.ty, &cell).unwrap_or_else(|err| panic!("{cell:?}: {err}"));
                prop_assert_eq!(&back, v, "cell {:?}", cell);
            }
        }
    }

    #[test]
    fn csv_files_and_json_lines_read_back_exactly((ts, name, row_type, rows) in cases()) {
        let text = write_csv(&ts, &row_type, &rows).unwrap();
        let back: Vec<AlgebraicValue> =
            read_csv(&ts, &name, &row_type, &text).unwrap_or_else(|e| panic!("{text}: {e}")).into_iter().map(|(_, r)| r).collect();
        prop_assert_eq!(&back, &rows, "{}", text);
        for row in &rows {
            let line = jsonl_row(&ts, &row_type, row).unwrap();
            prop_assert!(!line.contains('\n'));
            prop_assert_eq!(&read_jsonl_row(&ts, &row_type, &line).unwrap(), row, "{}", line);
        }
    }
}

/// The extremes, one by one, in the text a user sees.
#[test]
fn extreme_values_are_written_in_full() {
    let ts = Typespace::default();
    let cell = |ty: AlgebraicType, v: AlgebraicValue| csv_cell(&ts, &ty, &v).unwrap();
    assert_eq!(cell(AlgebraicType::I128, AlgebraicValue::I128(i128::MIN)), i128::MIN.to_string());
    assert_eq!(cell(AlgebraicType::U128, AlgebraicValue::U128(u128::MAX)), u128::MAX.to_string());
    assert_eq!(cell(AlgebraicType::U256, AlgebraicValue::U256(Box::new(U256::MAX))), format!("0x{}", "f".repeat(64)));
    assert_eq!(cell(AlgebraicType::F64, AlgebraicValue::F64(F64(f64::NAN))), "NaN");
    assert_eq!(cell(AlgebraicType::F64, AlgebraicValue::F64(F64(f64::NEG_INFINITY))), "-Infinity");
    assert_eq!(cell(AlgebraicType::F64, AlgebraicValue::F64(F64(-0.0))), "-0.0");
    let odd_nan = f64::from_bits(0x7ff0_0000_0000_0001);
    let text = cell(AlgebraicType::F64, AlgebraicValue::F64(F64(odd_nan)));
    assert_eq!(text, "NaN:0x7ff0000000000001");
    assert_eq!(
        read_csv_cell(&ts, &AlgebraicType::F64, &text).unwrap(),
        AlgebraicValue::F64(F64(odd_nan)),
        "the NaN's payload survives"
    );
}

/// A header naming a column twice is refused, naming it (the second value is not dropped).
#[test]
fn a_column_named_twice_is_refused() {
    let (ts, tables) = tables();
    let (_, row_type) = tables.iter().find(|(n, _)| n == "tick_log").unwrap();
    let err = read_csv(
        &ts,
        "tick_log",
        row_type,
        "label,at,label\nx,\"{\"\"__timestamp_micros_since_unix_epoch__\"\":0}\",y\n",
    )
    .unwrap_err();
    assert!(err.contains("\"label\" twice"), "{err}");
}
