//! [`LimitedBody`]: the request body, read up to the configured limit.
//!
//! Over the limit, the rest of the body is drained (up to [`DRAIN_BYTES_MAX`], within
//! [`DRAIN_TIME_MAX`]) before the 413 goes out with `connection: close`, so a client
//! still writing its body reads the error instead of a connection reset. A body that
//! does not arrive within `HttpOptions::body_timeout` is a 408 (slow-body clients hold
//! no server resources for longer than that).

use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use crate::error::ApiError;
use crate::AppState;

/// Most bytes drained from an oversized body before the connection is dropped.
pub const DRAIN_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Longest time spent draining an oversized body.
pub const DRAIN_TIME_MAX: Duration = Duration::from_secs(30);

/// A whole request body no larger than `HttpOptions::max_request_bytes`.
pub struct LimitedBody(pub Bytes);

/// The `Content-Length` a request declares, if any (and if it parses).
pub fn declared_length(headers: &axum::http::HeaderMap) -> Option<usize> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

impl FromRequest<AppState> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.options.max_request_bytes;
        let declared = declared_length(request.headers());
        let deadline = tokio::time::Instant::now() + state.options.body_timeout;
        let mut stream = request.into_body().into_data_stream();
        let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, stream.next()).await else {
                let mut e = ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    format!(
                        "the request body did not arrive within {} ms",
                        state.options.body_timeout.as_millis()
                    ),
                );
                e.close_connection = true;
                return Err(e);
            };
            let Some(chunk) = next else { break };
            let chunk = chunk
                .map_err(|e| ApiError::invalid("body", format!("could not read the body: {e}")))?;
            if buffer.len() + chunk.len() > limit {
                drain(stream, buffer.len() + chunk.len()).await;
                return Err(too_large(limit));
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(LimitedBody(buffer.freeze()))
    }
}

async fn drain(mut stream: axum::body::BodyDataStream, mut seen: usize) {
    let deadline = Instant::now() + DRAIN_TIME_MAX;
    while seen < DRAIN_BYTES_MAX {
        match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Ok(Some(Ok(chunk))) => seen += chunk.len(),
            _ => return,
        }
    }
}

fn too_large(limit: usize) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is over the limit of {limit} bytes"),
    );
    e.close_connection = true;
    e
}
