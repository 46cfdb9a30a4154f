//! OpenID Connect discovery: tokens of an issuer the server was not given a key for are checked
//! against the keys the issuer publishes (`{iss}/.well-known/openid-configuration` →
//! `jwks_uri`), as SpacetimeDB 1.3 accepts tokens of any OpenID issuer.
//!
//! The issuer is named by a token nobody has verified yet, so every fetch is an outside party
//! choosing where the server connects. Hence:
//! - the issuer is parsed as a URL ([`issuer_url`]): no user info, no query; without an
//!   operator's list only `https://` issuers on public addresses (checked after DNS resolution,
//!   on every connection) are fetched; an issuer the operator listed may be anywhere;
//! - the key set must be on the issuer's origin, or on an origin the operator allowed
//!   ([`jwks_uri`]); redirects are followed only within the origin they start from;
//! - documents are read as they arrive and refused past [`MAX_DOCUMENT_BYTES`];
//! - fetches are asynchronous, one at a time per issuer, at most [`MAX_CONCURRENT_FETCHES`] at
//!   once; a failure is remembered for [`FAILED_FETCH_TTL`], and one issuer is fetched at most
//!   once per [`MIN_REFRESH`];
//! - the refusal a caller sees names the issuer only; what went wrong is logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{BoxFuture, FutureExt, Shared};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::{Origin, Url};

use crate::limits::{
    FAILED_FETCH_TTL, FETCH_TIMEOUT, KEYS_TTL, MAX_CACHED_ISSUERS, MAX_CACHED_KEY_BYTES, MAX_CONCURRENT_FETCHES,
    MAX_DOCUMENT_BYTES, MIN_REFRESH,
};
pub use crate::outbound::is_public;
use crate::outbound::{literal_host_is_public, same_origin_redirects, PublicOnly};
use crate::AuthError;

/// Why a discovery document or key set (or the issuer naming them) is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocumentError {
    #[error("the issuer is not a URL: {0}")]
    IssuerNotUrl(String),
    #[error("the issuer must be an http(s) URL with a host, without user info, query or fragment")]
    IssuerShape,
    #[error("the document is not valid JSON of the expected shape: {0}")]
    Json(String),
    #[error("the discovery document is for issuer `{0}`")]
    IssuerMismatch(String),
    #[error("jwks_uri is not a URL: {0}")]
    JwksNotUrl(String),
    #[error("jwks_uri must be an http(s) URL without user info")]
    JwksShape,
    #[error("jwks_uri is on another origin than the issuer (and not on one the operator allowed)")]
    JwksOrigin,
}

/// A published key: its id, the key, and the algorithm it is for (when the issuer says).
#[derive(Clone)]
pub struct PublishedKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub alg: Option<Algorithm>,
}

/// Parses a token's issuer as the URL discovery starts from: `http` or `https`, a host, no user
/// info (`http://a@b/` connects to `b`), no query or fragment.
pub fn issuer_url(issuer: &str) -> Result<Url, DocumentError> {
    let url = Url::parse(issuer).map_err(|e| DocumentError::IssuerNotUrl(e.to_string()))?;
    let shaped = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if !shaped {
        return Err(DocumentError::IssuerShape);
    }
    Ok(url)
}

/// Where an issuer's discovery document is: `{issuer}/.well-known/openid-configuration`.
pub fn discovery_url(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = format!("{}/.well-known/openid-configuration", issuer.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// The key set's URL named by the discovery document `doc` of `issuer`: the document must be
/// the issuer's (its `issuer` field), and `jwks_uri` on the issuer's origin or one of
/// `allowed_origins`. Pure: what the network brings is checked here.
pub fn jwks_uri(issuer: &str, doc: &[u8], allowed_origins: &[Origin]) -> Result<Url, DocumentError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        issuer: String,
        jwks_uri: String,
    }
    let base = issuer_url(issuer)?;
    let doc: Doc = serde_json::from_slice(doc).map_err(|e| DocumentError::Json(e.to_string()))?;
    if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(DocumentError::IssuerMismatch(doc.issuer));
    }
    let jwks = Url::parse(&doc.jwks_uri).map_err(|e| DocumentError::JwksNotUrl(e.to_string()))?;
    if !matches!(jwks.scheme(), "http" | "https") || !jwks.username().is_empty() || jwks.password().is_some() {
        return Err(DocumentError::JwksShape);
    }
    let origin = jwks.origin();
    if origin != base.origin() && !allowed_origins.contains(&origin) {
        return Err(DocumentError::JwksOrigin);
    }
    Ok(jwks)
}

/// The keys of a JWKS document (keys the JWT library cannot use are skipped).
pub fn parse_jwks(doc: &[u8]) -> Result<Vec<PublishedKey>, DocumentError> {
    let set: JwkSet = serde_json::from_slice(doc).map_err(|e| DocumentError::Json(e.to_string()))?;
    Ok(set
        .keys
        .iter()
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let alg = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some(PublishedKey { kid: jwk.common.key_id.clone(), key, alg })
        })
        .collect())
}

fn http_client(public_only: bool) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::custom(same_origin_redirects));
    let builder = if public_only { builder.dns_resolver(Arc::new(PublicOnly)) } else { builder };
    builder.build()
}

/// Which issuers' keys the server discovers, and the keys it has.
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None`: any `https://` issuer on a public address (as 1.3, which accepts any issuer);
    /// otherwise only these, wherever they are.
    allowed: Option<Vec<String>>,
    /// Origins other than an issuer's own that its `jwks_uri` may name.
    jwks_origins: Vec<Origin>,
    /// For issuers the operator did not list: connects to public addresses only.
    public_client: reqwest::Client,
    /// For listed issuers and allowed key-set origins.
    trusted_client: reqwest::Client,
    fetches: Arc<Semaphore>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    issuers: HashMap<String, IssuerEntry>,
    bytes: usize,
}

/// What the server knows of one issuer's keys.
struct IssuerEntry {
    keys: Arc<Vec<PublishedKey>>,
    bytes: usize,
    fetched: Option<Instant>,
    attempted: Instant,
    /// The last fetch failed.
    failed: bool,
    /// The fetch under way, which later callers wait for instead of fetching again.
    inflight: Option<Shared<BoxFuture<'static, ()>>>,
    used: Instant,
}

impl IssuerEntry {
    fn new(now: Instant) -> Self {
        Self { keys: Arc::default(), bytes: 0, fetched: None, attempted: now, failed: false, inflight: None, used: now }
    }
}

/// A key that may have signed a token, and the algorithm it is for.
pub(crate) type Candidate = (DecodingKey, Option<Algorithm>);

enum Decision {
    Ready(Vec<Candidate>),
    Wait(Shared<BoxFuture<'static, ()>>),
}

fn unreachable(issuer: &str) -> AuthError {
    AuthError::IssuerUnreachable { issuer: issuer.to_string() }
}

fn pick(entry: &IssuerEntry, kid: Option<&str>) -> Vec<Candidate> {
    entry.keys.iter().filter(|k| kid.is_none() || k.kid.as_deref() == kid).map(|k| (k.key.clone(), k.alg)).collect()
}

impl Discovery {
    /// Discovery for the issuers in `allowed` (any public `https://` issuer when `None`), whose
    /// key sets may also be on `jwks_origins` (e.g. `https://www.googleapis.com`).
    pub fn new(allowed: Option<Vec<String>>, jwks_origins: &[String]) -> Result<Self, AuthError> {
        let origins = jwks_origins
            .iter()
            .map(|o| match Url::parse(o) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(u.origin()),
                _ => Err(AuthError::Config(format!("`{o}` is not an http(s) origin"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = |public| http_client(public).map_err(|e| AuthError::Config(format!("an HTTP client: {e}")));
        let inner = Inner {
            allowed,
            jwks_origins: origins,
            public_client: client(true)?,
            trusted_client: client(false)?,
            fetches: Arc::new(Semaphore::new(MAX_CONCURRENT_FETCHES)),
            cache: Mutex::new(Cache::default()),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Whether tokens of `issuer` may be checked by discovery, and whether the operator listed
    /// it (then it is fetched wherever it is). Unlisted issuers must be `https://` and, when
    /// their host is an address, a public one (names are checked as they resolve).
    pub(crate) fn admit(&self, issuer: &str) -> Result<(Url, bool), AuthError> {
        let untrusted = || AuthError::UntrustedIssuer(issuer.to_string());
        let url = issuer_url(issuer).map_err(|_| untrusted())?;
        match &self.inner.allowed {
            Some(list) if list.iter().any(|i| i.trim_end_matches('/') == issuer.trim_end_matches('/')) => {
                Ok((url, true))
            }
            Some(_) => Err(untrusted()),
            None if url.scheme() == "https" && literal_host_is_public(&url) => Ok((url, false)),
            None => Err(untrusted()),
        }
    }

    /// The keys of `issuer` (admitted as `url`) that may have signed a token with key id `kid`
    /// (all of its keys when the token names none), fetching them when needed.
    pub(crate) async fn keys_for(
        &self,
        issuer: &str,
        url: Url,
        trusted: bool,
        kid: Option<&str>,
        force_refresh: bool,
    ) -> Result<Vec<Candidate>, AuthError> {
        let wait = match self.inner.decide(issuer, url, trusted, kid, force_refresh)? {
            Decision::Ready(keys) => return Ok(keys),
            Decision::Wait(fetch) => fetch,
        };
        wait.await;
        let cache = self.inner.cache.lock();
        let entry = cache.issuers.get(issuer).ok_or_else(|| unreachable(issuer))?;
        let found = pick(entry, kid);
        if entry.failed && found.is_empty() {
            return Err(unreachable(issuer));
        }
        Ok(found)
    }
}

impl Inner {
    /// What the cache says of `issuer`: keys to use, a fetch to wait for (started here when
    /// needed and allowed), or a remembered failure.
    fn decide(
        self: &Arc<Self>,
        issuer: &str,
        url: Url,
        trusted: bool,
        kid: Option<&str>,
        force_refresh: bool,
    ) -> Result<Decision, AuthError> {
        let mut cache = self.cache.lock();
        let now = Instant::now();
        if let Some(entry) = cache.issuers.get_mut(issuer) {
            entry.used = now;
            if let Some(fetch) = &entry.inflight {
                return Ok(Decision::Wait(fetch.clone()));
            }
            let found = pick(entry, kid);
            if entry.failed && entry.attempted.elapsed() < FAILED_FETCH_TTL {
                return if found.is_empty() { Err(unreachable(issuer)) } else { Ok(Decision::Ready(found)) };
            }
            let fresh = entry.fetched.is_some_and(|t| t.elapsed() < KEYS_TTL);
            if (fresh && !found.is_empty() && !force_refresh) || entry.attempted.elapsed() < MIN_REFRESH {
                return Ok(Decision::Ready(found));
            }
        }
        let Ok(permit) = self.fetches.clone().try_acquire_owned() else {
            tracing::warn!(issuer, limit = MAX_CONCURRENT_FETCHES, "too many key fetches under way; token refused");
            return Err(unreachable(issuer));
        };
        if !cache.issuers.contains_key(issuer) {
            make_room(&mut cache, MAX_CACHED_ISSUERS - 1);
        }
        let task = tokio::spawn(fetch_and_store(self.clone(), issuer.to_string(), url, trusted, permit));
        let fetch = task.map(|_| ()).boxed().shared();
        let entry = cache.issuers.entry(issuer.to_string()).or_insert_with(|| IssuerEntry::new(now));
        entry.attempted = now;
        entry.inflight = Some(fetch.clone());
        Ok(Decision::Wait(fetch))
    }

    /// Records the outcome of a fetch of `issuer`'s keys (`None`: it failed).
    fn store(&self, issuer: &str, outcome: Option<(Vec<PublishedKey>, usize)>) {
        let mut guard = self.cache.lock();
        let cache = &mut *guard;
        let Some(entry) = cache.issuers.get_mut(issuer) else { return };
        entry.inflight = None;
        let Some((keys, bytes)) = outcome else {
            entry.failed = true;
            return;
        };
        let before = entry.bytes;
        entry.keys = Arc::new(keys);
        entry.bytes = bytes;
        entry.fetched = Some(Instant::now());
        entry.failed = false;
        cache.bytes = cache.bytes - before + bytes;
        make_room(cache, MAX_CACHED_ISSUERS);
    }

    /// The key set of `issuer` through its discovery document, or why not (for the log).
    async fn fetch_keys(&self, issuer: &str, url: &Url, trusted: bool) -> Result<(Vec<PublishedKey>, usize), String> {
        let client = if trusted { &self.trusted_client } else { &self.public_client };
        let doc = read_capped(client, discovery_url(url)).await?;
        let jwks = jwks_uri(issuer, &doc, &self.jwks_origins).map_err(|e| e.to_string())?;
        let jwks_trusted = trusted || self.jwks_origins.contains(&jwks.origin());
        if !jwks_trusted && !literal_host_is_public(&jwks) {
            return Err(format!("{jwks} is not a public address"));
        }
        let client = if jwks_trusted { &self.trusted_client } else { &self.public_client };
        let body = read_capped(client, jwks.clone()).await?;
        let keys = parse_jwks(&body).map_err(|e| format!("{jwks}: {e}"))?;
        Ok((keys, body.len()))
    }
}

/// Forgets the least recently used issuers (not those being fetched) until at most `issuers`
/// remain and their key sets fit [`MAX_CACHED_KEY_BYTES`].
fn make_room(cache: &mut Cache, issuers: usize) {
    while cache.issuers.len() > issuers || cache.bytes > MAX_CACHED_KEY_BYTES {
        let oldest = cache.issuers.iter().filter(|(_, e)| e.inflight.is_none()).min_by_key(|(_, e)| e.used);
        let Some(name) = oldest.map(|(name, _)| name.clone()) else { return };
        if let Some(gone) = cache.issuers.remove(&name) {
            cache.bytes -= gone.bytes;
        }
    }
}

/// Records a fetch's outcome when dropped, so a fetch that is cancelled (its runtime stops) or
/// panics still ends as a failure rather than leaving waiters behind.
struct Landing {
    inner: Arc<Inner>,
    issuer: String,
    outcome: Option<(Vec<PublishedKey>, usize)>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.inner.store(&self.issuer, self.outcome.take());
    }
}

async fn fetch_and_store(inner: Arc<Inner>, issuer: String, url: Url, trusted: bool, permit: OwnedSemaphorePermit) {
    let mut landing = Landing { inner: inner.clone(), issuer, outcome: None };
    match inner.fetch_keys(&landing.issuer, &url, trusted).await {
        Ok(keys) => landing.outcome = Some(keys),
        Err(reason) => tracing::warn!(issuer = %landing.issuer, %reason, "could not fetch an OpenID issuer's keys"),
    }
    drop(permit);
}

/// GETs `url`, reading at most [`MAX_DOCUMENT_BYTES`] of the body as it arrives.
async fn read_capped(client: &reqwest::Client, url: Url) -> Result<Vec<u8>, String> {
    let mut response = client.get(url.clone()).send().await.map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let too_big = || format!("{url} sent more than {MAX_DOCUMENT_BYTES} bytes");
    if response.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn issuers_with_user_info_or_other_schemes_are_not_urls_to_fetch() {
        assert_eq!(issuer_url("http://127.0.0.1:1@169.254.169.254/x"), Err(DocumentError::IssuerShape));
        assert_eq!(issuer_url("file:///etc/passwd"), Err(DocumentError::IssuerShape));
        assert_eq!(issuer_url("https://idp.example/?a=b"), Err(DocumentError::IssuerShape));
        assert!(issuer_url("https://idp.example/tenant").is_ok());
        let url = issuer_url("https://idp.example/tenant/").unwrap();
        assert_eq!(discovery_url(&url).as_str(), "https://idp.example/tenant/.well-known/openid-configuration");
    }

    #[test]
    fn jwks_uri_must_be_on_the_issuers_origin_or_an_allowed_one() {
        let doc = |jwks: &str| format!(r#"{{"issuer":"https://idp.example","jwks_uri":"{jwks}"}}"#);
        let ok = jwks_uri("https://idp.example", doc("https://idp.example/keys").as_bytes(), &[]);
        assert_eq!(ok.unwrap().as_str(), "https://idp.example/keys");
        for other in ["https://idp.example:8443/keys", "http://idp.example/keys", "https://evil.example/keys"] {
            assert_eq!(jwks_uri("https://idp.example", doc(other).as_bytes(), &[]), Err(DocumentError::JwksOrigin));
        }
        let allowed = [Url::parse("https://evil.example").unwrap().origin()];
        assert!(jwks_uri("https://idp.example", doc("https://evil.example/keys").as_bytes(), &allowed).is_ok());
        let at = doc("https://idp.example@169.254.169.254/");
        assert!(jwks_uri("https://idp.example", at.as_bytes(), &[]).is_err());
        let other_issuer = r#"{"issuer":"https://other.example","jwks_uri":"https://idp.example/k"}"#;
        assert!(matches!(
            jwks_uri("https://idp.example", other_issuer.as_bytes(), &[]),
            Err(DocumentError::IssuerMismatch(_))
        ));
    }

    #[test]
    fn the_key_cache_forgets_the_least_recently_used_issuers_past_its_bounds() {
        let start = Instant::now();
        let mut cache = Cache::default();
        let add = |cache: &mut Cache, name: &str, secs: u64, bytes: usize| {
            let mut e = IssuerEntry::new(start + Duration::from_secs(secs));
            e.bytes = bytes;
            cache.bytes += bytes;
            cache.issuers.insert(name.into(), e);
        };
        add(&mut cache, "old", 0, 10);
        add(&mut cache, "mid", 1, 10);
        add(&mut cache, "new", 2, 10);
        make_room(&mut cache, 2);
        assert!(!cache.issuers.contains_key("old") && cache.issuers.len() == 2);
        assert_eq!(cache.bytes, 20);
        // Past the byte bound, issuers go (oldest first) until the rest fit.
        add(&mut cache, "huge", 3, MAX_CACHED_KEY_BYTES - 15);
        make_room(&mut cache, MAX_CACHED_ISSUERS);
        assert!(!cache.issuers.contains_key("mid"));
        assert!(cache.issuers.contains_key("new") && cache.issuers.contains_key("huge"));
        assert!(cache.bytes <= MAX_CACHED_KEY_BYTES);
    }

    #[test]
    fn admission_without_a_list_is_https_on_public_hosts_and_with_one_only_the_listed() {
        let open = Discovery::new(None, &[]).unwrap();
        assert_eq!(open.admit("https://idp.example").map(|(_, listed)| listed).ok(), Some(false));
        for refused in ["http://idp.example", "https://10.0.0.1", "https://[::1]:8443", "https://a@idp.example"] {
            assert!(matches!(open.admit(refused), Err(AuthError::UntrustedIssuer(_))), "{refused}");
        }
        let listed = Discovery::new(Some(vec!["http://127.0.0.1:8080/".into()]), &[]).unwrap();
        assert_eq!(listed.admit("http://127.0.0.1:8080").map(|(_, listed)| listed).ok(), Some(true));
        assert!(listed.admit("https://idp.example").is_err());
        assert!(matches!(Discovery::new(None, &["not an origin".into()]), Err(AuthError::Config(_))));
    }
}
