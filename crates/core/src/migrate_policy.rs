//! 2.x's migration policy: an update that breaks clients (every client is disconnected, since
//! the row types or the rows they may see change) needs the publisher's explicit consent, a
//! token that names the exact database, running program and new program (from `pre_publish`).
//! 1.3 had no such rule, so a 1.3 module's update is only checked when a token is sent.

use epoch_schema::{DefVersion, ModuleDef};
use sha3::Digest;

use crate::migrate::Step;

/// What the publisher agreed to (`policy` and `token` of a publish).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationPolicy {
    /// Only updates that keep every client connected.
    #[default]
    Compatible,
    /// Any automatic update, if the token is the one `pre_publish` gave for this update.
    BreakClients([u8; 32]),
}

/// 2.x's refusal of a breaking update under the default policy.
pub const BREAKING_CHANGE_REFUSED: &str =
    "Migration plan contains a client-breaking change which is disallowed under current policy";
/// 2.x's refusal of a token that is not this update's.
pub const TOKEN_MISMATCH: &str = "Token provided is invalid or does not match expected hash";

/// Whether the update disconnects every client, as 2.x decides it: columns added to a table,
/// a table or a view removed (or a view reshaped), or a different set of row-level security
/// filters.
pub fn breaks_clients(old: &ModuleDef, new: &ModuleDef, steps: &[Step]) -> bool {
    let reshaped = steps.iter().any(Step::reshapes_rows);
    let same_filters = old.row_level_security.iter().all(|f| new.row_level_security.contains(f))
        && new.row_level_security.iter().all(|f| old.row_level_security.contains(f));
    reshaped || !same_filters
}

/// The token consenting to the update of database `identity` from program `old` to `new`
/// (Keccak-256 hashes of the wasm): Keccak-256 of the three in lowercase hex, as 2.x makes it.
pub fn migration_token(identity_hex: &str, old: &[u8; 32], new: &[u8; 32]) -> [u8; 32] {
    let text = format!("{identity_hex}{}{}", hex::encode(old), hex::encode(new));
    sha3::Keccak256::digest(text.as_bytes()).into()
}

/// A token as 2.x writes it in JSON and in a query: `0x` and the 256-bit little-endian number
/// in hex, without leading zeros.
pub fn token_text(token: &[u8; 32]) -> String {
    let mut be = *token;
    be.reverse();
    let digits = hex::encode(be);
    let digits = digits.trim_start_matches('0');
    format!("0x{}", if digits.is_empty() { "0" } else { digits })
}

/// Reads a token written by [`token_text`] (2.x requires the `0x`; at most 64 digits).
pub fn parse_token(text: &str) -> Option<[u8; 32]> {
    let digits = text.strip_prefix("+").unwrap_or(text).strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{digits:0>64}");
    let mut token: [u8; 32] = hex::decode(padded).ok()?.try_into().ok()?;
    token.reverse();
    Some(token)
}

/// Whether `policy` lets the update of database `identity_hex` from program `old` to `new`
/// through; the refusal is 2.x's text. A 1.3 module under the default policy is not checked
/// (1.3 asked for no consent).
pub fn check(
    policy: MigrationPolicy,
    identity_hex: &str,
    (old, new): (&[u8; 32], &[u8; 32]),
    new_def: &ModuleDef,
    breaking: bool,
) -> Result<(), &'static str> {
    match policy {
        MigrationPolicy::BreakClients(token) if token != migration_token(identity_hex, old, new) => Err(TOKEN_MISMATCH),
        MigrationPolicy::BreakClients(_) => Ok(()),
        MigrationPolicy::Compatible if breaking && new_def.version == DefVersion::V10 => Err(BREAKING_CHANGE_REFUSED),
        MigrationPolicy::Compatible => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_read_back_and_are_written_as_2_x_writes_them() {
        let mut t = [0u8; 32];
        t[0] = 0xab;
        t[1] = 0x01;
        assert_eq!(token_text(&t), "0x1ab");
        assert_eq!(parse_token("0x1ab"), Some(t));
        assert_eq!(parse_token("0x00001AB"), Some(t));
        assert_eq!(parse_token("1ab"), None);
        assert_eq!(parse_token(&format!("0x{}", "f".repeat(65))), None);
        let token = migration_token("c200", &[1; 32], &[2; 32]);
        assert_eq!(parse_token(&token_text(&token)), Some(token));
        assert_eq!(token_text(&[0; 32]), "0x0");
    }
}
