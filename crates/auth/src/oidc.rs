//! OpenID Connect discovery: tokens of an issuer the server was not given a key for are checked
//! against the keys the issuer publishes (`{iss}/.well-known/openid-configuration` →
//! `jwks_uri`), as SpacetimeDB 1.3 accepts tokens of any OpenID issuer. Keys are cached per
//! issuer and fetched again when a token names a key id the cache lacks (the issuer rotated its
//! keys), at most once per [`MIN_REFRESH`]; fetches have a timeout, and an issuer that cannot
//! be reached is a clear refusal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::Mutex;

use crate::AuthError;

/// How long one fetch from an issuer may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two fetches of one issuer's keys (a stream of tokens with unknown
/// key ids cannot make the server hammer the issuer).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// How long fetched keys are trusted before they are fetched again.
pub const KEYS_TTL: Duration = Duration::from_secs(3600);
/// The largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Which issuers' keys the server discovers, and the keys it has.
pub struct Discovery {
    /// `None`: any issuer (as 1.3); otherwise only these.
    allowed: Option<Vec<String>>,
    keys: Mutex<HashMap<String, IssuerKeys>>,
}

/// A published key: its id, the key, and the algorithm it is for (when the issuer says).
type PublishedKey = (Option<String>, DecodingKey, Option<Algorithm>);

struct IssuerKeys {
    keys: Vec<PublishedKey>,
    fetched: Instant,
}

impl Discovery {
    /// Discovery for the issuers in `allowed` (all when `None`).
    pub fn new(allowed: Option<Vec<String>>) -> Self {
        Self { allowed, keys: Mutex::new(HashMap::new()) }
    }

    /// Whether tokens of `issuer` may be checked by discovery: a listed issuer; or, with no list,
    /// any `https://` issuer (and plain `http://` on the loopback interface, for development) —
    /// the server fetches what a token names, so it never fetches plain-text URLs elsewhere.
    pub fn allows(&self, issuer: &str) -> bool {
        match &self.allowed {
            Some(list) => list.iter().any(|i| i.trim_end_matches('/') == issuer.trim_end_matches('/')),
            None => {
                issuer.starts_with("https://")
                    || ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"].iter().any(|p| issuer.starts_with(p))
            }
        }
    }

    /// The keys of `issuer` that may have signed a token with key id `kid` (all of its keys
    /// when the token names none), fetching them when needed.
    pub(crate) fn keys_for(
        &self,
        issuer: &str,
        kid: Option<&str>,
        force_refresh: bool,
    ) -> Result<Vec<(DecodingKey, Option<Algorithm>)>, AuthError> {
        let pick = |entry: &IssuerKeys| -> Vec<(DecodingKey, Option<Algorithm>)> {
            entry
                .keys
                .iter()
                .filter(|(k, _, _)| kid.is_none() || k.as_deref() == kid)
                .map(|(_, key, alg)| (key.clone(), *alg))
                .collect()
        };
        {
            let cache = self.keys.lock();
            if let Some(entry) = cache.get(issuer) {
                let fresh = entry.fetched.elapsed() < KEYS_TTL;
                let found = pick(entry);
                let may_refetch = entry.fetched.elapsed() >= MIN_REFRESH;
                if fresh && !found.is_empty() && !force_refresh {
                    return Ok(found);
                }
                if !may_refetch {
                    return Ok(found);
                }
            }
        }
        let fetched = fetch_keys(issuer)?;
        let entry = IssuerKeys { keys: fetched, fetched: Instant::now() };
        let found = pick(&entry);
        self.keys.lock().insert(issuer.to_string(), entry);
        Ok(found)
    }
}

/// Fetches an issuer's keys through its discovery document, on a thread of its own (the caller
/// may be inside an async runtime, where a blocking client must not run).
fn fetch_keys(issuer: &str) -> Result<Vec<PublishedKey>, AuthError> {
    let issuer = issuer.to_string();
    let unreachable = |e: String| AuthError::IssuerUnreachable { issuer: issuer.clone(), reason: e };
    let iss = issuer.clone();
    let set = std::thread::spawn(move || -> Result<JwkSet, String> {
        let client = reqwest::blocking::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| e.to_string())?;
        let get = |url: &str| -> Result<Vec<u8>, String> {
            let r = client.get(url).send().map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("{url} answered {}", r.status()));
            }
            let body = r.bytes().map_err(|e| e.to_string())?;
            if body.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{url} sent more than {MAX_DOCUMENT_BYTES} bytes"));
            }
            Ok(body.to_vec())
        };
        let discovery_url = format!("{}/.well-known/openid-configuration", iss.trim_end_matches('/'));
        let doc: serde_json::Value =
            serde_json::from_slice(&get(&discovery_url)?).map_err(|e| format!("{discovery_url}: {e}"))?;
        let jwks_uri = doc["jwks_uri"].as_str().ok_or_else(|| format!("{discovery_url} names no jwks_uri"))?;
        serde_json::from_slice(&get(jwks_uri)?).map_err(|e| format!("{jwks_uri}: {e}"))
    })
    .join()
    .map_err(|_| unreachable("the fetch failed".into()))?
    .map_err(unreachable)?;
    Ok(set
        .keys
        .iter()
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let alg = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some((jwk.common.key_id.clone(), key, alg))
        })
        .collect())
}
