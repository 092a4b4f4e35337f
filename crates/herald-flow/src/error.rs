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
    /// The Postgres server holding read models and checkpoints failed, refused a statement
    /// or could not be reached (connection refused, lost, authentication...). The message
    /// carries the server's error or the client-side cause, so the variant has no
    /// separate `source` (error chains would print the cause twice).
    #[error("postgres: {}", postgres_message(.0))]
    Postgres(tokio_postgres::Error),
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
            FlowError::Postgres(e) => postgres_is_transient(e),
            FlowError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for FlowError {
    fn from(e: tokio_postgres::Error) -> Self {
        FlowError::Postgres(e)
    }
}

/// tokio-postgres prints a server error as just "db error": add the server's message,
/// detail and SQLSTATE, or the cause of a client-side error (I/O, refused connection).
fn postgres_message(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        return text;
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}

/// Lost or refused connections, and conflicts the server asks to retry (serialization
/// failure, deadlock, too many connections, shutting down).
fn postgres_is_transient(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code),
        // No SQLSTATE: the error came from the connection (I/O, refused, timeout).
        None => std::error::Error::source(error)
            .is_some_and(|cause| cause.downcast_ref::<std::io::Error>().is_some()),
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

impl From<tokio_postgres::Error> for HandlerError {
    fn from(e: tokio_postgres::Error) -> Self {
        HandlerError(format!("postgres: {}", postgres_message(&e)))
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
