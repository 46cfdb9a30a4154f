//! Algebraic values: the decoded form of a BSATN value, used for keys, arguments and JSON.

use std::cmp::Ordering;
use std::fmt;

pub use ethnum::{I256, U256};

/// A value of some [`crate::AlgebraicType`].
///
/// Values are totally ordered (floats by IEEE total order) so that they can key B-tree indexes.
/// The derived order compares variants first, which only matters between values of different
/// types; values of one type compare the way SpacetimeDB orders them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlgebraicValue {
    Sum(SumValue),
    Product(Box<[AlgebraicValue]>),
    Array(Box<[AlgebraicValue]>),
    String(Box<str>),
    Bool(bool),
    I8(i8),
    U8(u8),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    I256(Box<I256>),
    U256(Box<U256>),
    F32(F32),
    F64(F64),
}

/// A value of a sum type: the variant's tag and its payload.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SumValue {
    pub tag: u8,
    pub value: Box<AlgebraicValue>,
}

macro_rules! total_float {
    ($name:ident, $f:ty, $bits:ty) => {
        /// A float with a total order (IEEE 754 `totalOrder`), so it can be an index key.
        #[derive(Clone, Copy, Default)]
        pub struct $name(pub $f);
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.cmp(other) == Ordering::Equal
            }
        }
        impl Eq for $name {}
        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $name {
            fn cmp(&self, other: &Self) -> Ordering {
                self.0.total_cmp(&other.0)
            }
        }
        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.0.to_bits().hash(state)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}
total_float!(F32, f32, u32);
total_float!(F64, f64, u64);

impl fmt::Debug for AlgebraicValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sum(s) => write!(f, "Sum({}, {:?})", s.tag, s.value),
            Self::Product(p) => f.debug_tuple("Product").field(p).finish(),
            Self::Array(a) => f.debug_tuple("Array").field(a).finish(),
            Self::String(s) => fmt::Debug::fmt(s, f),
            Self::Bool(v) => write!(f, "{v}"),
            Self::I8(v) => write!(f, "{v}i8"),
            Self::U8(v) => write!(f, "{v}u8"),
            Self::I16(v) => write!(f, "{v}i16"),
            Self::U16(v) => write!(f, "{v}u16"),
            Self::I32(v) => write!(f, "{v}i32"),
            Self::U32(v) => write!(f, "{v}u32"),
            Self::I64(v) => write!(f, "{v}i64"),
            Self::U64(v) => write!(f, "{v}u64"),
            Self::I128(v) => write!(f, "{v}i128"),
            Self::U128(v) => write!(f, "{v}u128"),
            Self::I256(v) => write!(f, "{v}i256"),
            Self::U256(v) => write!(f, "{v}u256"),
            Self::F32(v) => write!(f, "{:?}f32", v.0),
            Self::F64(v) => write!(f, "{:?}f64", v.0),
        }
    }
}

impl AlgebraicValue {
    /// The unit value, `()`.
    pub fn unit() -> Self {
        Self::Product(Box::new([]))
    }

    /// A product of the given elements.
    pub fn product(elements: impl Into<Box<[AlgebraicValue]>>) -> Self {
        Self::Product(elements.into())
    }

    /// A sum value with the given tag and payload.
    pub fn sum(tag: u8, value: AlgebraicValue) -> Self {
        Self::Sum(SumValue { tag, value: Box::new(value) })
    }

    /// `Some(v)` of an `Option` type.
    pub fn some(v: AlgebraicValue) -> Self {
        Self::sum(0, v)
    }

    /// `None` of an `Option` type.
    pub fn none() -> Self {
        Self::sum(1, Self::unit())
    }

    /// A string value.
    pub fn string(s: impl Into<Box<str>>) -> Self {
        Self::String(s.into())
    }

    /// An `Array(U8)` value.
    pub fn bytes(b: &[u8]) -> Self {
        Self::Array(b.iter().map(|&x| Self::U8(x)).collect())
    }

    /// The elements of a product value.
    pub fn as_product(&self) -> Option<&[AlgebraicValue]> {
        match self {
            Self::Product(p) => Some(p),
            _ => None,
        }
    }

    /// The string of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer value widened to `i128`, when it fits.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match self {
            Self::I8(v) => *v as i128,
            Self::U8(v) => *v as i128,
            Self::I16(v) => *v as i128,
            Self::U16(v) => *v as i128,
            Self::I32(v) => *v as i128,
            Self::U32(v) => *v as i128,
            Self::I64(v) => *v as i128,
            Self::U64(v) => *v as i128,
            Self::I128(v) => *v,
            Self::U128(v) => i128::try_from(*v).ok()?,
            Self::I256(v) => i128::try_from(**v).ok()?,
            Self::U256(v) => i128::try_from(**v).ok()?,
            _ => return None,
        })
    }
}
