//! Stored secrets: a password becomes a SCRAM-SHA-256 credential (salt, iteration
//! count, `StoredKey`, `ServerKey`; RFC 5802 §3), an API token becomes its SHA-256
//! digest. Neither can be turned back into the secret.
//!
//! Invariants: verification compares in constant time; `Debug` shows no key material.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AuthError;

type HmacSha256 = Hmac<Sha256>;

/// PBKDF2 iterations of new credentials (RFC 7677 asks for at least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Fewest iterations an auth file may name.
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations an auth file may name (bounds the CPU one login costs).
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Prefix of Herald API tokens (makes leaked tokens greppable by secret scanners).
pub const TOKEN_PREFIX: &str = "hrld_";

pub(crate) fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A salted password in SCRAM form.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScramCredential {
    /// Base64 salt.
    pub salt: String,
    pub iterations: u32,
    /// Base64 `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: String,
    /// Base64 `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: String,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The decoded keys of a credential, ready for a login.
#[derive(Clone)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

impl ScramKeys {
    pub fn derive(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            salt,
            iterations,
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one these keys were derived from (SASL/PLAIN).
    pub fn verify_password(&self, password: &str) -> bool {
        let candidate = ScramKeys::derive(password, self.salt.clone(), self.iterations);
        bool::from(candidate.stored_key.ct_eq(&self.stored_key))
    }
}

impl ScramCredential {
    /// A new credential for `password` with a random 16-byte salt.
    pub fn from_password(password: &str, iterations: u32) -> Result<Self, AuthError> {
        if password.is_empty() {
            return Err(AuthError::BadInput("the password is empty".into()));
        }
        check_iterations(iterations)?;
        let mut salt = vec![0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let keys = ScramKeys::derive(password, salt, iterations);
        Ok(Self {
            salt: STANDARD.encode(&keys.salt),
            iterations,
            stored_key: STANDARD.encode(keys.stored_key),
            server_key: STANDARD.encode(keys.server_key),
        })
    }

    /// Decodes the stored form; errors name the bad field, never its value.
    pub fn keys(&self) -> Result<ScramKeys, String> {
        check_iterations(self.iterations).map_err(|e| e.to_string())?;
        let salt = STANDARD
            .decode(&self.salt)
            .map_err(|_| "salt is not base64".to_string())?;
        if salt.is_empty() {
            return Err("salt is empty".into());
        }
        let key = |field: &str, value: &str| -> Result<[u8; 32], String> {
            STANDARD
                .decode(value)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
                .ok_or_else(|| format!("{field} is not 32 base64 bytes"))
        };
        Ok(ScramKeys {
            salt,
            iterations: self.iterations,
            stored_key: key("stored_key", &self.stored_key)?,
            server_key: key("server_key", &self.server_key)?,
        })
    }
}

fn check_iterations(iterations: u32) -> Result<(), AuthError> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(AuthError::BadInput(format!(
            "iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}, got {iterations}"
        )));
    }
    Ok(())
}

/// The stored form of an API token: an id (shown in listings and logs) and the
/// SHA-256 of the token, hex. Tokens carry 256 random bits, so one fast hash suffices.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenDigest {
    pub id: String,
    pub sha256: String,
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenDigest")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TokenDigest {
    /// A new random token (returned once, to show the user) and its digest.
    pub fn generate(id: &str) -> (String, TokenDigest) {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let digest = TokenDigest {
            id: id.to_string(),
            sha256: digest_hex(&token),
        };
        (token, digest)
    }
}

/// Hex SHA-256 of a presented token (the key tokens are looked up by).
pub fn digest_hex(token: &str) -> String {
    sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_verifies_and_nothing_else_does() {
        let credential = ScramCredential::from_password("s3cret", DEFAULT_ITERATIONS).unwrap();
        let keys = credential.keys().unwrap();
        assert!(keys.verify_password("s3cret"));
        assert!(!keys.verify_password("s3cret "));
        assert!(!keys.verify_password(""));
        let shown = format!("{credential:?} {keys:?}");
        assert!(!shown.contains(&credential.stored_key), "{shown}");
        assert!(!shown.contains(&credential.salt), "{shown}");
    }

    #[test]
    fn rfc7677_test_vector() {
        // RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = ScramKeys::derive("pencil", salt, 4096);
        let salted = salted_password(b"pencil", &keys.salt, 4096);
        let client_key = hmac(&salted, b"Client Key");
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = hmac(&keys.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            STANDARD.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_signature = hmac(&keys.server_key, auth_message.as_bytes());
        assert_eq!(
            STANDARD.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn bad_stored_fields_are_named() {
        let mut credential = ScramCredential::from_password("x", DEFAULT_ITERATIONS).unwrap();
        credential.stored_key = "not base64!".into();
        assert!(credential.keys().unwrap_err().contains("stored_key"));
        credential.iterations = 1;
        assert!(credential.keys().unwrap_err().contains("iterations"));
        assert!(ScramCredential::from_password("", DEFAULT_ITERATIONS).is_err());
    }

    #[test]
    fn tokens_are_random_and_only_their_digest_is_kept() {
        let (a, da) = TokenDigest::generate("ci");
        let (b, _) = TokenDigest::generate("ci");
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(da.sha256, digest_hex(&a));
        assert!(!format!("{da:?}").contains(&da.sha256));
    }
}
