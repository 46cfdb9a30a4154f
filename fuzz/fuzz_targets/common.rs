//! The fixed (typespace, type) pairs the `bsatn_decode` and `json_decode` targets decode against.
//! The first input byte picks one (modulo `cases().len()`); the rest is the encoded value.

#![allow(dead_code)]

use epoch_sats::{AlgebraicType as T, AlgebraicValue as V, ProductType, SumType, SumTypeVariant, Typespace};

/// The case the first byte of `data` picks, and the rest of `data` (`None` for empty input).
pub fn pick(data: &[u8]) -> Option<(&'static Case, &[u8])> {
    static CASES: std::sync::OnceLock<Vec<Case>> = std::sync::OnceLock::new();
    let cases = CASES.get_or_init(cases);
    let (&sel, rest) = data.split_first()?;
    Some((&cases[sel as usize % cases.len()], rest))
}

pub struct Case {
    pub name: &'static str,
    pub ts: Typespace,
    pub ty: T,
}

fn case(name: &'static str, ts: Typespace, ty: T) -> Case {
    Case { name, ts, ty }
}

fn empty() -> Typespace {
    Typespace::default()
}

/// A typespace with recursive entries:
/// 0 = `Option<&0>` (a chain of `some`s), 1 = a linked list, 2 = a rose tree,
/// 3 = a sum that refers to itself through a product and an array.
fn recursive_ts() -> Typespace {
    Typespace {
        types: vec![
            T::option(T::Ref(0)),
            T::product([("head", T::I32), ("tail", T::option(T::Ref(1)))]),
            T::product([("value", T::U8), ("children", T::array(T::Ref(2)))]),
            T::Sum(SumType::new([
                ("Leaf", T::String),
                ("Pair", T::product([("l", T::Ref(3)), ("r", T::Ref(3))])),
                ("Many", T::array(T::Ref(3))),
                ("Nothing", T::unit()),
            ])),
        ],
    }
}

fn all_scalars() -> T {
    T::product([
        ("bool", T::Bool),
        ("i8", T::I8),
        ("u8", T::U8),
        ("i16", T::I16),
        ("u16", T::U16),
        ("i32", T::I32),
        ("u32", T::U32),
        ("i64", T::I64),
        ("u64", T::U64),
        ("i128", T::I128),
        ("u128", T::U128),
        ("i256", T::I256),
        ("u256", T::U256),
        ("f32", T::F32),
        ("f64", T::F64),
        ("string", T::String),
    ])
}

fn simple_enum() -> T {
    T::Sum(SumType::new([("Red", T::unit()), ("Green", T::unit()), ("Blue", T::unit())]))
}

pub fn cases() -> Vec<Case> {
    vec![
        case("all_scalars", empty(), all_scalars()),
        case(
            "nested_options_arrays",
            empty(),
            T::product([
                ("a", T::option(T::array(T::option(T::U32)))),
                ("b", T::array(T::array(T::String))),
                ("c", T::option(T::option(T::Bool))),
                ("d", T::array(T::option(T::array(T::U8)))),
            ]),
        ),
        case("recursive_option", recursive_ts(), T::Ref(0)),
        case("linked_list", recursive_ts(), T::Ref(1)),
        case("rose_tree", recursive_ts(), T::Ref(2)),
        case("recursive_sum", recursive_ts(), T::Ref(3)),
        case(
            "sum_with_product_payload",
            empty(),
            T::Sum(SumType::new([
                ("Point", T::product([("x", T::F64), ("y", T::F64)])),
                ("Named", T::product([("id", T::identity()), ("label", T::String)])),
                ("Empty", T::unit()),
                ("Scalars", all_scalars()),
            ])),
        ),
        case("schedule_at", empty(), T::schedule_at()),
        case(
            "specials",
            empty(),
            T::product([
                ("identity", T::identity()),
                ("connection_id", T::connection_id()),
                ("timestamp", T::timestamp()),
                ("duration", T::time_duration()),
            ]),
        ),
        case("bytes", empty(), T::array(T::U8)),
        case("string", empty(), T::String),
        case(
            "tuple_and_unnamed_variants",
            empty(),
            T::Product(ProductType::tuple([
                T::U16,
                T::Sum(SumType {
                    variants: vec![
                        SumTypeVariant { name: None, ty: T::I64 },
                        SumTypeVariant { name: None, ty: T::String },
                        SumTypeVariant { name: Some("named".into()), ty: T::Bool },
                    ]
                    .into(),
                }),
                T::Product(ProductType::tuple([])),
            ])),
        ),
        case("array_of_unit", empty(), T::array(T::unit())),
        case(
            "array_of_fixed_products",
            empty(),
            T::array(T::product([("flag", T::Bool), ("n", T::U16), ("e", simple_enum())])),
        ),
        case("array_of_bool", empty(), T::array(T::Bool)),
        case("array_of_simple_enum", empty(), T::array(simple_enum())),
        case("floats", empty(), T::product([("f32s", T::array(T::F32)), ("f64s", T::array(T::F64))])),
        case("wide_ints", empty(), T::array(T::product([("i", T::I256), ("u", T::U256), ("s", T::I128)]))),
        case("dangling_ref", empty(), T::option(T::Ref(7))),
        case("option_of_ref_array", recursive_ts(), T::array(T::option(T::Ref(2)))),
    ]
}

/// Whether `v` contains a NaN or infinite float (SATS-JSON writes those as `null`).
pub fn has_non_finite(v: &V) -> bool {
    match v {
        V::F32(f) => !f.0.is_finite(),
        V::F64(f) => !f.0.is_finite(),
        V::Sum(s) => has_non_finite(&s.value),
        V::Product(xs) | V::Array(xs) => xs.iter().any(has_non_finite),
        _ => false,
    }
}
