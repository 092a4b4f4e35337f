//! Errors of the flow runtime: one enum for the runtime, one small type for user handlers.

use herald_client::ClientError;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FlowError {
    /// Herald (server or embedded broker) refused a request or could not be reached.
    #[error("herald: {0}")]
    Client(#[from] ClientError),
    /// The SQLite database holding read models, checkpoints or saga state failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A projection handler rejected an event; the checkpoint stays before it.
    #[error("projection {projection} failed at position {position} (event {event_id}): {message}")]
    Handler {
        projection: String,
        position: u64,
        event_id: String,
        message: String,
    },
    /// A definition or argument that can never work (empty saga, bad source...).
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
    /// Stored state that does not decode (JSON written by this crate).
    #[error("corrupt {what}: {message}")]
    Corrupt { what: &'static str, message: String },
}

impl FlowError {
    /// Whether retrying later may succeed (network trouble, server busy).
    pub fn is_transient(&self) -> bool {
        match self {
            FlowError::Client(e) => e.is_retryable(),
            FlowError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// The error a user handler returns; its message ends up in [`FlowError::Handler`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

impl From<rusqlite::Error> for HandlerError {
    fn from(e: rusqlite::Error) -> Self {
        HandlerError(format!("sqlite: {e}"))
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        HandlerError(format!("json: {e}"))
    }
}

impl From<String> for HandlerError {
    fn from(e: String) -> Self {
        HandlerError(e)
    }
}

impl From<&str> for HandlerError {
    fn from(e: &str) -> Self {
        HandlerError(e.to_string())
    }
}
