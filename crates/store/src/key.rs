//! Index keys. An index over one integer or boolean column keeps its keys as `u64`s that sort
//! as the values do, read straight from the row's bytes: no decoding into a generic value and
//! no generic comparison on the hot path of every insert, lookup and delete. Any other index
//! keeps generic values.

use epoch_sats::{AlgebraicType, AlgebraicValue};

/// The type of a one-column integer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntKind {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
}

/// Flipping the sign bit makes two's-complement order unsigned order.
const SIGN: u64 = 1 << 63;

impl IntKind {
    /// The kind of a column of type `ty`, when it has one.
    pub(crate) fn of(ty: &AlgebraicType) -> Option<Self> {
        use AlgebraicType as T;
        Some(match ty {
            T::Bool => Self::Bool,
            T::U8 => Self::U8,
            T::U16 => Self::U16,
            T::U32 => Self::U32,
            T::U64 => Self::U64,
            T::I8 => Self::I8,
            T::I16 => Self::I16,
            T::I32 => Self::I32,
            T::I64 => Self::I64,
            _ => return None,
        })
    }

    /// The key of the value whose BSATN encoding starts `bytes`.
    pub(crate) fn key_of_bytes(self, bytes: &[u8]) -> Option<u64> {
        fn le<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
            b.get(..N)?.try_into().ok()
        }
        Some(match self {
            Self::Bool => match bytes.first()? {
                0 => 0,
                1 => 1,
                _ => return None,
            },
            Self::U8 => u8::from_le_bytes(le(bytes)?) as u64,
            Self::U16 => u16::from_le_bytes(le(bytes)?) as u64,
            Self::U32 => u32::from_le_bytes(le(bytes)?) as u64,
            Self::U64 => u64::from_le_bytes(le(bytes)?),
            Self::I8 => i8::from_le_bytes(le(bytes)?) as i64 as u64 ^ SIGN,
            Self::I16 => i16::from_le_bytes(le(bytes)?) as i64 as u64 ^ SIGN,
            Self::I32 => i32::from_le_bytes(le(bytes)?) as i64 as u64 ^ SIGN,
            Self::I64 => i64::from_le_bytes(le(bytes)?) as u64 ^ SIGN,
        })
    }

    /// The key of `v`, when it is a value of this kind.
    pub(crate) fn key_of_value(self, v: &AlgebraicValue) -> Option<u64> {
        use AlgebraicValue as V;
        Some(match (self, v) {
            (Self::Bool, V::Bool(b)) => *b as u64,
            (Self::U8, V::U8(n)) => *n as u64,
            (Self::U16, V::U16(n)) => *n as u64,
            (Self::U32, V::U32(n)) => *n as u64,
            (Self::U64, V::U64(n)) => *n,
            (Self::I8, V::I8(n)) => *n as i64 as u64 ^ SIGN,
            (Self::I16, V::I16(n)) => *n as i64 as u64 ^ SIGN,
            (Self::I32, V::I32(n)) => *n as i64 as u64 ^ SIGN,
            (Self::I64, V::I64(n)) => *n as u64 ^ SIGN,
            _ => return None,
        })
    }
}

/// One index key, in the form its index keeps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Int(u64),
    Value(AlgebraicValue),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Keys sort as the values do, and the bytes and the value give the same key.
        #[test]
        fn keys_keep_the_order_of_values(a in any::<i64>(), b in any::<i64>(), kind in 0usize..9) {
            let (va, vb, ty) = match kind {
                0 => (AlgebraicValue::Bool(a & 1 == 1), AlgebraicValue::Bool(b & 1 == 1), AlgebraicType::Bool),
                1 => (AlgebraicValue::U8(a as u8), AlgebraicValue::U8(b as u8), AlgebraicType::U8),
                2 => (AlgebraicValue::U16(a as u16), AlgebraicValue::U16(b as u16), AlgebraicType::U16),
                3 => (AlgebraicValue::U32(a as u32), AlgebraicValue::U32(b as u32), AlgebraicType::U32),
                4 => (AlgebraicValue::U64(a as u64), AlgebraicValue::U64(b as u64), AlgebraicType::U64),
                5 => (AlgebraicValue::I8(a as i8), AlgebraicValue::I8(b as i8), AlgebraicType::I8),
                6 => (AlgebraicValue::I16(a as i16), AlgebraicValue::I16(b as i16), AlgebraicType::I16),
                7 => (AlgebraicValue::I32(a as i32), AlgebraicValue::I32(b as i32), AlgebraicType::I32),
                _ => (AlgebraicValue::I64(a), AlgebraicValue::I64(b), AlgebraicType::I64),
            };
            let k = IntKind::of(&ty).unwrap();
            let (ka, kb) = (k.key_of_value(&va).unwrap(), k.key_of_value(&vb).unwrap());
            prop_assert_eq!(ka.cmp(&kb), va.cmp(&vb));
            let mut bytes = Vec::new();
            epoch_sats::bsatn::encode(&va, &mut bytes);
            prop_assert_eq!(k.key_of_bytes(&bytes), Some(ka));
        }
    }

    #[test]
    fn a_value_of_another_type_has_no_key() {
        assert_eq!(IntKind::U32.key_of_value(&AlgebraicValue::U64(1)), None);
        assert_eq!(IntKind::Bool.key_of_bytes(&[2]), None);
        assert_eq!(IntKind::U64.key_of_bytes(&[1, 2, 3]), None);
    }
}
