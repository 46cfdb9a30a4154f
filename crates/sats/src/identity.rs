//! The one identity type of the server: who calls (a client's identity), who owns (a database's
//! owner) and what is addressed (a database's identity) are all 256-bit identities.
//!
//! SpacetimeDB keeps an identity as a little-endian `u256` (the module ABI and BSATN pass it so)
//! and shows it as 64 big-endian hex digits (URLs, JSON, logs). Keeping both forms behind one
//! type means the byte order is decided here once, not at every call site.

use std::fmt;

/// A 256-bit identity. Stored little-endian, as the module ABI passes it; shown big-endian hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Identity(pub [u8; 32]);

impl Identity {
    /// The identity whose little-endian bytes (as the ABI and BSATN carry them) are `le`.
    pub const fn from_le_bytes(le: [u8; 32]) -> Self {
        Self(le)
    }

    /// The identity whose big-endian bytes (as hex shows them) are `be`.
    pub fn from_be_bytes(mut be: [u8; 32]) -> Self {
        be.reverse();
        Self(be)
    }

    /// Little-endian bytes, as the module ABI and BSATN carry them.
    pub const fn to_le_bytes(self) -> [u8; 32] {
        self.0
    }

    pub fn to_be_bytes(self) -> [u8; 32] {
        let mut b = self.0;
        b.reverse();
        b
    }

    /// 64 lowercase hex digits, most significant first.
    pub fn to_hex(self) -> String {
        le_bytes_hex(&self.0)
    }

    /// The first 16 hex digits, as SpacetimeDB's messages name a database.
    pub fn short_hex(self) -> String {
        let mut s = self.to_hex();
        s.truncate(16);
        s
    }

    /// Parses 64 hex digits, most significant first (an optional `0x` is accepted).
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        let bytes: [u8; 32] = hex::decode(s).ok()?.try_into().ok()?;
        Some(Self::from_be_bytes(bytes))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.to_hex())
    }
}

/// Little-endian bytes (an identity's or a connection id's) as hex digits, most significant
/// first: how SpacetimeDB shows every such number.
pub fn le_bytes_hex(le: &[u8]) -> String {
    let mut be = le.to_vec();
    be.reverse();
    hex::encode(be)
}

#[cfg(test)]
mod tests {
    use super::Identity;

    #[test]
    fn hex_is_big_endian_and_round_trips() {
        let mut le = [0u8; 32];
        le[0] = 0x01; // least significant byte
        le[31] = 0xc2; // most significant byte
        let id = Identity::from_le_bytes(le);
        let hex = id.to_hex();
        assert!(hex.starts_with("c2") && hex.ends_with("01"), "{hex}");
        assert_eq!(id.short_hex(), hex[..16]);
        assert_eq!(Identity::from_hex(&hex), Some(id));
        assert_eq!(Identity::from_hex(&format!("0x{hex}")), Some(id));
        assert_eq!(Identity::from_hex(&hex.to_uppercase()), Some(id));
        assert_eq!(Identity::from_hex(&hex[1..]), None, "63 digits");
        assert_eq!(Identity::from_hex(&format!("{hex}00")), None, "66 digits");
        assert_eq!(Identity::from_hex(&"zz".repeat(32)), None);
    }
}
