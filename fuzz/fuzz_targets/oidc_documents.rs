//! What an OpenID issuer's server sends back, from a hostile issuer: the input is
//! `issuer \n document`. The issuer text is parsed as the URL discovery starts from, the document
//! as a discovery document of that issuer and as a key set. Never panics; a `jwks_uri` that is
//! accepted is an http(s) URL without user info, on the issuer's origin or the allowed one, and
//! only for an issuer that parses; the discovery URL stays on the issuer's origin.
#![no_main]

use epoch_auth::oidc::{discovery_url, issuer_url, jwks_uri, parse_jwks};
use libfuzzer_sys::fuzz_target;

/// The one origin other than the issuer's that key sets may be on here.
const ALLOWED: &str = "https://keys.example.com";

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let issuer = String::from_utf8_lossy(&data[..split]);
    let doc = data.get(split + 1..).unwrap_or_default();
    let allowed = [url::Url::parse(ALLOWED).expect("a URL").origin()];

    let parsed = issuer_url(&issuer);
    if let Ok(url) = &parsed {
        let discovery = discovery_url(url);
        assert_eq!(discovery.origin(), url.origin(), "{issuer:?}: the discovery URL left the issuer's origin");
        assert!(discovery.path().ends_with("/.well-known/openid-configuration"), "{discovery}");
    }
    if let Ok(jwks) = jwks_uri(&issuer, doc, &allowed) {
        let url = parsed.as_ref().unwrap_or_else(|e| panic!("{issuer:?} does not parse ({e}) but names keys"));
        assert!(matches!(jwks.scheme(), "http" | "https"), "{jwks}");
        assert!(jwks.username().is_empty() && jwks.password().is_none(), "{jwks} has user info");
        let origin = jwks.origin();
        assert!(origin == url.origin() || allowed.contains(&origin), "{jwks} is on another origin than {issuer:?}");
    }
    let _ = parse_jwks(doc);
});
