//! Proptest strategies for values of any SATS type (behind the `proptest` feature), shared by
//! the codec tests of this crate and the export tests of `epoch-core`: one generator, so every
//! round-trip test meets the same hard cases (extreme integers, NaN payloads, infinities, -0.0,
//! strings with separators and quotes).

use proptest::prelude::*;

use crate::{AlgebraicType, AlgebraicValue, ProductType, SumValue, Typespace, F32, F64, I256, U256};

/// Which floats to generate: every bit pattern, or only finite ones (SpacetimeDB 1.3's
/// SATS-JSON writes NaN and infinities as `null`, which cannot come back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floats {
    Any,
    Finite,
}

/// Floats with the values that break naive encoders given often.
fn f64s(floats: Floats) -> BoxedStrategy<f64> {
    if floats == Floats::Finite {
        return any::<f64>().prop_filter("finite", |f| f.is_finite()).boxed();
    }
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

fn f32s(floats: Floats) -> BoxedStrategy<f32> {
    if floats == Floats::Finite {
        return any::<f32>().prop_filter("finite", |f| f.is_finite()).boxed();
    }
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
pub fn values(ts: &Typespace, ty: &AlgebraicType, depth: u32, floats: Floats) -> BoxedStrategy<AlgebraicValue> {
    use AlgebraicType as T;
    use AlgebraicValue as V;
    match ty {
        T::Ref(r) => values(ts, &ts.types[*r as usize], depth, floats),
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
        T::F32 => f32s(floats).prop_map(|f| V::F32(F32(f))).boxed(),
        T::F64 => f64s(floats).prop_map(|f| V::F64(F64(f))).boxed(),
        T::String => strings().prop_map(|s| V::String(s.into())).boxed(),
        T::Array(_) if depth == 0 => Just(V::Array(Vec::new().into())).boxed(),
        T::Array(elem) => proptest::collection::vec(values(ts, elem, depth - 1, floats), 0..4)
            .prop_map(|v| V::Array(v.into()))
            .boxed(),
        T::Product(p) => products(ts, p, depth, floats),
        T::Sum(s) => {
            let options: Vec<BoxedStrategy<AlgebraicValue>> = s
                .variants
                .iter()
                .enumerate()
                // Past the depth bound, only variants without payload nesting further.
                .filter(|(_, v)| depth > 0 || !matches!(v.ty, T::Array(_) | T::Product(_) | T::Sum(_) | T::Ref(_)))
                .map(|(tag, v)| {
                    values(ts, &v.ty, depth.saturating_sub(1), floats)
                        .prop_map(move |value| V::Sum(SumValue { tag: tag as u8, value: Box::new(value) }))
                        .boxed()
                })
                .collect();
            let options = if options.is_empty() {
                let v = &s.variants[0];
                vec![values(ts, &v.ty, 0, floats)
                    .prop_map(|value| V::Sum(SumValue { tag: 0, value: Box::new(value) }))
                    .boxed()]
            } else {
                options
            };
            proptest::strategy::Union::new(options).boxed()
        }
    }
}

/// Values of the product `p` (a table's row), nesting at most `depth` more levels.
pub fn products(ts: &Typespace, p: &ProductType, depth: u32, floats: Floats) -> BoxedStrategy<AlgebraicValue> {
    let fields: Vec<BoxedStrategy<AlgebraicValue>> =
        p.elements.iter().map(|e| values(ts, &e.ty, depth.saturating_sub(1), floats)).collect();
    fields.prop_map(|v| AlgebraicValue::Product(v.into())).boxed()
}
