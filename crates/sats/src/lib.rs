//! # epoch-sats
//!
//! The algebraic type system of SpacetimeDB 1.3 modules, and its two wire forms:
//! [`bsatn`] (binary, used by the module ABI, the commitlog and the WebSocket protocol) and
//! [`json`] (SATS-JSON, used by the HTTP API and the JSON WebSocket protocol).
//!
//! Not for: row storage or schema rules; see `epoch-store` and `epoch-schema`.
//!
//! ```
//! use epoch_sats::{AlgebraicType, AlgebraicValue, Typespace, bsatn, json};
//! let ts = Typespace::default();
//! let ty = AlgebraicType::product([("id", AlgebraicType::U32), ("name", AlgebraicType::String)]);
//! let v = AlgebraicValue::product([AlgebraicValue::U32(7), AlgebraicValue::string("ada")]);
//! let bytes = bsatn::to_vec(&v);
//! assert_eq!(bsatn::decode(&ts, &ty, &bytes).unwrap(), v);
//! assert_eq!(json::to_string(&ts, &ty, &v).unwrap(), r#"{"id":7,"name":"ada"}"#);
//! ```

pub mod bsatn;
mod identity;
pub mod json;
pub mod limits;
#[cfg(feature = "proptest")]
pub mod strategy;
mod types;
mod value;

pub use identity::{le_bytes_hex, Identity};
pub use types::{special, AlgebraicType, ProductType, ProductTypeElement, SumType, SumTypeVariant, Typespace};
pub use value::{AlgebraicValue, SumValue, F32, F64, I256, U256};
