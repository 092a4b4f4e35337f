//! The SDK's error: the server's `{code, message}` or a transport failure.

use herald_broker::BrokerError;
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
            _ => None,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Api { status, .. } => *status == 429 || *status == 503,
            ClientError::Transport(_) => true,
            ClientError::Protocol(_) => false,
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
