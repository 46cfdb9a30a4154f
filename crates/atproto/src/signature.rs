//! Commit signatures. A commit block is a DAG-CBOR map (`did`, `version`, `data`, `rev`,
//! `prev`, `sig`); `sig` is the ECDSA signature (64 bytes, `r‖s`, low-S) over the SHA-256 of
//! the same map without `sig`, by the repo's `#atproto` key: a `did:key`-style multibase string
//! (`z` base58btc; multicodec secp256k1 or P-256, compressed point).

use ipld_core::ipld::Ipld;

/// Why a key or a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("not a public key we know: {0}")]
    Key(String),
    #[error("the commit is malformed: {0}")]
    Commit(String),
    #[error("the commit's signature does not verify with the repo's key")]
    Mismatch,
}

/// A repo signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    K256(k256::ecdsa::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

/// Multicodec prefixes (unsigned varints) of the two key types the protocol allows.
const SECP256K1_PUB: [u8; 2] = [0xe7, 0x01];
const P256_PUB: [u8; 2] = [0x80, 0x24];

impl PublicKey {
    /// From a `publicKeyMultibase` value, or a `did:key:` identifier.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let multibase = text.strip_prefix("did:key:").unwrap_or(text);
        if !multibase.starts_with('z') {
            return Err(SignatureError::Key("only base58btc (z…) keys are used".into()));
        }
        let (_, bytes) = multibase::decode(multibase).map_err(|e| SignatureError::Key(e.to_string()))?;
        let bad = |e: &dyn std::fmt::Display| SignatureError::Key(e.to_string());
        match bytes.split_at_checked(2) {
            Some((prefix, point)) if prefix == SECP256K1_PUB => {
                k256::ecdsa::VerifyingKey::from_sec1_bytes(point).map(Self::K256).map_err(|e| bad(&e))
            }
            Some((prefix, point)) if prefix == P256_PUB => {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map(Self::P256).map_err(|e| bad(&e))
            }
            _ => Err(SignatureError::Key("neither a secp256k1 nor a P-256 key".into())),
        }
    }

    /// From a DID document's verification method: `Multikey` (a multicodec-prefixed key, as
    /// [`parse`](Self::parse) takes), or the older `EcdsaSecp256k1VerificationKey2019` and
    /// `EcdsaSecp256r1VerificationKey2019`, whose multibase holds the bare compressed point.
    pub fn from_verification_method(kind: &str, multibase: &str) -> Result<Self, SignatureError> {
        let bare = || -> Result<Vec<u8>, SignatureError> {
            let (_, bytes) = multibase::decode(multibase).map_err(|e| SignatureError::Key(e.to_string()))?;
            Ok(bytes)
        };
        let bad = |e: &dyn std::fmt::Display| SignatureError::Key(e.to_string());
        match kind {
            "EcdsaSecp256k1VerificationKey2019" => {
                k256::ecdsa::VerifyingKey::from_sec1_bytes(&bare()?).map(Self::K256).map_err(|e| bad(&e))
            }
            "EcdsaSecp256r1VerificationKey2019" => {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&bare()?).map(Self::P256).map_err(|e| bad(&e))
            }
            _ => Self::parse(multibase),
        }
    }
}

/// Checks the signature of a commit block against `key`.
pub fn verify_commit(block: &[u8], key: &PublicKey) -> Result<(), SignatureError> {
    let malformed = |e: &dyn std::fmt::Display| SignatureError::Commit(e.to_string());
    crate::value::check_nesting(block).map_err(|e| malformed(&e))?;
    let Ipld::Map(mut map) = serde_ipld_dagcbor::from_slice::<Ipld>(block).map_err(|e| malformed(&e))? else {
        return Err(malformed(&"not a map"));
    };
    let Some(Ipld::Bytes(sig)) = map.remove("sig") else { return Err(malformed(&"no `sig` bytes")) };
    let unsigned = serde_ipld_dagcbor::to_vec(&Ipld::Map(map)).map_err(|e| malformed(&e))?;
    match key {
        PublicKey::K256(k) => {
            use k256::ecdsa::signature::Verifier;
            let sig = k256::ecdsa::Signature::from_slice(&sig).map_err(|_| SignatureError::Mismatch)?;
            // The protocol asks for low-S signatures only.
            if sig.normalize_s().is_some() {
                return Err(SignatureError::Mismatch);
            }
            k.verify(&unsigned, &sig).map_err(|_| SignatureError::Mismatch)
        }
        PublicKey::P256(k) => {
            use p256::ecdsa::signature::Verifier;
            let sig = p256::ecdsa::Signature::from_slice(&sig).map_err(|_| SignatureError::Mismatch)?;
            if sig.normalize_s().is_some() {
                return Err(SignatureError::Mismatch);
            }
            k.verify(&unsigned, &sig).map_err(|_| SignatureError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::ecdsa::signature::Signer;
    use std::collections::BTreeMap;

    fn commit(sig: Option<Vec<u8>>) -> Vec<u8> {
        let mut m = BTreeMap::from([
            ("did".to_string(), Ipld::String("did:plc:abc".into())),
            ("version".to_string(), Ipld::Integer(3)),
            ("rev".to_string(), Ipld::String("3kabc".into())),
            ("prev".to_string(), Ipld::Null),
        ]);
        if let Some(s) = sig {
            m.insert("sig".into(), Ipld::Bytes(s));
        }
        serde_ipld_dagcbor::to_vec(&Ipld::Map(m)).unwrap()
    }

    #[test]
    fn a_signed_commit_verifies_and_a_changed_one_does_not() {
        let signing = k256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let sig: k256::ecdsa::Signature = signing.sign(&commit(None));
        let sig = sig.normalize_s().unwrap_or(sig);
        let point = signing.verifying_key().to_encoded_point(true);
        let mut bytes = SECP256K1_PUB.to_vec();
        bytes.extend_from_slice(point.as_bytes());
        let text = format!("did:key:{}", multibase::encode(multibase::Base::Base58Btc, &bytes));
        let key = PublicKey::parse(&text).unwrap();
        assert_eq!(verify_commit(&commit(Some(sig.to_vec())), &key), Ok(()));
        let mut other = sig.to_vec();
        other[5] ^= 1;
        assert_eq!(verify_commit(&commit(Some(other)), &key), Err(SignatureError::Mismatch));
        assert!(matches!(verify_commit(&commit(None), &key), Err(SignatureError::Commit(_))));
        assert!(PublicKey::parse("zQ3shwrong").is_err());
        // The curve's generator as a did:key (the fuzz targets use it).
        assert!(PublicKey::parse("did:key:zQ3shVc2UkAfJCdc1TR8E66J85h48P43r93q8jGPkPpjF9Ef9").is_ok());
    }
}
