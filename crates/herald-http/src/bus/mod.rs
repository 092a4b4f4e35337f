//! The event-bus routes (`/v1/subscriptions/...`, `/v1/filters/test`): a thin adapter
//! over [`herald_bus::Bus`].
//!
//! - [`subscriptions`]: create, list, describe, delete; queue pull / ack / nack /
//!   extend; dead-letter listing and redrive.
//! - [`push`]: a stream subscription as Server-Sent Events or WebSocket messages.
//! - [`filters`]: try a filter pattern against a sample event.

pub mod filters;
pub mod push;
pub mod subscriptions;

use axum::http::StatusCode;
use bytes::Bytes;
use herald_bus::{Bus, BusError};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::AppState;

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "bus request failed");
        }
        let message = match &e {
            BusError::Invalid(v) => format!("invalid `{}`: {}", v.field, v.message),
            other => other.to_string(),
        };
        Self {
            status,
            code: e.code(),
            message,
            field: e.field(),
            close_connection: false,
        }
    }
}

/// The bus, or 503 when this server runs without one.
pub(crate) fn bus(state: &AppState) -> Result<&Bus, ApiError> {
    state.bus.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the event bus is not running on this server",
        )
    })
}

/// Parses a JSON body into `T`; an empty body is `{}`.
pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|e| ApiError::invalid("body", e.to_string()))
}
