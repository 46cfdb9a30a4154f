//! OpenID discovery driven by an attacker: an unsigned token names the issuer, so the server's
//! fetches must not go where the token (or the issuer's answers) point them — another port for
//! the key set, a redirect to another origin, an `@` in the URL, the loopback interface — must
//! not tell the caller what they found, must not be repeated for every token, must not hold the
//! server's workers while an issuer never answers, and must not read an endless body.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Server;
use serde_json::json;

/// A local HTTP listener that counts the connections it accepts and answers each request with
/// `answer(base_url, request_line, stream)`.
struct Listener {
    url: String,
    port: u16,
    connections: Arc<AtomicUsize>,
}

type Answer = dyn Fn(&str, &str, &mut TcpStream) + Send + Sync;

impl Listener {
    fn start(answer: impl Fn(&str, &str, &mut TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let connections = Arc::new(AtomicUsize::new(0));
        let (base, count) = (url.clone(), connections.clone());
        let answer: Arc<Answer> = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let (base, answer) = (base.clone(), answer.clone());
                std::thread::spawn(move || {
                    let line = read_request(&stream);
                    answer(&base, &line, &mut stream);
                });
            }
        });
        Self { url, port, connections }
    }

    /// A listener that must never be contacted.
    fn untouched() -> Self {
        Self::start(|_, _, stream| respond(stream, "200 OK", "{}"))
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Reads a request's first line and drains its headers.
fn read_request(stream: &TcpStream) -> String {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
        header.clear();
    }
    line
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A token of `issuer` signed by a key nobody publishes (the server must not get as far as
/// checking it).
fn token(issuer: &str, subject: &str) -> String {
    let (private, _) = epoch_auth::generate_key_pair().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k".into());
    let claims = json!({"iss": issuer, "sub": subject, "iat": 0});
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_pem(private.as_bytes()).unwrap())
        .unwrap()
}

/// `/v1/identity/websocket-token` with `token`: (status, body).
fn present(server: &Server, token: &str) -> (u16, String) {
    let r =
        server.http().post(format!("{}/v1/identity/websocket-token", server.url)).bearer_auth(token).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

#[test]
fn a_jwks_uri_on_another_port_is_never_fetched_and_the_refusal_names_only_the_issuer() {
    let internal = Listener::untouched();
    let jwks = format!("{}/internal/keys", internal.url);
    let issuer = Listener::start(move |base, _, stream| {
        respond(stream, "200 OK", &json!({"issuer": base, "jwks_uri": jwks}).to_string())
    });
    // Even an issuer the operator listed may only name key sets on its own origin.
    let server = Server::start(&["--allowed-issuer", &issuer.url]);
    let (status, body) = present(&server, &token(&issuer.url, "mallory"));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(&format!("could not fetch the keys of issuer `{}`", issuer.url)), "{body}");
    assert!(!body.contains(&internal.port.to_string()), "the refusal reveals the key set's URL: {body}");
    assert!(!body.contains("well-known"), "the refusal reveals the fetched URL: {body}");
    assert_eq!(issuer.connections(), 1, "the discovery document was fetched");
    assert_eq!(internal.connections(), 0, "the other port was contacted");

    // An origin the operator allowed for key sets is fetched.
    let allowed = Server::start(&["--allowed-issuer", &issuer.url, "--allowed-jwks-origin", &internal.url]);
    let (status, _) = present(&allowed, &token(&issuer.url, "mallory"));
    assert_eq!(status, 401, "the key set has no key for the token");
    assert_eq!(internal.connections(), 1, "the allowed origin was asked for the keys");
}

#[test]
fn the_refusal_does_not_echo_the_issuers_answer_and_failures_are_remembered() {
    let issuer = Listener::start(|_, _, stream| respond(stream, "418 I'm a teapot", "internal detail 7f3a"));
    let server = Server::start(&["--allowed-issuer", &issuer.url]);
    let (status, body) = present(&server, &token(&issuer.url, "a"));
    assert_eq!(status, 401);
    assert!(body.contains(&format!("could not fetch the keys of issuer `{}`", issuer.url)), "{body}");
    for leak in ["418", "teapot", "7f3a", "well-known", "answered"] {
        assert!(!body.contains(leak), "the refusal echoes `{leak}`: {body}");
    }
    // Another token of the same issuer, past the per-issuer refresh interval: refused from the
    // remembered failure, without a new fetch.
    std::thread::sleep(Duration::from_millis(1500));
    let (status, _) = present(&server, &token(&issuer.url, "b"));
    assert_eq!(status, 401);
    assert_eq!(issuer.connections(), 1, "a failed issuer is fetched again at once");
}

#[test]
fn a_redirect_to_another_origin_is_not_followed() {
    let internal = Listener::untouched();
    let target = format!("{}/.well-known/openid-configuration", internal.url);
    let issuer = Listener::start(move |_, _, stream| {
        let _ = write!(
            stream,
            "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    });
    let server = Server::start(&["--allowed-issuer", &issuer.url]);
    let (status, body) = present(&server, &token(&issuer.url, "mallory"));
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains(&internal.port.to_string()), "{body}");
    assert_eq!(issuer.connections(), 1);
    assert_eq!(internal.connections(), 0, "the redirect to another origin was followed");
}

#[test]
fn unlisted_issuers_on_the_loopback_or_hidden_behind_an_at_sign_are_never_contacted() {
    // No --allowed-issuer: any public https issuer, as 1.3; nothing on the server's own network.
    let internal = Listener::untouched();
    let server = Server::start(&[]);
    let port = internal.port;
    for issuer in [
        // Passes a "starts with http://127.0.0.1:" check, connects to the host after `@`.
        format!("http://127.0.0.1:1@127.0.0.1:{port}"),
        format!("https://127.0.0.1:1@127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
        // A name is checked once resolved.
        format!("https://localhost:{port}"),
        format!("https://[::ffff:127.0.0.1]:{port}"),
    ] {
        let (status, body) = present(&server, &token(&issuer, "mallory"));
        assert_eq!(status, 401, "{issuer}: {body}");
    }
    assert_eq!(internal.connections(), 0, "an unlisted issuer on the loopback was contacted");
}

/// Issuers that accept a connection and never answer hold their fetches until the fetch
/// timeout; meanwhile the server answers everyone else.
#[test]
fn issuers_that_never_answer_do_not_hold_up_other_requests() {
    const HANGING: usize = 8;
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let keep = held.clone();
    let issuer = Listener::start(move |_, _, stream| keep.lock().unwrap().push(stream.try_clone().unwrap()));
    // Eight issuers on that listener (one per path), all listed by the operator.
    let issuers: Vec<String> = (0..HANGING).map(|i| format!("{}/tenant{i}", issuer.url)).collect();
    let args: Vec<&str> = issuers.iter().flat_map(|i| ["--allowed-issuer", i.as_str()]).collect();
    let server = Arc::new(Server::start(&args));
    let done = Arc::new(AtomicUsize::new(0));
    let waiting: Vec<_> = issuers
        .iter()
        .map(|i| {
            let (server, done, token) = (server.clone(), done.clone(), token(i, "someone"));
            std::thread::spawn(move || {
                let status = present(&server, &token).0;
                done.fetch_add(1, Ordering::SeqCst);
                status
            })
        })
        .collect();
    // Wait until fetches hang (at least as many as the server has workers).
    let deadline = Instant::now() + Duration::from_secs(60);
    while held.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the server never fetched the issuers' documents");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ping = server.http().get(format!("{}/v1/ping", server.url)).send().unwrap();
    assert_eq!(ping.status().as_u16(), 200);
    // The ping was answered while every fetch was still waiting: none has given up (closed its
    // connection) and no request holding a hanging token has been answered.
    assert_eq!(done.load(Ordering::SeqCst), 0, "a hanging request finished before the ping");
    for stream in held.lock().unwrap().iter() {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let still_open = matches!((&*stream).read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open, "a fetch timed out before the ping was answered");
    }
    for w in waiting {
        assert_eq!(w.join().unwrap(), 401);
    }
}

/// The server's peak resident memory so far (`VmHWM`), in KiB: a document read whole and
/// dropped again leaves the current size as it was, not the peak.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn an_endless_discovery_document_is_cut_off_as_it_arrives() {
    // 400 MiB, chunked (no length to refuse it by), or until the server hangs up.
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let issuer = Listener::start(move |_, _, stream| {
        let _ =
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
        let chunk = vec![b' '; 64 << 10];
        for _ in 0..(400 << 4) {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if stream.write_all(&framed).is_err() {
                return;
            }
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
    });
    let server = Server::start(&["--allowed-issuer", &issuer.url]);
    let before = peak_rss_kib(server.pid());
    let (status, body) = present(&server, &token(&issuer.url, "mallory"));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(&format!("could not fetch the keys of issuer `{}`", issuer.url)), "{body}");
    let grown_mib = peak_rss_kib(server.pid()).saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "the server's peak memory grew by {grown_mib} MiB reading the document");
    assert!(sent.load(Ordering::SeqCst) < 400 << 20, "the server read the whole document");
}
