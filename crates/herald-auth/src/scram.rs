//! The server side of SASL: SCRAM-SHA-256 (RFC 5802, RFC 7677; no channel binding)
//! as a two-step state machine, and the SASL/PLAIN message (RFC 4616).
//!
//! Invariants: an unknown user runs the same exchange against throw-away keys and fails
//! at the proof, like a wrong password (no user enumeration); the combined nonce must be
//! echoed unchanged; every failure is one generic error to the peer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore as _;
use subtle::ConstantTimeEq;

use crate::credential::{hmac, sha256, ScramKeys, DEFAULT_ITERATIONS};

/// Why an exchange failed. The peer is told only "authentication failed" (or the
/// malformed-message reason, which holds no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("authentication failed")]
    Failed,
    #[error("SASL exchange is out of order")]
    OutOfOrder,
}

enum State {
    Start,
    SentServerFirst(Box<Pending>),
    Finished,
}

struct Pending {
    user: String,
    keys: Option<ScramKeys>,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

/// One SCRAM-SHA-256 login in progress.
pub struct ScramServer {
    state: State,
}

impl Default for ScramServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ScramServer {
    pub fn new() -> Self {
        Self {
            state: State::Start,
        }
    }

    /// Handles the client-first message; `keys_for` looks the user up. Returns the
    /// server-first message.
    pub fn client_first(
        &mut self,
        message: &[u8],
        keys_for: impl FnOnce(&str) -> Option<ScramKeys>,
    ) -> Result<Vec<u8>, SaslError> {
        if !matches!(self.state, State::Start) {
            return Err(SaslError::OutOfOrder);
        }
        self.state = State::Finished;
        let message =
            std::str::from_utf8(message).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let (gs2_header, bare) = split_gs2_header(message)?;
        let mut attributes = bare.split(',');
        let user = attributes
            .next()
            .and_then(|a| a.strip_prefix("n="))
            .ok_or(SaslError::Malformed("client-first lacks n="))?;
        let user = unescape_name(user)?;
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_graphic() && c != ','))
            .ok_or(SaslError::Malformed("client-first lacks r="))?;
        if let Some(authzid) = gs2_header
            .split(',')
            .nth(1)
            .and_then(|a| a.strip_prefix("a="))
        {
            if unescape_name(authzid)? != user {
                return Err(SaslError::Failed);
            }
        }
        let keys = keys_for(&user);
        let (salt, iterations) = match &keys {
            Some(k) => (k.salt.clone(), k.iterations),
            None => {
                let mut salt = vec![0u8; 16];
                rand::rng().fill_bytes(&mut salt);
                (salt, DEFAULT_ITERATIONS)
            }
        };
        let mut server_nonce = [0u8; 18];
        rand::rng().fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", STANDARD.encode(server_nonce));
        let server_first = format!("r={nonce},s={},i={iterations}", STANDARD.encode(&salt));
        self.state = State::SentServerFirst(Box::new(Pending {
            user,
            keys,
            gs2_header: gs2_header.to_string(),
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
        }));
        Ok(server_first.into_bytes())
    }

    /// Handles the client-final message. On success returns the authenticated user
    /// and the server-final message (`v=...`).
    pub fn client_final(&mut self, message: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
        let State::SentServerFirst(pending) = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(SaslError::OutOfOrder);
        };
        let Pending {
            user,
            keys,
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = *pending;
        let message =
            std::str::from_utf8(message).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or(SaslError::Malformed("client-final lacks p="))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(SaslError::Malformed("client-final lacks c="))?;
        if STANDARD.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err(SaslError::Malformed("channel-binding data does not match"));
        }
        let echoed = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslError::Malformed("client-final lacks r="))?;
        if echoed != nonce {
            return Err(SaslError::Failed);
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| SaslError::Malformed("proof is not base64"))?;
        let keys = keys.ok_or(SaslError::Failed)?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&keys.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(SaslError::Failed);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(signature.iter())
            .map(|(p, s)| p ^ s)
            .collect();
        if !bool::from(sha256(&client_key).ct_eq(&keys.stored_key)) {
            return Err(SaslError::Failed);
        }
        let server_signature = hmac(&keys.server_key, auth_message.as_bytes());
        Ok((
            user,
            format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
        ))
    }
}

/// Splits `gs2-header` (`n,,` / `y,,` / `n,a=user,`) from the client-first-bare part.
fn split_gs2_header(message: &str) -> Result<(&str, &str), SaslError> {
    if message.starts_with("p=") {
        return Err(SaslError::ChannelBinding);
    }
    if !(message.starts_with("n,") || message.starts_with("y,")) {
        return Err(SaslError::Malformed("bad gs2 header"));
    }
    let second_comma = message
        .get(2..)
        .and_then(|rest| rest.find(','))
        .map(|i| i + 3)
        .ok_or(SaslError::Malformed("bad gs2 header"))?;
    let (header, bare) = message.split_at(second_comma);
    Ok((header, bare))
}

/// SCRAM `saslname` unescaping (`=2C` → `,`, `=3D` → `=`).
fn unescape_name(name: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let escape = rest
            .get(i..i + 3)
            .ok_or(SaslError::Malformed("bad escape in name"))?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return Err(SaslError::Malformed("bad escape in name")),
        });
        rest = rest.get(i + 3..).unwrap_or_default();
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(SaslError::Malformed("empty user name"));
    }
    Ok(out)
}

/// A SASL/PLAIN message: `[authzid] NUL authcid NUL password`.
pub struct PlainMessage {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for PlainMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainMessage")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

pub fn parse_plain(message: &[u8]) -> Result<PlainMessage, SaslError> {
    let text = std::str::from_utf8(message).map_err(|_| SaslError::Malformed("not UTF-8"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "PLAIN expects authzid NUL user NUL password",
        ));
    };
    if user.is_empty() || password.is_empty() {
        return Err(SaslError::Malformed("PLAIN user or password is empty"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::Failed);
    }
    Ok(PlainMessage {
        user: user.to_string(),
        password: password.to_string(),
    })
}

/// The client side of SCRAM-SHA-256, for tests and the SDK: computes the client-final
/// message for a server-first message.
pub struct ScramClient {
    user: String,
    password: String,
    client_nonce: String,
    auth_message: Option<String>,
    server_key: Option<[u8; 32]>,
}

impl ScramClient {
    pub fn new(user: &str, password: &str) -> Self {
        let mut nonce = [0u8; 18];
        rand::rng().fill_bytes(&mut nonce);
        Self {
            user: user.replace('=', "=3D").replace(',', "=2C"),
            password: password.to_string(),
            client_nonce: STANDARD.encode(nonce),
            auth_message: None,
            server_key: None,
        }
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,n={},r={}", self.user, self.client_nonce).into_bytes()
    }

    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, SaslError> {
        let server_first =
            std::str::from_utf8(server_first).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            if let Some(v) = attribute.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = attribute.strip_prefix("s=") {
                salt = STANDARD.decode(v).ok();
            } else if let Some(v) = attribute.strip_prefix("i=") {
                iterations = v.parse::<u32>().ok();
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(SaslError::Malformed("bad server-first message"));
        };
        if !nonce.starts_with(&self.client_nonce) {
            return Err(SaslError::Failed);
        }
        let keys = ScramKeys::derive(&self.password, salt, iterations);
        let salted =
            crate::credential::salted_password(self.password.as_bytes(), &keys.salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!(
            "n={},r={},{server_first},{without_proof}",
            self.user, self.client_nonce
        );
        let signature = hmac(&keys.stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        self.auth_message = Some(auth_message);
        self.server_key = Some(keys.server_key);
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks the server-final message (mutual authentication).
    pub fn verify_server_final(&self, server_final: &[u8]) -> bool {
        let (Some(auth_message), Some(server_key)) = (&self.auth_message, &self.server_key) else {
            return false;
        };
        let expected = format!(
            "v={}",
            STANDARD.encode(hmac(server_key, auth_message.as_bytes()))
        );
        server_final == expected.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::ScramCredential;

    fn keys(password: &str) -> ScramKeys {
        ScramCredential::from_password(password, DEFAULT_ITERATIONS)
            .unwrap()
            .keys()
            .unwrap()
    }

    fn login(user: &str, password: &str, stored: &ScramKeys) -> Result<String, SaslError> {
        let mut client = ScramClient::new(user, password);
        let mut server = ScramServer::new();
        let server_first = server.client_first(&client.client_first(), |u| {
            (u == "alice").then(|| stored.clone())
        })?;
        let client_final = client.client_final(&server_first)?;
        let (who, server_final) = server.client_final(&client_final)?;
        assert!(client.verify_server_final(&server_final));
        Ok(who)
    }

    #[test]
    fn right_password_logs_in_wrong_or_unknown_fails_alike() {
        let stored = keys("pencil");
        assert_eq!(login("alice", "pencil", &stored).unwrap(), "alice");
        assert_eq!(login("alice", "pen", &stored), Err(SaslError::Failed));
        assert_eq!(login("mallory", "pencil", &stored), Err(SaslError::Failed));
    }

    #[test]
    fn malformed_and_out_of_order_messages_are_refused() {
        let stored = keys("pencil");
        let lookup = |_: &str| Some(stored.clone());
        for bad in [
            &b""[..],
            b"n,,",
            b"x,,n=a,r=b",
            b"n,,r=abc",
            b"n,,n=a",
            b"n,,n=a=ZZ,r=x",
            b"\xff\xfe",
        ] {
            let mut server = ScramServer::new();
            assert!(
                matches!(
                    server.client_first(bad, lookup),
                    Err(SaslError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let mut server = ScramServer::new();
        assert_eq!(
            server.client_first(b"p=tls-unique,,n=a,r=b", lookup),
            Err(SaslError::ChannelBinding)
        );
        let mut server = ScramServer::new();
        assert_eq!(
            server.client_final(b"c=biws,r=x,p=AA=="),
            Err(SaslError::OutOfOrder)
        );
        // A tampered nonce fails.
        let mut server = ScramServer::new();
        server.client_first(b"n,,n=alice,r=abc", lookup).unwrap();
        assert_eq!(
            server.client_final(b"c=biws,r=abcdef,p=AAAA"),
            Err(SaslError::Failed)
        );
    }

    #[test]
    fn plain_messages() {
        let m = parse_plain(b"\0alice\0pencil").unwrap();
        assert_eq!((m.user.as_str(), m.password.as_str()), ("alice", "pencil"));
        assert!(!format!("{m:?}").contains("pencil"));
        assert!(parse_plain(b"alice\0alice\0pencil").is_ok());
        assert_eq!(
            parse_plain(b"root\0alice\0pencil").unwrap_err(),
            SaslError::Failed
        );
        assert!(parse_plain(b"alice\0pencil").is_err());
        assert!(parse_plain(b"\0\0pencil").is_err());
        assert!(parse_plain(b"\0a\0b\0c").is_err());
    }

    #[test]
    fn names_unescape() {
        assert_eq!(unescape_name("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert!(unescape_name("a=").is_err());
        assert!(unescape_name("").is_err());
    }
}
