//! Export and import are exact: for every table of the `typecheck` fixture module (every SATS
//! type: all integer widths, floats with NaN payloads, infinities and -0.0, strings, byte
//! arrays, options, enums, nested products, identities, timestamps), random rows written as
//! CSV cells, whole CSV files and JSON lines read back equal, bit for bit.

mod common;

use epoch_core::export::{csv_cell, jsonl_row, read_csv, read_csv_cell, read_jsonl_row, write_csv};
use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType, SumValue, Typespace, F32, F64, I256, U256};
use proptest::prelude::*;

/// Floats with the values that break naive encoders given often.
fn f64s() -> BoxedStrategy<f64> {
    prop_oneof![
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
    ]
    .boxed()
}

fn f32s() -> BoxedStrategy<f32> {
    prop_oneof![
        any::<f32>(),
        any::<u32>().prop_map(f32::from_bits),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(-0.0f32),
    ]
    .boxed()
}

fn strings() -> BoxedStrategy<String> {
    prop_oneof![any::<String>(), "[,\"\n\r a-z0-9]{0,12}", Just(String::new()), Just("NaN".to_string())].boxed()
}

/// Values of `ty`, nesting at most `depth` more levels.
fn values(ts: &Typespace, ty: &AlgebraicType, depth: u32) -> BoxedStrategy<AlgebraicValue> {
    use AlgebraicType as T;
    use AlgebraicValue as V;
    match ty {
        T::Ref(r) => values(ts, &ts.types[*r as usize], depth),
        T::Bool => any::<bool>().prop_map(V::Bool).boxed(),
        T::I8 => any::<i8>().prop_map(V::I8).boxed(),
        T::U8 => any::<u8>().prop_map(V::U8).boxed(),
        T::I16 => any::<i16>().prop_map(V::I16).boxed(),
        T::U16 => any::<u16>().prop_map(V::U16).boxed(),
        T::I32 => any::<i32>().prop_map(V::I32).boxed(),
        T::U32 => any::<u32>().prop_map(V::U32).boxed(),
        T::I64 => any::<i64>().prop_map(V::I64).boxed(),
        T::U64 => any::<u64>().prop_map(V::U64).boxed(),
        T::I128 => prop_oneof![any::<i128>(), Just(i128::MIN), Just(i128::MAX)].prop_map(V::I128).boxed(),
        T::U128 => prop_oneof![any::<u128>(), Just(u128::MAX)].prop_map(V::U128).boxed(),
        T::I256 => prop_oneof![any::<[u8; 32]>().prop_map(I256::from_le_bytes), Just(I256::MIN), Just(I256::MAX),]
            .prop_map(|x| V::I256(Box::new(x)))
            .boxed(),
        T::U256 => prop_oneof![any::<[u8; 32]>().prop_map(U256::from_le_bytes), Just(U256::MAX)]
            .prop_map(|x| V::U256(Box::new(x)))
            .boxed(),
        T::F32 => f32s().prop_map(|f| V::F32(F32(f))).boxed(),
        T::F64 => f64s().prop_map(|f| V::F64(F64(f))).boxed(),
        T::String => strings().prop_map(|s| V::String(s.into())).boxed(),
        T::Array(_) if depth == 0 => Just(V::Array(Vec::new().into())).boxed(),
        T::Array(elem) => {
            proptest::collection::vec(values(ts, elem, depth - 1), 0..4).prop_map(|v| V::Array(v.into())).boxed()
        }
        T::Product(p) => products(ts, p, depth),
        T::Sum(s) => {
            let options: Vec<BoxedStrategy<AlgebraicValue>> = s
                .variants
                .iter()
                .enumerate()
                // Past the depth bound, only variants without payload nesting further.
                .filter(|(_, v)| depth > 0 || !matches!(v.ty, T::Array(_) | T::Product(_) | T::Sum(_) | T::Ref(_)))
                .map(|(tag, v)| {
                    values(ts, &v.ty, depth.saturating_sub(1))
                        .prop_map(move |value| V::Sum(SumValue { tag: tag as u8, value: Box::new(value) }))
                        .boxed()
                })
                .collect();
            let options = if options.is_empty() {
                let v = &s.variants[0];
                vec![values(ts, &v.ty, 0).prop_map(|value| V::Sum(SumValue { tag: 0, value: Box::new(value) })).boxed()]
            } else {
                options
            };
            proptest::strategy::Union::new(options).boxed()
        }
    }
}

fn products(ts: &Typespace, p: &ProductType, depth: u32) -> BoxedStrategy<AlgebraicValue> {
    let fields: Vec<BoxedStrategy<AlgebraicValue>> =
        p.elements.iter().map(|e| values(ts, &e.ty, depth.saturating_sub(1))).collect();
    fields.prop_map(|v| AlgebraicValue::Product(v.into())).boxed()
}

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
            proptest::collection::vec(products(&ts, &row_type, 4), 1..6)
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
