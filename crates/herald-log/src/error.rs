//! [`LogError`]: every way a [`crate::PartitionLog`] operation can fail.
//!
//! Owns: the storage layer's error enum and the rule for which errors a caller may
//! retry ([`LogError::is_retryable`]). Codec-level failures ([`crate::batch::BatchError`])
//! never reach a caller directly: the log reports them as [`LogError::Corrupt`]
//! (stored bytes) or as [`LogError::EmptyBatch`] / [`LogError::BatchTooLarge`] (input).

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// A failure of a [`crate::PartitionLog`] operation.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file-system operation failed.
    #[error("storage I/O failed: {op} `{}`: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The partition's writer queue is full; retry later.
    #[error("the partition is busy (its write queue is full); retry shortly")]
    Backpressure,
    /// The batch's encoded size exceeds `LogConfig::batch_bytes_max`.
    #[error("batch of {size} bytes exceeds the {max}-byte limit")]
    BatchTooLarge { size: u64, max: u64 },
    /// An append carried no records.
    #[error("a batch must contain at least one record")]
    EmptyBatch,
    /// Stored data failed verification; it is never returned to a reader.
    #[error("corrupt log data in `{}` at byte {position}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// A read or lookup asked for an offset outside `[start, end]`.
    #[error("offset {requested} is out of range: the log holds offsets {start}..{end}")]
    OffsetOutOfRange {
        requested: u64,
        start: u64,
        end: u64,
    },
    /// The log is closed or shutting down.
    #[error("the log is closed")]
    Closed,
    /// An earlier write or fsync failed, so the log refuses further writes; reads still work.
    #[error("the log refuses writes after an earlier storage failure: {0}")]
    Poisoned(String),
    /// `LogConfig` holds a value the log cannot work with.
    #[error("invalid log configuration: `{field}` {reason}")]
    InvalidConfig { field: &'static str, reason: String },
}

impl LogError {
    /// Whether the same request may succeed if retried later: the writer queue was
    /// full, or the disk was full (the log rolled the failed write back).
    pub fn is_retryable(&self) -> bool {
        match self {
            LogError::Backpressure => true,
            LogError::Io { source, .. } => is_no_space(source),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        LogError::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }
}

impl LogError {
    /// A copy of this error, for replying the same failure to several requests.
    pub(crate) fn duplicate(&self) -> LogError {
        match self {
            LogError::Io { op, path, source } => LogError::Io {
                op,
                path: path.clone(),
                source: copy_io_error(source),
            },
            LogError::Backpressure => LogError::Backpressure,
            LogError::BatchTooLarge { size, max } => LogError::BatchTooLarge {
                size: *size,
                max: *max,
            },
            LogError::EmptyBatch => LogError::EmptyBatch,
            LogError::Corrupt {
                path,
                position,
                reason,
            } => LogError::corrupt(path.clone(), *position, reason.clone()),
            LogError::OffsetOutOfRange {
                requested,
                start,
                end,
            } => LogError::OffsetOutOfRange {
                requested: *requested,
                start: *start,
                end: *end,
            },
            LogError::Closed => LogError::Closed,
            LogError::Poisoned(reason) => LogError::Poisoned(reason.clone()),
            LogError::InvalidConfig { field, reason } => LogError::InvalidConfig {
                field,
                reason: reason.clone(),
            },
        }
    }
}

/// Whether `error` means the disk (or the user's quota) is full: the one write
/// failure the log survives without poisoning itself.
pub(crate) fn is_no_space(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// A copy of `error` (io::Error is not `Clone`) for replying to several requests.
pub(crate) fn copy_io_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors() {
        assert!(LogError::Backpressure.is_retryable());
        let full = LogError::io("write", "/x", io::Error::from(io::ErrorKind::StorageFull));
        assert!(full.is_retryable());
        let other = LogError::io(
            "write",
            "/x",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(!other.is_retryable());
        assert!(!LogError::Closed.is_retryable());
        assert!(!LogError::Poisoned("fsync failed".into()).is_retryable());
    }

    #[test]
    fn messages_name_the_problem() {
        let e = LogError::OffsetOutOfRange {
            requested: 9,
            start: 0,
            end: 5,
        };
        assert_eq!(
            e.to_string(),
            "offset 9 is out of range: the log holds offsets 0..5"
        );
        let e = LogError::BatchTooLarge { size: 20, max: 10 };
        assert_eq!(e.to_string(), "batch of 20 bytes exceeds the 10-byte limit");
        let copied = copy_io_error(&io::Error::from_raw_os_error(28));
        assert_eq!(copied.kind(), io::ErrorKind::StorageFull);
    }
}
