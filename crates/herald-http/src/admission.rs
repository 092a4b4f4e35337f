//! Admission control: a server-wide budget of request-body bytes in flight.
//!
//! Owns: the semaphore every request with a body over [`SMALL_BODY_BYTES`] takes its
//! declared size from (in KiB, rounded up; a body without `Content-Length` takes
//! `max_request_bytes`) before any of it is read, and holds until its response is
//! produced. Small bodies (acks, commits, heartbeats, single events) never wait, so
//! consumers keep their sessions while bulk publishers are held back. When the budget stays exhausted
//! for `inflight_wait`, the request is answered 503 `overloaded` with `Retry-After` and
//! the connection is closed, unread. Invariant: bodies held in memory by handlers never
//! exceed the budget, whatever clients send, so RSS under overload stays bounded.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Bodies up to this size are admitted without taking from the budget (their memory is
/// bounded by the connection count instead).
pub const SMALL_BODY_BYTES: usize = 16 * 1024;

/// The shared budget.
#[derive(Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    total_kib: u32,
    max_request_kib: u32,
    wait: Duration,
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl Admission {
    /// A budget of `max_inflight_bytes` (at least one request of `max_request_bytes`).
    pub fn new(max_inflight_bytes: usize, max_request_bytes: usize, wait: Duration) -> Self {
        let max_request_kib = kib(max_request_bytes).max(1);
        let total_kib = kib(max_inflight_bytes).max(max_request_kib);
        Self {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
            max_request_kib,
            wait,
        }
    }

    /// KiB of the budget free right now (for tests and metrics).
    pub fn available_kib(&self) -> usize {
        self.permits.available_permits()
    }

    /// The budget's size in KiB.
    pub fn total_kib(&self) -> u32 {
        self.total_kib
    }
}

/// Middleware: takes the request's share of the budget, or answers 503.
pub async fn admit(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    let declared = crate::body::declared_length(request.headers());
    let chunked = request
        .headers()
        .get(axum::http::header::TRANSFER_ENCODING)
        .is_some();
    let wanted = match (declared, chunked) {
        (Some(bytes), false) if bytes <= SMALL_BODY_BYTES => 0,
        (Some(bytes), false) => kib(bytes).min(admission.max_request_kib),
        (_, true) => admission.max_request_kib,
        (None, false) => 0,
    };
    if wanted == 0 {
        return next.run(request).await;
    }
    let acquire = Arc::clone(&admission.permits).acquire_many_owned(wanted);
    match tokio::time::timeout(admission.wait, acquire).await {
        Ok(Ok(permit)) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        _ => {
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!(
                    "the server holds {} KiB of request bodies in flight (its limit); retry later",
                    admission.total_kib
                ),
            );
            error.close_connection = true;
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_holds_at_least_one_largest_request() {
        let a = Admission::new(10, 16 * 1024 * 1024, Duration::from_secs(1));
        assert_eq!(a.total_kib(), 16 * 1024);
        let b = Admission::new(64 * 1024 * 1024, 1024, Duration::from_secs(1));
        assert_eq!(b.total_kib(), 64 * 1024);
        assert_eq!(kib(1), 1);
        assert_eq!(kib(1025), 2);
    }
}
