//! Tokens of an outside OpenID Connect issuer, as SpacetimeDB 1.3 accepts them: the server
//! fetches the issuer's keys by discovery (a local issuer serving `/.well-known/openid-
//! configuration` and its JWKS), follows a key rotation, refuses an issuer it cannot reach with a
//! clear 401, and, given `--allowed-issuer`, accepts only those issuers. The issuers here are on
//! the loopback interface, which the server fetches only from issuers the operator listed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::Server;
use serde_json::{json, Value};

/// A minimal OpenID issuer: discovery and a key set that the test can change.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<Mutex<usize>>,
}

impl Issuer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(Mutex::new(json!({"keys": []})));
        let fetches = Arc::new(Mutex::new(0usize));
        let (base, keys, count) = (url.clone(), jwks.clone(), fetches.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                // Drain the headers.
                let mut h = String::new();
                while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                    h.clear();
                }
                let body = if line.contains("/.well-known/openid-configuration") {
                    json!({"issuer": base, "jwks_uri": format!("{base}/jwks")}).to_string()
                } else if line.contains("/jwks") {
                    *count.lock().unwrap() += 1;
                    keys.lock().unwrap().to_string()
                } else {
                    String::new()
                };
                let status = if body.is_empty() { "404 Not Found" } else { "200 OK" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, jwks, fetches }
    }

    /// A new key pair, published alone under `kid`; returns the private key (PEM).
    fn rotate(&self, kid: &str) -> String {
        let (private, public) = epoch_auth::generate_key_pair().unwrap();
        *self.jwks.lock().unwrap() = json!({"keys": [epoch_auth::es256_jwk(&public, kid).unwrap()]});
        private
    }
}

fn token(issuer: &str, subject: &str, private_pem: &str, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let claims = json!({"iss": issuer, "sub": subject, "iat": 0, "aud": ["spacetimedb"]});
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap())
        .unwrap()
}

/// Who the server says the caller is (`spacetime-identity`), or the refusal.
fn who(server: &Server, db: &str, token: &str) -> Result<String, (u16, String)> {
    let r = server
        .http()
        .post(format!("{}/v1/database/{db}/sql", server.url))
        .bearer_auth(token)
        .body("SELECT * FROM account")
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let identity = r.headers().get("spacetime-identity").map(|v| v.to_str().unwrap().to_string());
    match (status, identity) {
        (200, Some(i)) => Ok(i),
        (s, _) => Err((s, r.text().unwrap())),
    }
}

#[test]
fn tokens_of_an_outside_issuer_verify_with_its_published_keys() {
    let issuer = Issuer::start();
    let server = Server::start(&["--allowed-issuer", &issuer.url, "--allowed-issuer", "http://127.0.0.1:9"]);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "oidc", "bank").status().is_success());

    let k1 = issuer.rotate("k1");
    let alice = token(&issuer.url, "alice", &k1, "k1");
    let expected = epoch_auth::identity_from_claims(&issuer.url, "alice").to_hex();
    assert_eq!(who(&server, "oidc", &alice), Ok(expected.clone()));
    assert_eq!(who(&server, "oidc", &alice), Ok(expected.clone()), "cached");
    assert_eq!(*issuer.fetches.lock().unwrap(), 1, "keys fetched once");

    // The issuer rotates its key: a token with the new key id makes the server fetch again
    // (once the refresh interval, epoch_auth's MIN_REFRESH of a second, has passed).
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let k2 = issuer.rotate("k2");
    let bob = token(&issuer.url, "bob", &k2, "k2");
    assert_eq!(who(&server, "oidc", &bob), Ok(epoch_auth::identity_from_claims(&issuer.url, "bob").to_hex()));
    // A token signed by the old key no longer verifies with what the issuer publishes.
    let forged = token(&issuer.url, "mallory", &k1, "k2");
    let (status, _) = who(&server, "oidc", &forged).unwrap_err();
    assert_eq!(status, 401);

    // An issuer that cannot be reached: a clear 401.
    let gone = token("http://127.0.0.1:9", "carol", &k2, "k2");
    let (status, body) = who(&server, "oidc", &gone).unwrap_err();
    assert_eq!(status, 401);
    assert!(body.contains("could not fetch the keys of issuer `http://127.0.0.1:9`"), "{body}");

    // With --allowed-issuer, other issuers are refused without a fetch.
    let strict = Server::start(&["--allowed-issuer", "https://login.example.com"]);
    let (status, body) = who(&strict, "none", &alice).unwrap_err();
    assert_eq!(status, 401);
    assert!(body.contains("is not trusted"), "{body}");
}

fn email_token(issuer: &str, subject: &str, email: &str, verified: bool, private_pem: &str, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_string());
    let claims = json!({"iss": issuer, "sub": subject, "iat": 0, "email": email, "email_verified": verified});
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap())
        .unwrap()
}

/// The seed's "X-Admin-API-Key + @smartphonekey.com JWT": the owner grants `sync` to every token
/// of an issuer whose verified email is in a domain; the grant survives a restart.
#[test]
fn the_owner_grants_sync_to_an_issuers_email_domain() {
    const KEY: &str = "oidc-admin-key-1234";
    let issuer = Issuer::start();
    let k = issuer.rotate("k");
    let dir = std::env::temp_dir().join(format!("epoch-oidc-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("admin.key");
    std::fs::write(&key_file, KEY).unwrap();
    let args = ["--admin-api-key-file", key_file.to_str().unwrap(), "--allowed-issuer", &issuer.url];
    let server = Server::start_in(dir.clone(), &args);
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "fleet", "projections").status().is_success());
    // Past the credentials the database has no sync configuration: 404; refused: 403.
    let status = |s: &Server, token: &str| {
        s.http()
            .get(format!("{}/v1/database/fleet/sync/config", s.url))
            .header("X-API-Key", KEY)
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let dana = email_token(&issuer.url, "dana", "dana@SmartPhoneKey.com", true, &k, "k");
    let unverified = email_token(&issuer.url, "erin", "erin@smartphonekey.com", false, &k, "k");
    let outsider = email_token(&issuer.url, "fay", "fay@smartphonekey.com.evil.io", true, &k, "k");
    assert_eq!(status(&server, &dana), 403);
    let grant = |s: &Server, body: Value| {
        s.http()
            .post(format!("{}/v1/database/fleet/permissions", s.url))
            .bearer_auth(&owner)
            .json(&body)
            .send()
            .unwrap()
    };
    let r = grant(&server, json!({"issuer": issuer.url, "emailDomain": "@smartphonekey.com", "permission": "sync"}));
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().unwrap()["emailDomain"], "smartphonekey.com");
    assert_eq!(status(&server, &dana), 404, "the domain grants sync (case-insensitively)");
    assert_eq!(status(&server, &unverified), 403, "an unverified email grants nothing");
    assert_eq!(status(&server, &outsider), 403, "the domain must end the address");
    // Only the owner grants; a rule needs both fields.
    let r = server
        .http()
        .post(format!("{}/v1/database/fleet/permissions", server.url))
        .bearer_auth(&dana)
        .json(&json!({"issuer": issuer.url, "emailDomain": "x.com", "permission": "sync"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let r = grant(&server, json!({"issuer": issuer.url, "permission": "sync", "emailDomain": ""}));
    assert_eq!(r.status().as_u16(), 400);
    // The rule is kept across a restart.
    server.crash();
    let server = Server::start_in(dir.clone(), &args);
    assert_eq!(status(&server, &dana), 404);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
