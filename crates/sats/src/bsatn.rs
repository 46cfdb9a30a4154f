//! BSATN: SpacetimeDB's binary encoding of algebraic values.
//!
//! Integers and floats are little-endian; `bool` is one byte (0 or 1); strings and arrays are a `u32`
//! length followed by the bytes or elements; a product is its elements in order; a sum is a `u8` tag
//! followed by the payload. Decoding is driven by a type and never panics on malformed input: every
//! failure is a [`DecodeError`], nesting is bounded by [`MAX_VALUE_DEPTH`], and the number of elements a
//! decode may create is bounded by the input's length (plus a small allowance for zero-sized ones).

use crate::limits::{MAX_VALUE_DEPTH, ZERO_SIZED_ALLOWANCE};
use crate::types::{AlgebraicType, Typespace};
use crate::value::{AlgebraicValue, SumValue, F32, F64, I256, U256};

/// Why a BSATN input could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("input ended early: needed {needed} more bytes")]
    UnexpectedEnd { needed: usize },
    #[error("invalid bool byte {0}")]
    InvalidBool(u8),
    #[error("invalid UTF-8 in string")]
    InvalidUtf8,
    #[error("sum tag {tag} out of range for a type with {variants} variants")]
    InvalidTag { tag: u8, variants: usize },
    #[error("type reference {0} does not exist in the typespace")]
    DanglingRef(u32),
    #[error("value nested deeper than {MAX_VALUE_DEPTH} levels")]
    TooDeep,
    #[error("array length {0} exceeds what the input can hold")]
    LengthTooLarge(u64),
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    #[error("{0}")]
    Invalid(String),
}

/// A cursor over BSATN bytes with checked primitive reads.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::UnexpectedEnd { needed: n - self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::InvalidBool(b)),
        }
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i128(&mut self) -> Result<i128, DecodeError> {
        Ok(i128::from_le_bytes(self.array()?))
    }

    /// A `u32` length prefix, checked against the bytes left (each element needs at least `min_elem_len`).
    pub fn len_prefix(&mut self, min_elem_len: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if min_elem_len > 0 && n > self.buf.len() / min_elem_len {
            return Err(DecodeError::LengthTooLarge(n as u64));
        }
        Ok(n)
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.len_prefix(1)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// `Option<T>` as a sum: tag 0 is `some`, tag 1 is `none`.
    pub fn option<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, DecodeError>) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => f(self).map(Some),
            1 => Ok(None),
            tag => Err(DecodeError::InvalidTag { tag, variants: 2 }),
        }
    }

    /// An array of `T`, each element read by `f`.
    pub fn vec<T>(&mut self, mut f: impl FnMut(&mut Self) -> Result<T, DecodeError>) -> Result<Vec<T>, DecodeError> {
        let n = self.len_prefix(1)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(f(self)?);
        }
        Ok(out)
    }
}

/// Decodes one value of type `ty` from the whole of `bytes`.
pub fn decode(ts: &Typespace, ty: &AlgebraicType, bytes: &[u8]) -> Result<AlgebraicValue, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = decode_from(ts, ty, &mut r)?;
    r.finish()?;
    Ok(v)
}

/// Decodes one value of type `ty` from the front of `r`.
pub fn decode_from(ts: &Typespace, ty: &AlgebraicType, r: &mut Reader<'_>) -> Result<AlgebraicValue, DecodeError> {
    let mut budget = r.remaining().len() + ZERO_SIZED_ALLOWANCE;
    Decoder { ts, budget: &mut budget }.value(ty, r, 0)
}

struct Decoder<'t, 'b> {
    ts: &'t Typespace,
    budget: &'b mut usize,
}

impl Decoder<'_, '_> {
    fn value(&mut self, ty: &AlgebraicType, r: &mut Reader<'_>, depth: u32) -> Result<AlgebraicValue, DecodeError> {
        use AlgebraicType as T;
        use AlgebraicValue as V;
        if depth > MAX_VALUE_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        Ok(match ty {
            T::Ref(i) => {
                let ty = self.ts.types.get(*i as usize).ok_or(DecodeError::DanglingRef(*i))?;
                return self.value(ty, r, depth + 1);
            }
            T::Bool => V::Bool(r.bool()?),
            T::I8 => V::I8(r.u8()? as i8),
            T::U8 => V::U8(r.u8()?),
            T::I16 => V::I16(i16::from_le_bytes(r.array()?)),
            T::U16 => V::U16(r.u16()?),
            T::I32 => V::I32(i32::from_le_bytes(r.array()?)),
            T::U32 => V::U32(r.u32()?),
            T::I64 => V::I64(i64::from_le_bytes(r.array()?)),
            T::U64 => V::U64(r.u64()?),
            T::I128 => V::I128(r.i128()?),
            T::U128 => V::U128(u128::from_le_bytes(r.array()?)),
            T::I256 => V::I256(Box::new(I256::from_le_bytes(r.array()?))),
            T::U256 => V::U256(Box::new(U256::from_le_bytes(r.array()?))),
            T::F32 => V::F32(F32(f32::from_bits(r.u32()?))),
            T::F64 => V::F64(F64(f64::from_bits(r.u64()?))),
            T::String => V::String(r.str()?.into()),
            T::Product(p) => {
                self.spend(p.elements.len())?;
                let mut out = Vec::with_capacity(p.elements.len());
                for e in p.elements.iter() {
                    out.push(self.value(&e.ty, r, depth + 1)?);
                }
                V::Product(out.into())
            }
            T::Sum(s) => {
                let tag = r.u8()?;
                let variant =
                    s.variants.get(tag as usize).ok_or(DecodeError::InvalidTag { tag, variants: s.variants.len() })?;
                let value = self.value(&variant.ty, r, depth + 1)?;
                V::Sum(SumValue { tag, value: Box::new(value) })
            }
            T::Array(elem) => {
                let n = r.u32()? as usize;
                self.spend(n)?;
                let mut out = Vec::with_capacity(n.min(r.remaining().len() + 16));
                for _ in 0..n {
                    out.push(self.value(elem, r, depth + 1)?);
                }
                V::Array(out.into())
            }
        })
    }

    fn spend(&mut self, n: usize) -> Result<(), DecodeError> {
        *self.budget = self.budget.checked_sub(n).ok_or(DecodeError::LengthTooLarge(n as u64))?;
        Ok(())
    }
}

/// Checks that `r` starts with a well-formed value of `ty` and skips it, without allocating.
pub fn skip(ts: &Typespace, ty: &AlgebraicType, r: &mut Reader<'_>) -> Result<(), DecodeError> {
    let mut budget = r.remaining().len() + ZERO_SIZED_ALLOWANCE;
    skip_inner(ts, ty, r, 0, &mut budget)
}

fn skip_inner(
    ts: &Typespace,
    ty: &AlgebraicType,
    r: &mut Reader<'_>,
    depth: u32,
    budget: &mut usize,
) -> Result<(), DecodeError> {
    use AlgebraicType as T;
    if depth > MAX_VALUE_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    match ty {
        T::Ref(i) => {
            let ty = ts.types.get(*i as usize).ok_or(DecodeError::DanglingRef(*i))?;
            skip_inner(ts, ty, r, depth + 1, budget)
        }
        T::Bool => r.bool().map(drop),
        T::I8 | T::U8 => r.take(1).map(drop),
        T::I16 | T::U16 => r.take(2).map(drop),
        T::I32 | T::U32 | T::F32 => r.take(4).map(drop),
        T::I64 | T::U64 | T::F64 => r.take(8).map(drop),
        T::I128 | T::U128 => r.take(16).map(drop),
        T::I256 | T::U256 => r.take(32).map(drop),
        T::String => r.str().map(drop),
        T::Product(p) => p.elements.iter().try_for_each(|e| skip_inner(ts, &e.ty, r, depth + 1, budget)),
        T::Sum(s) => {
            let tag = r.u8()?;
            let v = s.variants.get(tag as usize).ok_or(DecodeError::InvalidTag { tag, variants: s.variants.len() })?;
            skip_inner(ts, &v.ty, r, depth + 1, budget)
        }
        T::Array(elem) => {
            let n = r.u32()? as usize;
            *budget = budget.checked_sub(n).ok_or(DecodeError::LengthTooLarge(n as u64))?;
            // Elements whose every byte pattern is valid can be skipped in one step; anything with
            // a bool or a sum tag inside must be checked element by element.
            if let Some(len) = elem.fixed_bsatn_len(ts).filter(|_| elem.is_plain_bytes(ts)) {
                let total = n.checked_mul(len).ok_or(DecodeError::LengthTooLarge(n as u64))?;
                return r.take(total).map(drop);
            }
            (0..n).try_for_each(|_| skip_inner(ts, elem, r, depth + 1, budget))
        }
    }
}

/// Appends the BSATN encoding of `v` to `out`. The encoding needs no type.
pub fn encode(v: &AlgebraicValue, out: &mut Vec<u8>) {
    use AlgebraicValue as V;
    match v {
        V::Bool(b) => out.push(*b as u8),
        V::I8(x) => out.push(*x as u8),
        V::U8(x) => out.push(*x),
        V::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I128(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U128(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::I256(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::U256(x) => out.extend_from_slice(&x.to_le_bytes()),
        V::F32(x) => out.extend_from_slice(&x.0.to_bits().to_le_bytes()),
        V::F64(x) => out.extend_from_slice(&x.0.to_bits().to_le_bytes()),
        V::String(s) => {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        V::Array(a) => {
            out.extend_from_slice(&(a.len() as u32).to_le_bytes());
            a.iter().for_each(|x| encode(x, out));
        }
        V::Product(p) => p.iter().for_each(|x| encode(x, out)),
        V::Sum(s) => {
            out.push(s.tag);
            encode(&s.value, out);
        }
    }
}

/// The BSATN encoding of `v` as a new vector.
pub fn to_vec(v: &AlgebraicValue) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out);
    out
}

/// Small helpers for writing BSATN by hand.
pub mod write {
    pub fn u32(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn str(out: &mut Vec<u8>, s: &str) {
        u32(out, s.len() as u32);
        out.extend_from_slice(s.as_bytes());
    }
}
