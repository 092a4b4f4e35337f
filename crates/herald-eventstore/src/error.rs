//! [`EventStoreError`]: every way an event-store operation fails, with a stable code
//! and the HTTP status the API answers with.

use std::path::PathBuf;

use herald_log::LogError;
use thiserror::Error;

use crate::types::ExpectedVersion;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EventStoreError {
    /// Bad input; `field` names what is wrong.
    #[error("invalid `{field}`: {message}")]
    Invalid { field: String, message: String },
    /// The expected-version check failed; nothing was written.
    #[error("wrong expected version for stream `{stream}`: expected {expected}, current {}", current.map_or_else(|| "none (no stream)".to_string(), |v| v.to_string()))]
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        /// The stream's current last version; `None` if it does not exist.
        current: Option<u64>,
    },
    #[error("stream `{stream}` not found")]
    StreamNotFound { stream: String },
    /// The stream was hard-deleted (tombstoned): it can never be written again.
    #[error("stream `{stream}` is deleted permanently (tombstoned)")]
    StreamDeleted { stream: String },
    #[error("event of {size} bytes exceeds the {max}-byte limit")]
    EventTooLarge { size: usize, max: usize },
    #[error("append of {size} bytes exceeds the {max}-byte limit")]
    AppendTooLarge { size: u64, max: u64 },
    #[error("an append carries at most {max} events, got {count}")]
    TooManyEvents { count: usize, max: usize },
    /// The log's write queue is full; retry later.
    #[error("the event store is busy (its write queue is full); retry shortly")]
    Backpressure,
    #[error("the event store is closed")]
    Closed,
    /// The shared storage (JetStream) did not answer or failed; nothing is known to be
    /// written unless the message says so. Retry shortly.
    #[error("the event store's storage is unavailable: {0}")]
    Unavailable(String),
    /// An earlier write failed in a way that leaves its outcome unknown; writes are refused.
    #[error("the event store refuses writes after an earlier storage failure: {0}")]
    Poisoned(String),
    #[error("event store I/O failed on `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Stored data that passed its checksum but cannot be interpreted.
    #[error("corrupt event-store record at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    #[error("another process holds the event store in `{}`", path.display())]
    Locked { path: PathBuf },
    #[error(transparent)]
    Log(LogError),
    #[error("persistent subscription `{group}` not found")]
    SubscriptionNotFound { group: String },
    #[error("persistent subscription `{group}` already exists")]
    SubscriptionExists { group: String },
    /// A persistent subscription's state could not be read or written.
    #[error("persistent subscription storage failed: {0}")]
    SubscriptionStorage(String),
}

impl EventStoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// The stable code the API reports.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_argument",
            Self::WrongExpectedVersion { .. } => "wrong_expected_version",
            Self::StreamNotFound { .. } => "stream_not_found",
            Self::StreamDeleted { .. } => "stream_deleted",
            Self::EventTooLarge { .. } | Self::AppendTooLarge { .. } => "payload_too_large",
            Self::TooManyEvents { .. } => "invalid_argument",
            Self::Backpressure => "backpressure",
            Self::Closed | Self::Unavailable(_) => "unavailable",
            Self::Poisoned(_) => "storage_failed",
            Self::Io { .. } | Self::Log(_) => "io_error",
            Self::Corrupt { .. } => "corrupt",
            Self::Locked { .. } => "data_dir_locked",
            Self::SubscriptionNotFound { .. } => "subscription_not_found",
            Self::SubscriptionExists { .. } => "subscription_exists",
            Self::SubscriptionStorage(_) => "io_error",
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Invalid { .. } | Self::TooManyEvents { .. } => 400,
            Self::WrongExpectedVersion { .. } => 409,
            Self::StreamNotFound { .. } | Self::SubscriptionNotFound { .. } => 404,
            Self::SubscriptionExists { .. } => 409,
            Self::StreamDeleted { .. } => 410,
            Self::EventTooLarge { .. } | Self::AppendTooLarge { .. } => 413,
            Self::Backpressure => 429,
            Self::Closed | Self::Unavailable(_) => 503,
            Self::Poisoned(_)
            | Self::Io { .. }
            | Self::Corrupt { .. }
            | Self::Locked { .. }
            | Self::SubscriptionStorage(_)
            | Self::Log(_) => 500,
        }
    }

    /// The field at fault, for 400s.
    pub fn field(&self) -> Option<String> {
        match self {
            Self::Invalid { field, .. } => Some(field.clone()),
            Self::TooManyEvents { .. } => Some("events".to_string()),
            _ => None,
        }
    }
}

impl From<LogError> for EventStoreError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Backpressure => Self::Backpressure,
            LogError::Closed => Self::Closed,
            LogError::Poisoned(reason) => Self::Poisoned(reason),
            LogError::BatchTooLarge { size, max } => Self::AppendTooLarge { size, max },
            LogError::EmptyBatch => Self::invalid("events", "must not be empty"),
            other => Self::Log(other),
        }
    }
}

impl From<herald_core::ValidationError> for EventStoreError {
    fn from(e: herald_core::ValidationError) -> Self {
        Self::Invalid {
            field: e.field.to_string(),
            message: e.message,
        }
    }
}
