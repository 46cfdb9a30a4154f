//! Repo signing keys, resolved from DIDs so commit signatures can be checked: `did:plc` through
//! the configured PLC directory (`GET {plc}/{did}`), `did:web` from the host's
//! `/.well-known/did.json`. The `#atproto` verification method of the DID document is the key.
//! Keys are cached for [`KEY_TTL`]; an `#identity` event forgets a repo's key at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use epoch_atproto::signature::PublicKey;
use parking_lot::Mutex;
use serde_json::Value;

/// How long a resolved key is trusted before it is resolved again.
pub const KEY_TTL: Duration = Duration::from_secs(600);
/// How long one resolution may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most keys kept (past it, the cache starts again).
pub const MAX_CACHED_KEYS: usize = 100_000;
/// The largest DID document read.
pub const MAX_DID_DOCUMENT_BYTES: usize = 64 << 10;

/// Why a DID's key could not be had.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The directory could not be asked (retry later).
    #[error("resolving {did}: {message}")]
    Unreachable { did: String, message: String },
    /// The DID has no usable key (its commits cannot be trusted).
    #[error("{did} has no usable #atproto key: {message}")]
    NoKey { did: String, message: String },
}

/// Resolves and caches signing keys.
pub struct Keys {
    plc: String,
    http: reqwest::blocking::Client,
    cache: Mutex<HashMap<String, (PublicKey, Instant)>>,
}

impl Keys {
    /// A resolver using the PLC directory at `plc` (`https://plc.directory`).
    pub fn new(plc: &str) -> Result<Self, ResolveError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(RESOLVE_TIMEOUT)
            .build()
            .map_err(|e| ResolveError::Unreachable { did: String::new(), message: format!("an HTTP client: {e}") })?;
        Ok(Self { plc: plc.trim_end_matches('/').to_string(), http, cache: Mutex::new(HashMap::new()) })
    }

    /// The current signing key of `did`.
    pub fn key(&self, did: &str) -> Result<PublicKey, ResolveError> {
        if let Some((key, at)) = self.cache.lock().get(did) {
            if at.elapsed() < KEY_TTL {
                return Ok(key.clone());
            }
        }
        let key = self.resolve(did)?;
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED_KEYS {
            cache.clear();
        }
        cache.insert(did.to_string(), (key.clone(), Instant::now()));
        Ok(key)
    }

    /// Forgets `did`'s key (its identity changed).
    pub fn forget(&self, did: &str) {
        self.cache.lock().remove(did);
    }

    fn resolve(&self, did: &str) -> Result<PublicKey, ResolveError> {
        let unreachable = |m: String| ResolveError::Unreachable { did: did.to_string(), message: m };
        let no_key = |m: String| ResolveError::NoKey { did: did.to_string(), message: m };
        let url = if did.starts_with("did:plc:") {
            format!("{}/{did}", self.plc)
        } else if let Some(host) = did.strip_prefix("did:web:") {
            if host.contains(['/', '?', '#', '@']) {
                return Err(no_key("a did:web with a path is not a repo host".into()));
            }
            format!("https://{}/.well-known/did.json", host.replace("%3A", ":"))
        } else {
            return Err(no_key("only did:plc and did:web are resolved".into()));
        };
        let resp = self.http.get(&url).send().map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(unreachable(format!("{url} answered {status}")));
        }
        if !status.is_success() {
            return Err(no_key(format!("{url} answered {status}")));
        }
        let body = resp.bytes().map_err(|e| unreachable(e.to_string()))?;
        if body.len() > MAX_DID_DOCUMENT_BYTES {
            return Err(no_key(format!("the DID document is over {MAX_DID_DOCUMENT_BYTES} bytes")));
        }
        let doc: Value = serde_json::from_slice(&body).map_err(|e| no_key(format!("the DID document: {e}")))?;
        if doc["id"].as_str() != Some(did) {
            return Err(no_key("the DID document is another DID's".into()));
        }
        let method = doc["verificationMethod"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["id"].as_str().is_some_and(|id| id == "#atproto" || id == format!("{did}#atproto")))
            .ok_or_else(|| no_key("no #atproto verification method".into()))?;
        let text = method["publicKeyMultibase"].as_str().ok_or_else(|| no_key("no publicKeyMultibase".into()))?;
        let kind = method["type"].as_str().unwrap_or("Multikey");
        PublicKey::from_verification_method(kind, text).map_err(|e| no_key(e.to_string()))
    }
}
