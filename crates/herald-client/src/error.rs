//! The SDK's error: the server's `{code, message}` or a transport failure.

use herald_broker::BrokerError;
use herald_eventstore::{EventStoreError, ExpectedVersion};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    /// The server (or embedded broker) refused the request.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// An append's (or delete's) expected-version check failed; nothing was written.
    #[error(
        "wrong expected version for stream `{stream}`: expected {expected}, current {current:?}"
    )]
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        /// The stream's last version; `None` if the stream does not exist.
        current: Option<u64>,
    },
    /// The stream does not exist (never written, or soft-deleted).
    #[error("stream `{stream}` not found")]
    StreamNotFound { stream: String },
    /// The stream was hard-deleted (tombstoned).
    #[error("stream `{stream}` is deleted permanently")]
    StreamDeleted { stream: String },
    #[error("transport: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The stable error code (`topic_not_found`, `backpressure`, ...), when the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            ClientError::WrongExpectedVersion { .. } => Some("wrong_expected_version"),
            ClientError::StreamNotFound { .. } => Some("stream_not_found"),
            ClientError::StreamDeleted { .. } => Some("stream_deleted"),
            _ => None,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Api { status, .. } => *status == 429 || *status == 503,
            ClientError::Transport(_) => true,
            ClientError::Protocol(_)
            | ClientError::WrongExpectedVersion { .. }
            | ClientError::StreamNotFound { .. }
            | ClientError::StreamDeleted { .. } => false,
        }
    }
}

impl From<BrokerError> for ClientError {
    fn from(e: BrokerError) -> Self {
        let status = e.http_status();
        ClientError::Api {
            status,
            code: e.code().to_string(),
            message: e.to_string(),
            field: e.field(),
        }
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Transport(e.to_string())
    }
}

impl From<EventStoreError> for ClientError {
    fn from(e: EventStoreError) -> Self {
        match e {
            EventStoreError::WrongExpectedVersion {
                stream,
                expected,
                current,
            } => ClientError::WrongExpectedVersion {
                stream,
                expected,
                current,
            },
            EventStoreError::StreamNotFound { stream } => ClientError::StreamNotFound { stream },
            EventStoreError::StreamDeleted { stream } => ClientError::StreamDeleted { stream },
            other => ClientError::Api {
                status: other.http_status(),
                code: other.code().to_string(),
                message: other.to_string(),
                field: other.field(),
            },
        }
    }
}
