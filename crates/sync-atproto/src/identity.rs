//! Repo signing keys, resolved from DIDs so commit signatures can be checked: `did:plc` through
//! the configured PLC directory (`GET {plc}/{did}`), `did:web` from the host's
//! `/.well-known/did.json`. The `#atproto` verification method of the DID document is the key.
//! Keys are cached for [`KEY_TTL`]; an `#identity` event forgets a repo's key at once.
//!
//! A DID names the host it is resolved on (did:web), and a database's configuration names the
//! PLC directory: neither may aim the server at its own network. Both are fetched as OIDC
//! discovery fetches ([`epoch_auth::outbound`]): public addresses only, checked after DNS
//! resolution on every connection, redirects only within the origin, unless the operator
//! allowed the host (`--atproto-allowed-host`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use epoch_auth::outbound;
use url::Url;

use epoch_atproto::signature::PublicKey;
use parking_lot::Mutex;
use serde_json::Value;

use crate::limits::{KEY_TTL, MAX_CACHED_KEYS, MAX_DID_DOCUMENT_BYTES, RESOLVE_TIMEOUT};

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

enum Capped {
    TooBig,
    Read(std::io::Error),
}

/// The body of `resp`, read as it arrives and refused as soon as it passes
/// [`MAX_DID_DOCUMENT_BYTES`] (a host sending an endless document costs that much, not more).
fn read_capped(resp: reqwest::blocking::Response) -> Result<Vec<u8>, Capped> {
    use std::io::Read;
    if resp.content_length().is_some_and(|n| n > MAX_DID_DOCUMENT_BYTES as u64) {
        return Err(Capped::TooBig);
    }
    let mut body = Vec::new();
    resp.take(MAX_DID_DOCUMENT_BYTES as u64 + 1).read_to_end(&mut body).map_err(Capped::Read)?;
    if body.len() > MAX_DID_DOCUMENT_BYTES {
        return Err(Capped::TooBig);
    }
    Ok(body)
}

/// Hosts (`host`, or `host:port` for one port) the operator allows DID resolution to reach on
/// loopback or private addresses.
pub type AllowedHosts = Arc<Vec<String>>;

/// Whether `url`'s host is one the operator allowed.
fn allowed(url: &Url, hosts: &[String]) -> bool {
    let Some(host) = url.host_str() else { return false };
    let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}"));
    hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host) || with_port.as_deref().is_some_and(|w| h.eq_ignore_ascii_case(w)))
}

/// An HTTP client for DID documents: redirects only within the origin; `public_only`: only
/// public addresses, checked on every connection.
fn client(public_only: bool) -> Result<reqwest::blocking::Client, reqwest::Error> {
    let builder = reqwest::blocking::Client::builder()
        .timeout(RESOLVE_TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::custom(outbound::same_origin_redirects));
    let builder = if public_only { builder.dns_resolver(Arc::new(outbound::PublicOnly)) } else { builder };
    builder.build()
}

/// An error and the errors that caused it, on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Resolves and caches signing keys.
pub struct Keys {
    plc: String,
    /// For hosts named on the network: public addresses only.
    public: reqwest::blocking::Client,
    /// For the hosts the operator allowed.
    trusted: reqwest::blocking::Client,
    allowed_hosts: AllowedHosts,
    cache: Mutex<HashMap<String, (PublicKey, Instant)>>,
}

impl Keys {
    /// A resolver using the PLC directory at `plc` (`https://plc.directory`); hosts in
    /// `allowed_hosts` may be on loopback or private addresses, no others.
    pub fn new(plc: &str, allowed_hosts: AllowedHosts) -> Result<Self, ResolveError> {
        let failed = |e: reqwest::Error| ResolveError::Unreachable {
            did: String::new(),
            message: format!("an HTTP client: {e}"),
        };
        Ok(Self {
            plc: plc.trim_end_matches('/').to_string(),
            public: client(true).map_err(failed)?,
            trusted: client(false).map_err(failed)?,
            allowed_hosts,
            cache: Mutex::new(HashMap::new()),
        })
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
        let url = Url::parse(&url).map_err(|e| no_key(format!("{url}: {e}")))?;
        let http = if allowed(&url, &self.allowed_hosts) {
            &self.trusted
        } else if outbound::literal_host_is_public(&url) {
            &self.public
        } else {
            return Err(no_key(format!(
                "{url} is not on a public address (an operator may allow its host with --atproto-allowed-host)"
            )));
        };
        let resp = http.get(url.clone()).send().map_err(|e| unreachable(with_causes(&e)))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(unreachable(format!("{url} answered {status}")));
        }
        if !status.is_success() {
            return Err(no_key(format!("{url} answered {status}")));
        }
        let body = read_capped(resp).map_err(|e| match e {
            Capped::TooBig => no_key(format!("the DID document is over {MAX_DID_DOCUMENT_BYTES} bytes")),
            Capped::Read(e) => unreachable(e.to_string()),
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A directory that answers with a document of `total` bytes, chunked (no length to refuse
    /// it by); returns its URL and the bytes it managed to send.
    fn endless_directory(total: usize) -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            let chunk = vec![b' '; 64 << 10];
            while counter.load(Ordering::SeqCst) < total {
                let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                if stream.write_all(&framed).is_err() {
                    return;
                }
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        });
        (url, sent)
    }

    /// A listener on loopback and how many connections it accepted (counted in the background).
    fn counting_listener() -> (u16, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        (port, accepted)
    }

    #[test]
    fn a_did_naming_a_loopback_host_is_not_fetched_unless_the_operator_allowed_it() {
        let (port, accepted) = counting_listener();
        let keys = Keys::new("https://plc.invalid", Arc::new(Vec::new())).unwrap();
        // An address, and a name that resolves to loopback: refused before any connection.
        for did in [format!("did:web:127.0.0.1%3A{port}"), format!("did:web:localhost%3A{port}")] {
            let err = keys.key(&did).unwrap_err();
            assert!(err.to_string().contains("public"), "{did}: {err}");
        }
        // A PLC directory on loopback that the operator did not allow: the same.
        let plc = Keys::new(&format!("http://127.0.0.1:{port}"), Arc::new(Vec::new())).unwrap();
        let err = plc.key("did:plc:abcdefghijklmnopqrstuvwx").unwrap_err();
        assert!(err.to_string().contains("public"), "{err}");
        // A connection of our own, accepted after any the resolver made (the backlog is FIFO).
        let _barrier = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        while accepted.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the listener was reached");

        // Allowed by the operator (any port of the host, or this port), it is fetched.
        for allowed in ["127.0.0.1".to_string(), format!("127.0.0.1:{port}")] {
            let before = accepted.load(Ordering::SeqCst);
            let trusted = Keys::new("https://plc.invalid", Arc::new(vec![allowed.clone()])).unwrap();
            let _ = trusted.key(&format!("did:web:127.0.0.1%3A{port}"));
            assert!(accepted.load(Ordering::SeqCst) > before, "{allowed}: no connection");
        }
    }

    #[test]
    fn an_endless_did_document_is_cut_off_as_it_arrives() {
        const TOTAL: usize = 256 << 20;
        let (plc, sent) = endless_directory(TOTAL);
        let keys = Keys::new(&plc, Arc::new(vec!["127.0.0.1".into()])).unwrap();
        let err = keys.key("did:plc:abcdefghijklmnopqrstuvwx").unwrap_err();
        assert!(matches!(&err, ResolveError::NoKey { message, .. } if message.contains("over")), "{err}");
        // The connection was dropped once the cap was passed, long before the end.
        assert!(sent.load(Ordering::SeqCst) < TOTAL, "the whole document was read");
    }
}
