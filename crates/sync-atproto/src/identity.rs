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

    #[test]
    fn an_endless_did_document_is_cut_off_as_it_arrives() {
        const TOTAL: usize = 256 << 20;
        let (plc, sent) = endless_directory(TOTAL);
        let keys = Keys::new(&plc).unwrap();
        let err = keys.key("did:plc:abcdefghijklmnopqrstuvwx").unwrap_err();
        assert!(matches!(&err, ResolveError::NoKey { message, .. } if message.contains("over")), "{err}");
        // The connection was dropped once the cap was passed, long before the end.
        assert!(sent.load(Ordering::SeqCst) < TOTAL, "the whole document was read");
    }
}
