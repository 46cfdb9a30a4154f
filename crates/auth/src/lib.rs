//! # epoch-auth
//!
//! Identities and tokens as SpacetimeDB 1.3 makes them: an [`Identity`] is derived from a token's
//! issuer and subject (`blake3` of `"{iss}|{sub}"`, with a `c200` prefix and a checksum), and
//! tokens are ES256 JWTs signed by the server's key pair, kept in the data directory. Tokens from
//! other OpenID issuers verify against their configured public keys.
//!
//! Not for: deciding who may do what (the API layer does that with the verified identity).

pub mod limits;
pub mod oidc;
pub mod outbound;

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub use epoch_sats::Identity;

use crate::limits::{EXP_LEEWAY_SECS, VERIFIED_CACHE_MAX};

/// The identity of the holder of a token with this issuer and subject, as 1.3 derives it.
/// The payload (claims JSON) of a JWT, as 2.x keeps it for `get_jwt`; `None` when `token` is
/// not three dot-separated parts with base64url JSON in the middle. Call it only on a token
/// that was verified.
pub fn jwt_payload(token: &str) -> Option<String> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    String::from_utf8(bytes).ok()
}

pub fn identity_from_claims(issuer: &str, subject: &str) -> Identity {
    let first = blake3::hash(format!("{issuer}|{subject}").as_bytes());
    let id_hash = &first.as_bytes()[..26];
    let mut checksum_input = [0u8; 28];
    checksum_input[0] = 0xc2;
    checksum_input[2..].copy_from_slice(id_hash);
    let checksum = blake3::hash(&checksum_input);
    let mut be = [0u8; 32];
    be[0] = 0xc2;
    be[2..6].copy_from_slice(&checksum.as_bytes()[..4]);
    be[6..].copy_from_slice(id_hash);
    Identity::from_be_bytes(be)
}

/// The claims of a SpacetimeDB token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hex_identity: Option<String>,
    pub sub: String,
    pub iss: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "string_or_vec")]
    pub aud: Vec<String>,
    #[serde(default)]
    pub iat: Option<u64>,
    /// Written as `null` when the token does not expire, as 1.3 writes it.
    #[serde(default)]
    pub exp: Option<u64>,
    /// OpenID Connect's `email` and `email_verified`, when the issuer sends them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

fn string_or_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Why a token was not accepted, or keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The text is what 1.3 answers for a rejected token, e.g. `TokenError(Error(InvalidToken))`.
    #[error("{0}")]
    InvalidToken(String),
    #[error("token issuer `{0}` is not trusted by this server")]
    UntrustedIssuer(String),
    #[error("token's hex_identity does not match its issuer and subject")]
    IdentityMismatch,
    #[error("key error: {0}")]
    Key(String),
    /// OpenID discovery could not fetch the issuer's keys. Only the issuer is named: what was
    /// fetched and what came back is the server's log's business, not the caller's (the caller
    /// chose the issuer and must not learn about the server's network from the answer).
    #[error("could not fetch the keys of issuer `{issuer}`")]
    IssuerUnreachable { issuer: String },
    /// A setting the server was started with is wrong.
    #[error("{0}")]
    Config(String),
    #[error("reading or writing keys: {0}")]
    Io(#[from] std::io::Error),
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub identity: Identity,
    pub claims: Claims,
}

/// A trusted third-party issuer and the public key its tokens verify with.
pub struct TrustedIssuer {
    pub issuer: String,
    key: DecodingKey,
    algorithm: Algorithm,
}

impl TrustedIssuer {
    /// An issuer whose tokens are ES256-signed by the key in `public_key_pem`.
    pub fn es256(issuer: &str, public_key_pem: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_ec_pem(public_key_pem).map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(Self { issuer: issuer.to_string(), key, algorithm: Algorithm::ES256 })
    }

    /// An issuer whose tokens are RS256-signed by the key in `public_key_pem`.
    pub fn rs256(issuer: &str, public_key_pem: &[u8]) -> Result<Self, AuthError> {
        let key = DecodingKey::from_rsa_pem(public_key_pem).map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(Self { issuer: issuer.to_string(), key, algorithm: Algorithm::RS256 })
    }
}

/// The server's signing keys and the issuers it trusts.
pub struct Authority {
    /// The issuer written into tokens this server signs.
    pub issuer: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_key_pem: String,
    trusted: Vec<TrustedIssuer>,
    /// OpenID Connect discovery of other issuers' keys, when enabled.
    discovery: Option<oidc::Discovery>,
    /// Tokens already verified, by their full text (signature included), so a client that sends
    /// the same token on every request pays for the signature check once.
    verified: parking_lot::Mutex<std::collections::HashMap<String, Verified>>,
}

/// The file names of the server's key pair inside its key directory.
pub const PRIVATE_KEY_FILE: &str = "id_ecdsa";
pub const PUBLIC_KEY_FILE: &str = "id_ecdsa.pub";

impl Authority {
    /// Loads the key pair from `dir`, creating it (P-256, PKCS#8 PEM) on first start.
    pub fn load_or_create(dir: &Path, issuer: &str) -> Result<Self, AuthError> {
        let private = dir.join(PRIVATE_KEY_FILE);
        let public = dir.join(PUBLIC_KEY_FILE);
        if !private.exists() || !public.exists() {
            std::fs::create_dir_all(dir)?;
            let (priv_pem, pub_pem) = generate_key_pair()?;
            write_private(&private, priv_pem.as_bytes())?;
            std::fs::write(&public, pub_pem.as_bytes())?;
        }
        let priv_pem = std::fs::read(&private)?;
        let pub_pem = std::fs::read_to_string(&public)?;
        Self::from_pem(&priv_pem, &pub_pem, issuer)
    }

    pub fn from_pem(private_pem: &[u8], public_pem: &str, issuer: &str) -> Result<Self, AuthError> {
        Ok(Self {
            issuer: issuer.to_string(),
            encoding: EncodingKey::from_ec_pem(private_pem).map_err(|e| AuthError::Key(e.to_string()))?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes()).map_err(|e| AuthError::Key(e.to_string()))?,
            public_key_pem: public_pem.to_string(),
            trusted: Vec::new(),
            discovery: None,
            verified: Default::default(),
        })
    }

    /// Accepts tokens of other OpenID Connect issuers by fetching their published keys: any
    /// `https://` issuer on a public address when `allowed` is `None` (1.3 accepts any issuer),
    /// else only those listed (wherever they are). Key sets must be on their issuer's origin or
    /// one of `jwks_origins`. Issuers given a key with [`Authority::trust`] keep that key.
    pub fn discover_issuers(&mut self, allowed: Option<Vec<String>>, jwks_origins: &[String]) -> Result<(), AuthError> {
        self.discovery = Some(oidc::Discovery::new(allowed, jwks_origins)?);
        Ok(())
    }

    /// Trusts tokens from another issuer.
    pub fn trust(&mut self, issuer: TrustedIssuer) {
        self.trusted.push(issuer);
    }

    /// The public key, PEM, as `/v1/identity/public-key` serves it.
    pub fn public_key_pem(&self) -> &str {
        &self.public_key_pem
    }

    /// Creates a fresh identity (a random subject under this server's issuer) and its token.
    pub fn create_identity(&self) -> Result<(Identity, String), AuthError> {
        let subject = uuid::Uuid::new_v4().to_string();
        let identity = identity_from_claims(&self.issuer, &subject);
        let token = self.sign(identity, &subject, None)?;
        Ok((identity, token))
    }

    /// Signs a token for `subject` under this server's issuer.
    pub fn sign(&self, identity: Identity, subject: &str, exp: Option<u64>) -> Result<String, AuthError> {
        let claims = Claims {
            hex_identity: Some(identity.to_hex()),
            sub: subject.to_string(),
            iss: self.issuer.clone(),
            aud: vec!["spacetimedb".to_string()],
            iat: Some(now_secs()),
            exp,
            email: None,
            email_verified: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| AuthError::Key(e.to_string()))
    }

    /// Re-signs `claims` (same issuer and subject) with no audience, expiring in `secs` seconds:
    /// the short-lived token SDKs use to open a WebSocket.
    pub fn sign_short_lived(&self, claims: &Claims, secs: u64) -> Result<String, AuthError> {
        let now = now_secs();
        let claims = Claims { aud: Vec::new(), iat: Some(now), exp: Some(now + secs), ..claims.clone() };
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .map_err(|e| AuthError::Key(e.to_string()))
    }

    /// Verifies a token's signature (ours or a trusted issuer's) and expiry; returns its identity.
    /// As in 1.3, a token our key verifies is accepted whatever its issuer (we re-sign foreign
    /// claims for WebSocket tokens). For async callers, [`Authority::verify_async`]: this one
    /// waits for an issuer's keys to be fetched without holding an async worker
    /// (`block_in_place`), or on a runtime of its own outside one.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        block_on(self.verify_async(token))
    }

    /// Verifies a token as [`Authority::verify`] does, awaiting an issuer's keys when they must
    /// be fetched (OpenID discovery).
    pub async fn verify_async(&self, token: &str) -> Result<Verified, AuthError> {
        if let Some(v) = self.verified.lock().get(token) {
            if v.claims.exp.is_none_or(|exp| exp > now_secs()) {
                return Ok(v.clone());
            }
        }
        let claims = match self.verify_known(token)? {
            Known::Claims(claims) => claims,
            Known::Discover(issuer) => self.verify_discovered(token, &issuer).await?,
        };
        let v = checked(claims)?;
        let mut cache = self.verified.lock();
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.clear();
        }
        cache.insert(token.to_string(), v.clone());
        Ok(v)
    }

    /// Checks a token against the keys the server has (its own, trusted issuers'), or says
    /// which issuer's published keys it needs.
    fn verify_known(&self, token: &str) -> Result<Known, AuthError> {
        refuse_critical_extensions(token)?;
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation(Algorithm::ES256)) {
            Ok(data) => Ok(Known::Claims(data.claims)),
            Err(local_err) => {
                let unverified = jsonwebtoken::dangerous::insecure_decode::<Claims>(token).map_err(token_error)?.claims;
                if unverified.iss == self.issuer {
                    return Err(token_error(local_err));
                }
                match self.trusted.iter().find(|t| t.issuer == unverified.iss) {
                    Some(t) => Ok(Known::Claims(
                        jsonwebtoken::decode::<Claims>(token, &t.key, &validation(t.algorithm))
                            .map_err(token_error)?
                            .claims,
                    )),
                    None => Ok(Known::Discover(unverified.iss)),
                }
            }
        }
    }
}

/// What the server's own keys say of a token.
enum Known {
    Claims(Claims),
    /// Signed by an issuer whose keys must be discovered.
    Discover(String),
}

/// How tokens are validated: no audience; `exp` may be null (tokens that never expire), so it
/// is checked by [`checked`].
fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v
}

/// The caller of verified claims, once expiry and the claims' shape are checked.
fn checked(claims: Claims) -> Result<Verified, AuthError> {
    if claims.exp.is_some_and(|exp| exp + EXP_LEEWAY_SECS < now_secs()) {
        return Err(AuthError::InvalidToken("the token has expired".into()));
    }
    if claims.sub.is_empty() || claims.sub.len() > 128 || claims.iss.is_empty() || claims.iss.len() > 128 {
        return Err(AuthError::InvalidToken("sub and iss must be 1 to 128 bytes".into()));
    }
    let identity = identity_from_claims(&claims.iss, &claims.sub);
    if let Some(h) = &claims.hex_identity {
        if Identity::from_hex(h) != Some(identity) {
            return Err(AuthError::IdentityMismatch);
        }
    }
    Ok(Verified { identity, claims })
}

/// Runs `fut` to completion from synchronous code: on a multi-threaded runtime's worker it
/// hands the worker's other tasks on first (`block_in_place`), so waiting here never holds
/// up unrelated requests; outside a runtime it starts a small one.
fn block_on<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Builder, Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(fut))
        }
        _ => std::thread::scope(|s| {
            s.spawn(|| Builder::new_current_thread().enable_all().build().expect("a Tokio runtime").block_on(fut))
                .join()
                .expect("token verification panicked")
        }),
    }
}

impl Authority {
    /// Verifies a token of `issuer` with the keys it publishes (OpenID discovery); a key id the
    /// cached keys lack, or a signature none of them verifies, fetches the keys once more (the
    /// issuer may have rotated them).
    async fn verify_discovered(&self, token: &str, issuer: &str) -> Result<Claims, AuthError> {
        let d = self.discovery.as_ref().ok_or_else(|| AuthError::UntrustedIssuer(issuer.to_string()))?;
        let (url, listed) = d.admit(issuer)?;
        let header = jsonwebtoken::decode_header(token).map_err(token_error)?;
        // Only public-key algorithms: a shared secret cannot be published.
        if matches!(header.alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(AuthError::InvalidToken("tokens of other issuers must be signed with a public key".into()));
        }
        let mut last = None;
        for refresh in [false, true] {
            for (key, alg) in d.keys_for(issuer, url.clone(), listed, header.kid.as_deref(), refresh).await? {
                if alg.is_some_and(|a| a != header.alg) {
                    continue;
                }
                match jsonwebtoken::decode::<Claims>(token, &key, &validation(header.alg)) {
                    Ok(data) => return Ok(data.claims),
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(match last {
            Some(e) => token_error(e),
            None => AuthError::InvalidToken(format!(
                "issuer `{issuer}` publishes no key{} for this token",
                header.kid.map(|k| format!(" with id `{k}`")).unwrap_or_default()
            )),
        })
    }
}

/// A JWK (JSON Web Key) of a P-256 public key given as PEM, with key id `kid`: what an issuer
/// publishes for ES256 tokens (for tests and tools that serve keys).
pub fn es256_jwk(public_key_pem: &str, kid: &str) -> Result<serde_json::Value, AuthError> {
    use base64::Engine;
    use p256::pkcs8::DecodePublicKey;
    let key = p256::PublicKey::from_public_key_pem(public_key_pem).map_err(|e| AuthError::Key(e.to_string()))?;
    let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&key, false);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (x, y) = (
        point.x().ok_or_else(|| AuthError::Key("no x".into()))?,
        point.y().ok_or_else(|| AuthError::Key("no y".into()))?,
    );
    Ok(
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y), "kid": kid, "alg": "ES256", "use": "sig"}),
    )
}

/// Refuses a token whose header lists `crit` extensions: this server understands none, and
/// RFC 7515 §4.1.11 says such a token must then be rejected (the JWT library ignores `crit`).
fn refuse_critical_extensions(token: &str) -> Result<(), AuthError> {
    use base64::Engine;
    let Some(header) = token.split('.').next() else { return Ok(()) };
    // A header that does not decode is reported by the JWT library, in 1.3's words.
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else { return Ok(()) };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(());
    };
    if fields.contains_key("crit") {
        return Err(AuthError::InvalidToken(
            "the token's header lists critical extensions (`crit`), and this server understands none".into(),
        ));
    }
    Ok(())
}

/// A JWT library error in the form 1.3 reports it.
fn token_error(e: jsonwebtoken::errors::Error) -> AuthError {
    AuthError::InvalidToken(format!("TokenError(Error({:?}))", e.kind()))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A new P-256 key pair as (PKCS#8 private key PEM, public key PEM).
pub fn generate_key_pair() -> Result<(String, String), AuthError> {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    let private = secret.to_pkcs8_pem(LineEnding::LF).map_err(|e| AuthError::Key(e.to_string()))?;
    let public = secret.public_key().to_public_key_pem(LineEnding::LF).map_err(|e| AuthError::Key(e.to_string()))?;
    Ok((private.to_string(), public))
}

/// Writes a private key readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_start_with_c200_and_round_trip_hex() {
        let id = identity_from_claims("localhost", "abc");
        assert!(id.to_hex().starts_with("c200"));
        assert_eq!(Identity::from_hex(&id.to_hex()), Some(id));
        assert_eq!(Identity::from_hex("zz"), None);
    }

    #[test]
    fn tokens_verify_and_tampering_is_rejected() {
        let dir = std::env::temp_dir().join(format!("epoch-auth-{}", uuid::Uuid::new_v4()));
        let auth = Authority::load_or_create(&dir, "localhost").unwrap();
        let (id, token) = auth.create_identity().unwrap();
        assert_eq!(auth.verify(&token).unwrap().identity, id);
        let mut bad = token.clone();
        bad.pop();
        bad.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(auth.verify(&bad).is_err());
        assert!(auth.verify("not.a.token").is_err());
        // The same keys load again from the directory.
        let again = Authority::load_or_create(&dir, "localhost").unwrap();
        assert_eq!(again.verify(&token).unwrap().identity, id);
        // A token signed by someone else's key under our issuer name is refused.
        let other_dir = dir.join("other");
        let other = Authority::load_or_create(&other_dir, "localhost").unwrap();
        let (_, foreign) = other.create_identity().unwrap();
        assert!(auth.verify(&foreign).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_signed_token_with_a_crit_header_is_refused() {
        let dir = std::env::temp_dir().join(format!("epoch-auth-{}", uuid::Uuid::new_v4()));
        let auth = Authority::load_or_create(&dir, "localhost").unwrap();
        let (identity, _) = auth.create_identity().unwrap();
        let claims = Claims {
            hex_identity: Some(identity.to_hex()),
            sub: "someone".into(),
            iss: "localhost".into(),
            aud: Vec::new(),
            iat: Some(now_secs()),
            exp: None,
            email: None,
            email_verified: None,
        };
        let claims = Claims { hex_identity: None, ..claims };
        let mut header = Header::new(Algorithm::ES256);
        header.crit = Some(vec!["exp-policy".into()]);
        let with_crit = jsonwebtoken::encode(&header, &claims, &auth.encoding).unwrap();
        let err = auth.verify(&with_crit).unwrap_err().to_string();
        assert!(err.contains("critical extensions"), "{err}");
        // The same claims signed without `crit` verify.
        let plain = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &auth.encoding).unwrap();
        assert!(auth.verify(&plain).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn expired_tokens_are_refused_and_unexpiring_ones_write_exp_null() {
        let dir = std::env::temp_dir().join(format!("epoch-auth-{}", uuid::Uuid::new_v4()));
        let auth = Authority::load_or_create(&dir, "localhost").unwrap();
        let (id, token) = auth.create_identity().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&base64url(payload)).unwrap();
        assert_eq!(claims["exp"], serde_json::Value::Null);
        assert_eq!(claims["hex_identity"], id.to_hex());
        let expired = auth.sign(id, &auth.verify(&token).unwrap().claims.sub, Some(1_000)).unwrap();
        assert!(auth.verify(&expired).is_err());
        let claims = auth.verify(&token).unwrap().claims;
        let short = auth.sign_short_lived(&claims, 60).unwrap();
        assert_eq!(auth.verify(&short).unwrap().identity, id);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn base64url(s: &str) -> Vec<u8> {
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes() {
            bits = (bits << 6) | table.iter().position(|t| *t == c).unwrap() as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
            }
        }
        out
    }

    #[test]
    fn third_party_issuers_are_trusted_only_when_configured() {
        let dir = std::env::temp_dir().join(format!("epoch-auth-{}", uuid::Uuid::new_v4()));
        let mut auth = Authority::load_or_create(&dir.join("server"), "localhost").unwrap();
        let idp = Authority::load_or_create(&dir.join("idp"), "https://idp.example").unwrap();
        let (id, token) = idp.create_identity().unwrap();
        assert!(matches!(auth.verify(&token), Err(AuthError::UntrustedIssuer(_))));
        auth.trust(TrustedIssuer::es256("https://idp.example", idp.public_key_pem().as_bytes()).unwrap());
        assert_eq!(auth.verify(&token).unwrap().identity, id);
        std::fs::remove_dir_all(&dir).ok();
    }
}
