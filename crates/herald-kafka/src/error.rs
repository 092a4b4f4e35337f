//! Errors of the Kafka adapter and the mapping of broker errors to Kafka error codes.
//!
//! Owns: [`EncodeError`] (a response that can not be encoded: a bug, logged and the
//! connection closed) and [`kafka_code`], the one place that decides which Kafka error
//! code a [`BrokerError`] becomes.

use herald_broker::BrokerError;
use kafka_protocol::ResponseError;
use thiserror::Error;

/// A response could not be encoded (a bug: every field is set for its version).
#[derive(Debug, Error)]
pub enum EncodeError {
    #[error("encoding a response: {0}")]
    Encode(String),
    #[error("response of {size} bytes is too large for a frame")]
    TooLarge { size: usize },
}

impl EncodeError {
    pub(crate) fn encode(e: impl std::fmt::Display) -> Self {
        EncodeError::Encode(e.to_string())
    }
}

/// The Kafka error code a broker error becomes. Retriable conditions map to retriable
/// Kafka codes so clients retry them by themselves.
pub fn kafka_code(error: &BrokerError) -> i16 {
    let e = match error {
        BrokerError::TopicNotFound(_) | BrokerError::PartitionNotFound { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        BrokerError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        BrokerError::Invalid(_) => ResponseError::InvalidRecord,
        BrokerError::PayloadTooLarge { .. } => ResponseError::MessageTooLarge,
        BrokerError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // Retriable: the client backs off and sends the same batch again.
        BrokerError::Backpressure => ResponseError::RequestTimedOut,
        // Retriable: the client refreshes metadata and retries (against the restarted server).
        BrokerError::ShuttingDown => ResponseError::NotLeaderOrFollower,
        // Retriable: the storage backend (JetStream) is unreachable for now.
        BrokerError::Unavailable(_) => ResponseError::KafkaStorageError,
        BrokerError::Storage(e) if e.is_retryable() => ResponseError::KafkaStorageError,
        // Stored data failed its CRC or offset checks: never served.
        BrokerError::Storage(herald_log::LogError::Corrupt { .. }) => ResponseError::CorruptMessage,
        BrokerError::Storage(herald_log::LogError::BatchTooLarge { .. }) => {
            ResponseError::RecordListTooLarge
        }
        BrokerError::Storage(_) | BrokerError::Io { .. } => ResponseError::KafkaStorageError,
        BrokerError::GroupNotFound(_) => ResponseError::GroupIdNotFound,
        BrokerError::MemberNotFound { .. } => ResponseError::UnknownMemberId,
        BrokerError::GroupNotEmpty(_) => ResponseError::NonEmptyGroup,
        BrokerError::NotAssigned { .. } => ResponseError::RebalanceInProgress,
        _ => ResponseError::UnknownServerError,
    };
    e.code()
}

/// `code` of a Kafka error, for brevity at call sites.
pub const fn code(e: ResponseError) -> i16 {
    e.code()
}
