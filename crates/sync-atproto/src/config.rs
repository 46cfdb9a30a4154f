//! The `atproto` section of a database's sync configuration.

use serde_json::{json, Value};

use crate::limits::{
    DEFAULT_BATCH_SIZE, DEFAULT_CURSOR_MAX_AGE_HOURS, DEFAULT_PARALLEL_REPOS, DEFAULT_REQUESTS_PER_SECOND,
    MAX_BATCH_SIZE, MAX_COLLECTIONS, MAX_CONFIGURED_MEMBERS, MAX_PARALLEL_REPOS, MAX_REQUESTS_PER_SECOND,
    MIN_REQUESTS_PER_SECOND,
};

/// The reducer records go through unless the configuration names another:
/// `ingest_record(did, collection, rkey, cid, record: Option<String>)`.
pub const DEFAULT_RECORD_REDUCER: &str = "ingest_record";
/// The reducer that drops a repo's rows before a full re-sync: `reset_repo(did)`.
pub const DEFAULT_RESET_REDUCER: &str = "reset_repo";

/// A parsed `atproto` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AtprotoConfig {
    /// A PDS or relay, `https://…` (or `http://` for a local one).
    pub service: String,
    /// NSIDs kept; empty keeps every collection.
    pub collections: Vec<String>,
    /// DIDs synced; `None` discovers them with `listRepos`.
    pub members: Option<Vec<String>>,
    pub record_reducer: String,
    pub reset_reducer: String,
    pub backfill_cursor_max_age_hours: f64,
    pub requests_per_second: f64,
    pub parallel_repos: u32,
    pub batch_size: u32,
    /// A PLC directory, to resolve DIDs (for signature checks).
    pub plc: Option<String>,
}

fn is_nsid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    s.len() <= 317
        && parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 63 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

fn is_did(s: &str) -> bool {
    s.len() <= 2048
        && s.strip_prefix("did:").and_then(|r| r.split_once(':')).is_some_and(|(method, id)| {
            !method.is_empty()
                && method.bytes().all(|b| b.is_ascii_lowercase())
                && !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:%-".contains(&b))
        })
}

fn http_url(field: &str, v: &Value) -> Result<String, String> {
    match v.as_str() {
        Some(u) if (u.starts_with("https://") || u.starts_with("http://")) && u.len() > 8 => {
            Ok(u.trim_end_matches('/').to_string())
        }
        _ => Err(format!("`atproto.{field}` must be an http(s) URL")),
    }
}

impl AtprotoConfig {
    /// Whether `did` is synced (every repo is when no members are named).
    pub fn is_member(&self, did: &str) -> bool {
        self.members.as_ref().is_none_or(|m| m.binary_search_by(|x| x.as_str().cmp(did)).is_ok())
    }

    /// Whether records of `collection` are kept (every collection is when none are named).
    pub fn keeps(&self, collection: &str) -> bool {
        self.collections.is_empty() || self.collections.iter().any(|c| c == collection)
    }

    /// The database's section, checked and normalized in place; its reducers must exist.
    pub fn validate_section(
        config: &mut serde_json::Map<String, Value>,
        cx: &epoch_sync::ConfigContext<'_>,
    ) -> Result<(), String> {
        let section = config.get_mut("atproto").ok_or("`atproto` is missing")?;
        let parsed = Self::parse(section)?;
        for reducer in [&parsed.record_reducer, &parsed.reset_reducer] {
            if !(cx.has_reducer)(reducer) {
                return Err(format!("the module has no reducer `{reducer}` (atproto)"));
            }
        }
        *section = parsed.to_json();
        Ok(())
    }

    /// Parses and checks a section, naming the field that is wrong.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("`atproto` must be an object")?;
        let service = http_url("service", obj.get("service").unwrap_or(&Value::Null))?;
        let strings =
            |field: &str, max: usize, ok: fn(&str) -> bool, what: &str| -> Result<Option<Vec<String>>, String> {
                let Some(v) = obj.get(field).filter(|v| !v.is_null()) else { return Ok(None) };
                let list = v.as_array().ok_or_else(|| format!("`atproto.{field}` must be a list of {what}"))?;
                if list.len() > max {
                    return Err(format!("`atproto.{field}` may name at most {max}"));
                }
                list.iter()
                    .map(|x| x.as_str().filter(|s| ok(s)).map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .map(Some)
                    .ok_or_else(|| format!("`atproto.{field}` must be a list of {what}"))
            };
        let collections =
            strings("collections", MAX_COLLECTIONS, is_nsid, "NSIDs (app.example.record)")?.unwrap_or_default();
        // Sorted and without repeats, so membership is a binary search.
        let members = strings("members", MAX_CONFIGURED_MEMBERS, is_did, "DIDs")?.map(|mut m| {
            m.sort();
            m.dedup();
            m
        });
        let reducer = |field: &str, default: &str| -> Result<String, String> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(default.to_string()),
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(format!("`atproto.{field}` must be a reducer name")),
            }
        };
        let number = |field: &str, default: f64, min: f64, max: f64| -> Result<f64, String> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| format!("`atproto.{field}` must be a number from {min} to {max}")),
            }
        };
        Ok(Self {
            service,
            collections,
            members,
            record_reducer: reducer("recordReducer", DEFAULT_RECORD_REDUCER)?,
            reset_reducer: reducer("resetReducer", DEFAULT_RESET_REDUCER)?,
            backfill_cursor_max_age_hours: number("backfillCursorMaxAgeHours", DEFAULT_CURSOR_MAX_AGE_HOURS, 0.0, 1e6)?,
            requests_per_second: number(
                "requestsPerSecond",
                DEFAULT_REQUESTS_PER_SECOND,
                MIN_REQUESTS_PER_SECOND,
                MAX_REQUESTS_PER_SECOND,
            )?,
            parallel_repos: number("parallelRepos", DEFAULT_PARALLEL_REPOS as f64, 1.0, MAX_PARALLEL_REPOS as f64)?
                as u32,
            batch_size: number("batchSize", DEFAULT_BATCH_SIZE as f64, 1.0, MAX_BATCH_SIZE as f64)? as u32,
            plc: match obj.get("plc") {
                None | Some(Value::Null) => None,
                Some(v) => Some(http_url("plc", v)?),
            },
        })
    }

    /// The section with every default filled in.
    pub fn to_json(&self) -> Value {
        json!({
            "service": self.service,
            "collections": self.collections,
            "members": self.members,
            "recordReducer": self.record_reducer,
            "resetReducer": self.reset_reducer,
            "backfillCursorMaxAgeHours": self.backfill_cursor_max_age_hours,
            "requestsPerSecond": self.requests_per_second,
            "parallelRepos": self.parallel_repos,
            "batchSize": self.batch_size,
            "plc": self.plc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_checked_field_by_field() {
        let ok = AtprotoConfig::parse(&json!({"service": "http://127.0.0.1:2583/", "collections": ["app.forum.post"]}))
            .unwrap();
        assert_eq!(ok.service, "http://127.0.0.1:2583");
        assert_eq!(ok.backfill_cursor_max_age_hours, 48.0);
        assert_eq!(AtprotoConfig::parse(&ok.to_json()).unwrap(), ok);
        let err = |v: Value| AtprotoConfig::parse(&v).unwrap_err();
        assert!(err(json!({})).contains("service"));
        assert!(err(json!({"service": "ftp://x"})).contains("service"));
        assert!(err(json!({"service": "https://p.example", "collections": ["post"]})).contains("collections"));
        assert!(err(json!({"service": "https://p.example", "members": ["alice"]})).contains("members"));
        assert!(err(json!({"service": "https://p.example", "backfillCursorMaxAgeHours": -1}))
            .contains("backfillCursorMaxAgeHours"));
        let fractional =
            AtprotoConfig::parse(&json!({"service": "https://p.example", "backfillCursorMaxAgeHours": 0.25}));
        assert_eq!(fractional.unwrap().backfill_cursor_max_age_hours, 0.25);
        assert!(is_did("did:plc:abc123") && is_did("did:web:example.com") && !is_did("did:PLC:x"));
    }
}
