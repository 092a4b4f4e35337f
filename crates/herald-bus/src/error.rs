//! [`BusError`]: every way a bus operation fails, with a stable `code()`, the HTTP
//! status front-ends map it to, and the input field at fault when there is one.

use herald_broker::BrokerError;
use herald_core::ValidationError;
use herald_log::LogError;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BusError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("subscription `{0}` does not exist")]
    SubscriptionNotFound(String),
    #[error("subscription `{0}` already exists")]
    SubscriptionExists(String),
    /// The operation needs another target kind (e.g. pull on a webhook subscription).
    #[error("subscription `{name}` has target `{target}`; this operation needs {needs}")]
    WrongTarget {
        name: String,
        target: &'static str,
        needs: &'static str,
    },
    #[error("the broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("storage: {0}")]
    Storage(#[from] LogError),
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the event bus is shutting down")]
    ShuttingDown,
}

impl BusError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        BusError::Invalid(ValidationError::new(field, message))
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        BusError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BusError::Invalid(_) => "invalid_argument",
            BusError::SubscriptionNotFound(_) => "subscription_not_found",
            BusError::SubscriptionExists(_) => "subscription_exists",
            BusError::WrongTarget { .. } => "wrong_target",
            BusError::Broker(e) => e.code(),
            BusError::Storage(LogError::Backpressure) => "backpressure",
            BusError::Storage(LogError::Closed) | BusError::ShuttingDown => "unavailable",
            BusError::Storage(_) | BusError::Io { .. } => "internal",
        }
    }

    /// The HTTP status this error maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            BusError::Invalid(_) => 400,
            BusError::SubscriptionNotFound(_) => 404,
            BusError::SubscriptionExists(_) | BusError::WrongTarget { .. } => 409,
            BusError::Broker(e) => e.http_status(),
            BusError::Storage(LogError::Backpressure) => 429,
            BusError::Storage(LogError::Closed) | BusError::ShuttingDown => 503,
            BusError::Storage(e) if e.is_retryable() => 503,
            BusError::Storage(_) | BusError::Io { .. } => 500,
        }
    }

    /// The input field at fault, if one is.
    pub fn field(&self) -> Option<String> {
        match self {
            BusError::Invalid(v) => Some(v.field.clone()),
            BusError::Broker(e) => e.field(),
            _ => None,
        }
    }

    /// Whether the same request may succeed later (backpressure, disk full).
    pub fn is_retryable(&self) -> bool {
        match self {
            BusError::Broker(e) => e.is_retryable(),
            BusError::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }
}
