//! Algebraic types: the structural type system every row, argument and key is described in.

/// A type in the algebraic type system, as SpacetimeDB 1.3 modules describe them.
///
/// The variant order is the wire order: it is the BSATN tag of each variant in a module definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AlgebraicType {
    /// A reference to a type in the enclosing [`Typespace`].
    Ref(u32),
    /// A tagged union.
    Sum(SumType),
    /// A record or tuple.
    Product(ProductType),
    /// A variable-length array of one element type.
    Array(Box<AlgebraicType>),
    String,
    Bool,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    I128,
    U128,
    I256,
    U256,
    F32,
    F64,
}

/// The variants of a sum type; a variant's position is its tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SumType {
    pub variants: Box<[SumTypeVariant]>,
}

/// One variant of a sum type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SumTypeVariant {
    pub name: Option<Box<str>>,
    pub ty: AlgebraicType,
}

/// The elements of a product type, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ProductType {
    pub elements: Box<[ProductTypeElement]>,
}

/// One element (column, field) of a product type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProductTypeElement {
    pub name: Option<Box<str>>,
    pub ty: AlgebraicType,
}

/// The types a module declares, addressed by [`AlgebraicType::Ref`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Typespace {
    pub types: Vec<AlgebraicType>,
}

/// Field names SpacetimeDB uses to mark its special product types.
pub mod special {
    pub const IDENTITY: &str = "__identity__";
    pub const CONNECTION_ID: &str = "__connection_id__";
    pub const TIMESTAMP: &str = "__timestamp_micros_since_unix_epoch__";
    pub const TIME_DURATION: &str = "__time_duration_micros__";
}

impl AlgebraicType {
    /// The unit type: a product with no elements.
    pub fn unit() -> Self {
        Self::Product(ProductType::default())
    }

    /// `Option<T>` as SpacetimeDB encodes it: `some(T) | none(())`.
    pub fn option(inner: AlgebraicType) -> Self {
        Self::Sum(SumType::new([("some", inner), ("none", Self::unit())]))
    }

    /// `Identity`: a product with one `u256` element named `__identity__`.
    pub fn identity() -> Self {
        Self::product([(special::IDENTITY, Self::U256)])
    }

    /// `ConnectionId`: a product with one `u128` element named `__connection_id__`.
    pub fn connection_id() -> Self {
        Self::product([(special::CONNECTION_ID, Self::U128)])
    }

    /// `Timestamp`: microseconds since the Unix epoch, as an `i64`.
    pub fn timestamp() -> Self {
        Self::product([(special::TIMESTAMP, Self::I64)])
    }

    /// `TimeDuration`: a signed number of microseconds.
    pub fn time_duration() -> Self {
        Self::product([(special::TIME_DURATION, Self::I64)])
    }

    /// `ScheduleAt`: `Interval(TimeDuration) | Time(Timestamp)`.
    pub fn schedule_at() -> Self {
        Self::Sum(SumType::new([("Interval", Self::time_duration()), ("Time", Self::timestamp())]))
    }

    /// A product of named elements.
    pub fn product<'a>(elements: impl IntoIterator<Item = (&'a str, AlgebraicType)>) -> Self {
        Self::Product(ProductType::new(elements))
    }

    /// An array of `elem`.
    pub fn array(elem: AlgebraicType) -> Self {
        Self::Array(Box::new(elem))
    }

    /// Whether this is `Array(U8)`, which SATS-JSON writes as a hex string.
    pub fn is_bytes(&self) -> bool {
        matches!(self, Self::Array(e) if **e == Self::U8)
    }

    /// Whether this is an integer type of any width.
    pub fn is_integer(&self) -> bool {
        use AlgebraicType::*;
        matches!(self, I8 | U8 | I16 | U16 | I32 | U32 | I64 | U64 | I128 | U128 | I256 | U256)
    }

    /// Whether this sum type is the shape of `Option<T>`; returns `T`.
    pub fn as_option(&self) -> Option<&AlgebraicType> {
        match self {
            Self::Sum(s) => s.as_option(),
            _ => None,
        }
    }

    /// Whether every byte string of this type's fixed length is a valid value (integers, floats
    /// and products of them), so that skipping such values needs no check of their bytes.
    pub fn is_plain_bytes(&self, ts: &Typespace) -> bool {
        self.plain_depth(ts, 0)
    }

    fn plain_depth(&self, ts: &Typespace, depth: u32) -> bool {
        use AlgebraicType::*;
        depth <= 64
            && match self {
                I8 | U8 | I16 | U16 | I32 | U32 | I64 | U64 | I128 | U128 | I256 | U256 | F32 | F64 => true,
                Product(p) => p.elements.iter().all(|e| e.ty.plain_depth(ts, depth + 1)),
                Ref(r) => ts.types.get(*r as usize).is_some_and(|t| t.plain_depth(ts, depth + 1)),
                Bool | String | Sum(_) | Array(_) => false,
            }
    }

    /// The number of bytes every value of this type takes in BSATN, when that is fixed.
    pub fn fixed_bsatn_len(&self, ts: &Typespace) -> Option<usize> {
        self.fixed_len_depth(ts, 0)
    }

    fn fixed_len_depth(&self, ts: &Typespace, depth: u32) -> Option<usize> {
        use AlgebraicType::*;
        if depth > 64 {
            return None;
        }
        Some(match self {
            Bool | I8 | U8 => 1,
            I16 | U16 => 2,
            I32 | U32 | F32 => 4,
            I64 | U64 | F64 => 8,
            I128 | U128 => 16,
            I256 | U256 => 32,
            Product(p) => {
                let mut n = 0;
                for e in p.elements.iter() {
                    n += e.ty.fixed_len_depth(ts, depth + 1)?;
                }
                n
            }
            Ref(r) => ts.types.get(*r as usize)?.fixed_len_depth(ts, depth + 1)?,
            Sum(s) if s.variants.iter().all(|v| v.ty == AlgebraicType::unit()) => 1,
            Sum(_) | Array(_) | String => return None,
        })
    }
}

impl SumType {
    /// A sum of named variants.
    pub fn new<'a>(variants: impl IntoIterator<Item = (&'a str, AlgebraicType)>) -> Self {
        Self { variants: variants.into_iter().map(|(n, ty)| SumTypeVariant { name: Some(n.into()), ty }).collect() }
    }

    /// If this is `some(T) | none(())`, returns `T`.
    pub fn as_option(&self) -> Option<&AlgebraicType> {
        match &*self.variants {
            [some, none]
                if some.name.as_deref() == Some("some")
                    && none.name.as_deref() == Some("none")
                    && none.ty == AlgebraicType::unit() =>
            {
                Some(&some.ty)
            }
            _ => None,
        }
    }
}

impl ProductType {
    /// A product of named elements.
    pub fn new<'a>(elements: impl IntoIterator<Item = (&'a str, AlgebraicType)>) -> Self {
        Self { elements: elements.into_iter().map(|(n, ty)| ProductTypeElement { name: Some(n.into()), ty }).collect() }
    }

    /// A product of unnamed elements (a tuple).
    pub fn tuple(elements: impl IntoIterator<Item = AlgebraicType>) -> Self {
        Self { elements: elements.into_iter().map(|ty| ProductTypeElement { name: None, ty }).collect() }
    }

    /// If this product is one of SpacetimeDB's special types, the marker field name.
    pub fn special_name(&self) -> Option<&str> {
        match &*self.elements {
            [e] => match e.name.as_deref()? {
                n @ (special::IDENTITY | special::CONNECTION_ID | special::TIMESTAMP | special::TIME_DURATION) => {
                    Some(n)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The index of the element called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.elements.iter().position(|e| e.name.as_deref() == Some(name))
    }
}

impl Typespace {
    /// Follows `Ref`s until a structural type is reached; `None` for a dangling or cyclic reference.
    pub fn resolve<'a>(&'a self, mut ty: &'a AlgebraicType) -> Option<&'a AlgebraicType> {
        for _ in 0..=self.types.len() {
            match ty {
                AlgebraicType::Ref(r) => ty = self.types.get(*r as usize)?,
                other => return Some(other),
            }
        }
        None
    }
}
