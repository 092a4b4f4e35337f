//! The broker's error type. Each variant has a stable `code()` that front-ends map to
//! their protocol (HTTP status, Kafka error code).

use herald_core::ValidationError;
use herald_log::LogError;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("topic `{0}` does not exist")]
    TopicNotFound(String),
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("partition {partition} does not exist: topic `{topic}` has {count} partitions")]
    PartitionNotFound {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error("group `{0}` does not exist")]
    GroupNotFound(String),
    #[error(
        "member `{member}` is not in group `{group}` (it left or its session expired; join again)"
    )]
    MemberNotFound { group: String, member: String },
    #[error("group `{0}` has active members; stop them first")]
    GroupNotEmpty(String),
    #[error("partition {topic}/{partition} is not assigned to this member (generation {generation}); the group rebalanced")]
    NotAssigned {
        topic: String,
        partition: u32,
        generation: u64,
    },
    #[error("event {index} is {size} bytes; the maximum is {max}")]
    PayloadTooLarge {
        index: usize,
        size: usize,
        max: usize,
    },
    #[error("offset {requested} is out of range for {topic}/{partition}: the log holds offsets {start}..{end}")]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        requested: u64,
        start: u64,
        end: u64,
    },
    #[error("the partition's write queue is full; retry shortly")]
    Backpressure,
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The storage backend (JetStream) cannot be reached or refused the operation.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    #[error("data directory {path} is in use by another herald process")]
    DataDirLocked { path: String },
    #[error("{0}")]
    Schema(herald_core::schema::RegistryError),
    #[error("event {index}: {error}")]
    EventSchema {
        index: usize,
        error: herald_core::schema::EventSchemaError,
    },
    #[error("storage: {0}")]
    Storage(LogError),
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl BrokerError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BrokerError::Invalid(_) | BrokerError::PartitionNotFound { .. } => "invalid_argument",
            BrokerError::TopicNotFound(_) => "topic_not_found",
            BrokerError::TopicExists(_) => "topic_exists",
            BrokerError::GroupNotFound(_) => "group_not_found",
            BrokerError::MemberNotFound { .. } => "member_not_found",
            BrokerError::GroupNotEmpty(_) => "group_not_empty",
            BrokerError::NotAssigned { .. } => "not_assigned",
            BrokerError::PayloadTooLarge { .. } => "payload_too_large",
            BrokerError::OffsetOutOfRange { .. } => "offset_out_of_range",
            BrokerError::Backpressure => "backpressure",
            BrokerError::ShuttingDown | BrokerError::Unavailable(_) => "unavailable",
            BrokerError::Schema(e) => e.code(),
            BrokerError::EventSchema { error, .. } => error.code(),
            BrokerError::Storage(LogError::Corrupt { .. }) => "data_corrupt",
            BrokerError::Storage(e) if e.is_retryable() => "storage_full",
            BrokerError::Io { source, .. } if is_no_space(source) => "storage_full",
            BrokerError::DataDirLocked { .. }
            | BrokerError::Storage(_)
            | BrokerError::Io { .. } => "internal",
        }
    }

    /// The HTTP status this error maps to (the HTTP API and the SDK use it).
    pub fn http_status(&self) -> u16 {
        match self {
            BrokerError::Invalid(_) | BrokerError::PartitionNotFound { .. } => 400,
            BrokerError::TopicNotFound(_)
            | BrokerError::GroupNotFound(_)
            | BrokerError::MemberNotFound { .. } => 404,
            BrokerError::TopicExists(_)
            | BrokerError::GroupNotEmpty(_)
            | BrokerError::NotAssigned { .. } => 409,
            BrokerError::PayloadTooLarge { .. } => 413,
            BrokerError::Schema(herald_core::schema::RegistryError::Incompatible { .. }) => 409,
            BrokerError::Schema(
                herald_core::schema::RegistryError::UnknownType { .. }
                | herald_core::schema::RegistryError::UnknownVersion { .. },
            ) => 404,
            BrokerError::Schema(_) | BrokerError::EventSchema { .. } => 400,
            BrokerError::OffsetOutOfRange { .. } => 416,
            BrokerError::Backpressure => 429,
            BrokerError::ShuttingDown | BrokerError::Unavailable(_) => 503,
            BrokerError::Storage(s) if s.is_retryable() => 503,
            BrokerError::Io { source, .. } if is_no_space(source) => 503,
            _ => 500,
        }
    }

    /// The input field at fault, if one is.
    pub fn field(&self) -> Option<String> {
        match self {
            BrokerError::Invalid(v) => Some(v.field.clone()),
            BrokerError::PartitionNotFound { .. } => Some("partition".into()),
            BrokerError::PayloadTooLarge { index, .. } => Some(format!("[{index}]")),
            BrokerError::EventSchema { index, error } => {
                Some(format!("[{index}].{}", error.field()))
            }
            _ => None,
        }
    }

    /// Whether the same request may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        match self {
            BrokerError::Backpressure | BrokerError::Unavailable(_) => true,
            BrokerError::Storage(e) => e.is_retryable(),
            BrokerError::Io { source, .. } => is_no_space(source),
            _ => false,
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        BrokerError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A full disk or quota: the write was refused and may succeed once space is freed.
fn is_no_space(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Backpressure => BrokerError::Backpressure,
            LogError::Closed => BrokerError::ShuttingDown,
            other => BrokerError::Storage(other),
        }
    }
}
