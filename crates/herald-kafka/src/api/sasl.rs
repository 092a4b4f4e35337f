//! SaslHandshake (key 17, v1) and SaslAuthenticate (key 36): SASL/PLAIN and
//! SASL/SCRAM-SHA-256 against the server's user store (KIP-43, KIP-152).
//!
//! Owns the per-connection login state in [`SaslState`]. Invariants: a connection is
//! authenticated at most once; a failed login answers `SASL_AUTHENTICATION_FAILED` and
//! the connection is then closed (as Kafka does); the password never leaves this module.

use std::sync::Arc;

use bytes::Bytes;
use herald_auth::scram::{parse_plain, SaslError, ScramServer};
use herald_auth::{AuthStore, Principal};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::ResponseError;

use super::{text, Session, Shared};

/// Mechanisms offered, in Kafka's spelling.
pub const MECHANISMS: [&str; 2] = ["PLAIN", "SCRAM-SHA-256"];

/// Where a connection is in its login.
#[derive(Default)]
pub enum SaslState {
    /// No handshake yet.
    #[default]
    Start,
    /// Handshake chose PLAIN; the next SaslAuthenticate carries the credentials.
    Plain,
    /// Handshake chose SCRAM-SHA-256; the exchange is in progress.
    Scram(Box<ScramServer>),
    /// Logged in, or failed (the connection closes).
    Done,
}

impl std::fmt::Debug for SaslState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SaslState::Start => "Start",
            SaslState::Plain => "Plain",
            SaslState::Scram(_) => "Scram",
            SaslState::Done => "Done",
        })
    }
}

pub fn handshake(
    shared: &Shared,
    session: &mut Session,
    request: &SaslHandshakeRequest,
) -> SaslHandshakeResponse {
    let mechanisms = MECHANISMS.iter().map(|m| text(*m)).collect();
    let response = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
    if shared.options.auth.is_none() {
        // No user store: nothing to log in to.
        return response
            .with_mechanisms(Vec::new())
            .with_error_code(ResponseError::UnsupportedSaslMechanism.code());
    }
    if !matches!(session.sasl, SaslState::Start) || session.principal.is_some() {
        return response.with_error_code(ResponseError::IllegalSaslState.code());
    }
    match &*request.mechanism {
        "PLAIN" => session.sasl = SaslState::Plain,
        "SCRAM-SHA-256" => session.sasl = SaslState::Scram(Box::new(ScramServer::new())),
        _ => return response.with_error_code(ResponseError::UnsupportedSaslMechanism.code()),
    }
    response
}

pub async fn authenticate(
    shared: &Shared,
    session: &mut Session,
    request: SaslAuthenticateRequest,
) -> SaslAuthenticateResponse {
    let Some(store) = shared.options.auth.clone() else {
        return failed(session, "authentication is not enabled on this listener");
    };
    match std::mem::take(&mut session.sasl) {
        SaslState::Plain => {
            let message = match parse_plain(&request.auth_bytes) {
                Ok(m) => m,
                Err(e) => return failed(session, &e.to_string()),
            };
            // PBKDF2 costs milliseconds of CPU: keep it off the async workers.
            let user = message.user.clone();
            let checked = tokio::task::spawn_blocking(move || {
                store.authenticate_password(&message.user, &message.password)
            })
            .await
            .ok()
            .flatten();
            match checked {
                Some(principal) => logged_in(session, principal, Bytes::new()),
                None => {
                    tracing::info!(user = %user, mechanism = "PLAIN", "kafka: authentication failed");
                    failed(session, "authentication failed")
                }
            }
        }
        SaslState::Scram(mut scram) => {
            match scram_step(&store, scram.as_mut(), &request.auth_bytes) {
                Err(e) => failed(session, &e.to_string()),
                Ok((Some(principal), bytes)) => logged_in(session, principal, bytes),
                Ok((None, bytes)) => {
                    session.sasl = SaslState::Scram(scram);
                    SaslAuthenticateResponse::default().with_auth_bytes(bytes)
                }
            }
        }
        SaslState::Start | SaslState::Done => {
            session.sasl = SaslState::Done;
            session.close_after_reply = true;
            SaslAuthenticateResponse::default()
                .with_error_code(ResponseError::IllegalSaslState.code())
                .with_error_message(Some(text("SaslAuthenticate without a SaslHandshake")))
        }
    }
}

/// One SCRAM step: the first message gets the server-first reply, the second the
/// server-final one and the principal.
fn scram_step(
    store: &Arc<AuthStore>,
    scram: &mut ScramServer,
    bytes: &[u8],
) -> Result<(Option<Principal>, Bytes), SaslError> {
    match scram.client_first(bytes, |user| store.scram_keys(user)) {
        Ok(server_first) => Ok((None, Bytes::from(server_first))),
        Err(SaslError::OutOfOrder) => {
            let (user, server_final) = scram.client_final(bytes)?;
            Ok((Some(Principal { name: user }), Bytes::from(server_final)))
        }
        Err(e) => Err(e),
    }
}

fn logged_in(
    session: &mut Session,
    principal: Principal,
    bytes: Bytes,
) -> SaslAuthenticateResponse {
    tracing::debug!(principal = %principal.name, "kafka: client authenticated");
    session.principal = Some(principal);
    session.sasl = SaslState::Done;
    SaslAuthenticateResponse::default().with_auth_bytes(bytes)
}

fn failed(session: &mut Session, message: &str) -> SaslAuthenticateResponse {
    session.sasl = SaslState::Done;
    session.close_after_reply = true;
    SaslAuthenticateResponse::default()
        .with_error_code(ResponseError::SaslAuthenticationFailed.code())
        .with_error_message(Some(text(message)))
}
