//! `procedure_http_request`: the HTTP requests a 2.x procedure makes, with 2.x's rules. The
//! request arrives as a BSATN `HttpRequest`; private, loopback, link-local and other
//! special-purpose addresses (RFC 6890) are refused, whether they are written in the URL, given
//! by a redirect or returned by DNS; the whole exchange has a time limit and the body a size
//! limit. The answer goes back as a BSATN `HttpResponse` and the body's bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use epoch_sats::bsatn::{write, DecodeError, Reader};

use crate::limits::{DEFAULT_HTTP_TIMEOUT, MAX_HTTP_REDIRECTS, MAX_HTTP_RESPONSE_BYTES, MAX_HTTP_TIMEOUT};

/// What 2.x says when an address is refused.
pub const REFUSED_ADDRESS: &str = "refusing to connect to private or special-purpose addresses";

const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub enum HttpError {
    /// The request's BSATN does not decode (`BSATN_DECODE_ERROR` to the module).
    BadRequest,
    /// No answer: refused address, DNS, connection, time limit (`HTTP_ERROR`, with this text).
    Failed(String),
}

/// An HTTP answer in the module's terms.
pub struct HttpAnswer {
    /// BSATN `HttpResponse { headers, version, code }`.
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

struct Request {
    method: String,
    headers: Vec<(String, Vec<u8>)>,
    timeout: Option<Duration>,
    uri: String,
}

fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
    let mut r = Reader::new(bytes);
    let method = match r.u8()? {
        tag @ 0..=8 => METHODS[tag as usize].to_string(),
        9 => r.str()?.to_string(),
        tag => return Err(DecodeError::InvalidTag { tag, variants: 10 }),
    };
    let headers = r.vec(|r| {
        let name = r.str()?.to_string();
        let n = r.len_prefix(1)?;
        Ok((name, r.take(n)?.to_vec()))
    })?;
    let timeout = r.option(|r| Ok(i64::from_le_bytes(r.array()?)))?;
    let uri = r.str()?.to_string();
    let version = r.u8()?;
    if version > 4 {
        return Err(DecodeError::InvalidTag { tag: version, variants: 5 });
    }
    r.finish()?;
    let timeout = timeout.map(|micros| Duration::from_micros(micros.max(0) as u64));
    Ok(Request { method, headers, timeout, uri })
}

/// Whether `ip` is in one of the special-purpose ranges 2.x refuses (RFC 6890 and later
/// registrations); loopback only unless `allow_loopback`.
pub fn is_refused(ip: IpAddr, allow_loopback: bool) -> bool {
    if allow_loopback && ip.is_loopback() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        // IPv4-mapped addresses (`::ffff:0:0/96`) are refused as a whole.
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    const RANGES: [([u8; 4], u32); 18] = [
        ([0, 0, 0, 0], 8),
        ([10, 0, 0, 0], 8),
        ([100, 64, 0, 0], 10),
        ([127, 0, 0, 0], 8),
        ([169, 254, 0, 0], 16),
        ([172, 16, 0, 0], 12),
        ([192, 0, 0, 0], 24),
        ([192, 0, 2, 0], 24),
        ([192, 31, 196, 0], 24),
        ([192, 52, 193, 0], 24),
        ([192, 88, 99, 0], 24),
        ([192, 168, 0, 0], 16),
        ([192, 175, 48, 0], 24),
        ([198, 18, 0, 0], 15),
        ([198, 51, 100, 0], 24),
        ([203, 0, 113, 0], 24),
        ([240, 0, 0, 0], 4),
        ([255, 255, 255, 255], 32),
    ];
    RANGES.iter().any(|(net, bits)| in_v4(ip, *net, *bits))
}

fn refused_v6(ip: Ipv6Addr) -> bool {
    const RANGES: [(u128, u32); 16] = [
        (0x0000_0000_0000_0000_0000_0000_0000_0001, 128),
        (0, 128),
        (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96),
        (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48),
        (0x0000_0000_0000_0000_0000_ffff_0000_0000, 96),
        (0x0100_0000_0000_0000_0000_0000_0000_0000, 64),
        (0x0100_0000_0000_0001_0000_0000_0000_0000, 64),
        (0x2001_0000_0000_0000_0000_0000_0000_0000, 23),
        (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32),
        (0x2001_0010_0000_0000_0000_0000_0000_0000, 28),
        (0x2002_0000_0000_0000_0000_0000_0000_0000, 16),
        (0x2620_004f_8000_0000_0000_0000_0000_0000, 48),
        (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20),
        (0x5f00_0000_0000_0000_0000_0000_0000_0000, 16),
        (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),
        (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10),
    ];
    let v = u128::from(ip);
    RANGES.iter().any(|(net, bits)| {
        let mask = if *bits == 0 { 0 } else { u128::MAX << (128 - bits) };
        v & mask == net & mask
    })
}

/// Resolves names and keeps only the addresses the rules allow.
struct FilteringResolver {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| !is_refused(a.ip(), allow_loopback)).collect();
            if allowed.is_empty() {
                return Err(REFUSED_ADDRESS.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a URL names a refused address literally (names are checked when they resolve).
fn literal_refused(url: &reqwest::Url, allow_loopback: bool) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_refused(IpAddr::V4(ip), allow_loopback),
        Some(url::Host::Ipv6(ip)) => is_refused(IpAddr::V6(ip), allow_loopback),
        _ => false,
    }
}

/// One client per loopback rule, shared by every request (each builds its own runtime).
fn client(allow_loopback: bool) -> &'static reqwest::blocking::Client {
    static CLIENTS: [OnceLock<reqwest::blocking::Client>; 2] = [OnceLock::new(), OnceLock::new()];
    CLIENTS[allow_loopback as usize].get_or_init(|| {
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_HTTP_REDIRECTS {
                attempt.error("too many redirects")
            } else if literal_refused(attempt.url(), allow_loopback) {
                attempt.error(REFUSED_ADDRESS)
            } else {
                attempt.follow()
            }
        });
        reqwest::blocking::Client::builder()
            // A proxy would resolve names itself, past the address rules: never use one.
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(FilteringResolver { allow_loopback }))
            .redirect(redirects)
            .build()
            .expect("an HTTP client with a resolver and a redirect policy")
    })
}

/// The URL without its query, for error texts (a query may carry secrets).
fn without_query(uri: &str) -> &str {
    uri.split(['?', '#']).next().unwrap_or(uri)
}

/// Sends a procedure's request (BSATN `HttpRequest` and body) and returns the answer, within
/// the request's timeout (30 s by default, at most 180 s) and the procedure's own deadline.
pub fn send(request: &[u8], body: Vec<u8>, allow_loopback: bool, deadline: Instant) -> Result<HttpAnswer, HttpError> {
    let req = decode(request).map_err(|_| HttpError::BadRequest)?;
    let fail = |what: String| HttpError::Failed(format!("{}: {what}", without_query(&req.uri)));
    let url = reqwest::Url::parse(&req.uri).map_err(|e| fail(format!("invalid URL: {e}")))?;
    if literal_refused(&url, allow_loopback) {
        return Err(fail(REFUSED_ADDRESS.into()));
    }
    let timeout = req
        .timeout
        .unwrap_or(DEFAULT_HTTP_TIMEOUT)
        .min(MAX_HTTP_TIMEOUT)
        .min(deadline.saturating_duration_since(Instant::now()));
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| fail(e.to_string()))?;
    let mut builder = client(allow_loopback).request(method, url).timeout(timeout).body(body);
    for (name, value) in &req.headers {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    let response = builder.send().map_err(|e| fail(error_chain(&e)))?;
    let code = response.status().as_u16();
    let version = match response.version() {
        reqwest::Version::HTTP_09 => 0,
        reqwest::Version::HTTP_10 => 1,
        reqwest::Version::HTTP_2 => 3,
        reqwest::Version::HTTP_3 => 4,
        _ => 2,
    };
    let mut head = Vec::new();
    head.extend_from_slice(&(response.headers().len() as u32).to_le_bytes());
    for (name, value) in response.headers() {
        write::str(&mut head, name.as_str());
        head.extend_from_slice(&(value.len() as u32).to_le_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    head.push(version);
    head.extend_from_slice(&code.to_le_bytes());
    let body = read_body(response).map_err(fail)?;
    Ok(HttpAnswer { head, body })
}

fn read_body(response: reqwest::blocking::Response) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut body = Vec::new();
    response.take(MAX_HTTP_RESPONSE_BYTES as u64 + 1).read_to_end(&mut body).map_err(|e| e.to_string())?;
    if body.len() > MAX_HTTP_RESPONSE_BYTES {
        return Err(format!("the response body is larger than {MAX_HTTP_RESPONSE_BYTES} bytes"));
    }
    Ok(body)
}

/// An error with its causes, which name what actually failed (a refused address, a timeout).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_purpose_addresses_are_refused_and_public_ones_allowed() {
        for refused in
            ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]
        {
            assert!(is_refused(refused.parse().unwrap(), false), "{refused}");
        }
        for refused in ["::1", "::", "fe80::1", "fc00::1", "::ffff:8.8.8.8", "2001:db8::1", "64:ff9b::1"] {
            assert!(is_refused(refused.parse().unwrap(), false), "{refused}");
        }
        for allowed in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "151.101.1.1"] {
            assert!(!is_refused(allowed.parse().unwrap(), false), "{allowed}");
        }
        assert!(!is_refused("127.0.0.1".parse().unwrap(), true), "loopback with the test switch");
        assert!(is_refused("10.0.0.1".parse().unwrap(), true), "private stays refused with the switch");
    }

    #[test]
    fn a_request_that_does_not_decode_is_a_bad_request_and_errors_leave_the_query_out() {
        assert!(matches!(send(&[42], Vec::new(), false, Instant::now()), Err(HttpError::BadRequest)));
        assert_eq!(without_query("http://h/p?token=s#f"), "http://h/p");
    }
}
