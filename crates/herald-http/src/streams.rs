//! `/v1/streams/...` and `/v1/categories/...`: the event store over HTTP (see the
//! "Event store" section of `docs/http-api.md`).
//!
//! A thin adapter over [`herald_eventstore::EventStore`]: parse and validate, call,
//! render JSON. A failed expected-version check is a 409 whose body carries
//! `current_version` (top level and inside `error`). Catch-up subscriptions are SSE
//! streams fed through a bounded channel, so a slow client slows its reader down.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use herald_core::CloudEvent;
use herald_eventstore::{
    CatchUpSubscription, Direction, EventStore, EventStoreError, ExpectedVersion, StreamMetadata,
    SubscriptionTarget, ALL_STREAM,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::body::LimitedBody;
use crate::error::ApiError;
use crate::params::{opt_u64, QueryMap};
use crate::AppState;

/// Events returned by one read when `max` is not given.
const READ_EVENTS_DEFAULT: usize = 100;
/// Largest `max` a read accepts.
const READ_EVENTS_MAX: usize = 10_000;
/// Events buffered per SSE connection before the reader waits for the client.
const SSE_BUFFER_EVENTS: usize = 256;
/// The header that may carry the expected version of an append.
pub const EXPECTED_VERSION_HEADER: &str = "herald-expected-version";

type HandlerResult = Result<Response, StreamsError>;

/// An error answer of a streams route: an API error or an event-store error.
#[derive(Debug)]
pub enum StreamsError {
    Api(ApiError),
    Store(EventStoreError),
}

impl From<ApiError> for StreamsError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<EventStoreError> for StreamsError {
    fn from(e: EventStoreError) -> Self {
        Self::Store(e)
    }
}

impl IntoResponse for StreamsError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Store(e) => error_response(e),
        }
    }
}

pub(crate) fn store(state: &AppState) -> Result<&EventStore, StreamsError> {
    state.eventstore.as_ref().ok_or_else(|| {
        StreamsError::Api(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this server runs without an event store",
        ))
    })
}

/// The JSON error answer for an event-store error.
pub fn error_response(error: EventStoreError) -> Response {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(%error, "event store request failed");
    }
    if let EventStoreError::WrongExpectedVersion {
        expected, current, ..
    } = &error
    {
        let body = json!({
            "error": {
                "code": error.code(),
                "message": error.to_string(),
                "current_version": current,
                "expected_version": expected.to_json(),
            },
            "current_version": current,
            "expected_version": expected.to_json(),
        });
        return (status, Json(body)).into_response();
    }
    let mut api = ApiError::new(status, error.code(), error.to_string());
    api.field = error.field();
    api.into_response()
}

fn invalid(field: &str, message: impl Into<String>) -> StreamsError {
    StreamsError::Api(ApiError::invalid(field, message))
}

/// `POST /v1/streams/{stream}`: `{"expected_version"?, "events": [CloudEvent...]}` or a
/// bare array of events; the expected version may also come in `Herald-Expected-Version`.
pub async fn append(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: LimitedBody,
) -> HandlerResult {
    let store = store(&state)?;
    let value: Value = serde_json::from_slice(&body.0)
        .map_err(|e| invalid("body", format!("is not valid JSON: {e}")))?;
    let header = match headers.get(EXPECTED_VERSION_HEADER) {
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| invalid("expected_version", "header is not ASCII"))?;
            Some(ExpectedVersion::parse(text)?)
        }
        None => None,
    };
    let (in_body, events) = match value {
        Value::Array(events) => (None, events),
        Value::Object(mut object) => {
            let expected = match object.remove("expected_version") {
                Some(v) => Some(ExpectedVersion::from_json(&v)?),
                None => None,
            };
            match object.remove("events") {
                Some(Value::Array(events)) => (expected, events),
                Some(_) => return Err(invalid("events", "must be an array of CloudEvents")),
                None => return Err(invalid("events", "is missing")),
            }
        }
        _ => return Err(invalid("body", "must be an object or an array of events")),
    };
    let expected = match (header, in_body) {
        (Some(h), Some(b)) if h != b => {
            return Err(invalid(
                "expected_version",
                "the header and the body disagree",
            ))
        }
        (h, b) => h.or(b).unwrap_or(ExpectedVersion::Any),
    };
    let events = events
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            CloudEvent::from_json_value(v)
                .map_err(|e| invalid(&format!("events[{i}].{}", e.field), e.message))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let result = store.append(&stream, expected, events).await?;
    Ok(Json(result).into_response())
}

fn read_params(query: &QueryMap) -> Result<(Direction, Option<u64>, usize), StreamsError> {
    let direction = match query.get("direction") {
        Some(d) => Direction::parse(d)?,
        None => Direction::Forwards,
    };
    let from = match query.get("from").map(String::as_str) {
        None => None,
        Some("start") => Some(0),
        Some("end") => Some(u64::MAX),
        Some(_) => opt_u64(query, "from")?,
    };
    let max = match opt_u64(query, "max")? {
        None => READ_EVENTS_DEFAULT,
        Some(m) if m as usize > READ_EVENTS_MAX => {
            return Err(invalid("max", format!("must be at most {READ_EVENTS_MAX}")))
        }
        Some(m) => m as usize,
    };
    Ok((direction, from, max))
}

/// `GET /v1/streams/{stream}?from=&direction=&max=` (and `GET /v1/streams/$all`).
pub async fn read(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    Query(query): Query<QueryMap>,
) -> HandlerResult {
    let store = store(&state)?;
    let (direction, from, max) = read_params(&query)?;
    let from = from.unwrap_or(match direction {
        Direction::Forwards => 0,
        Direction::Backwards => u64::MAX,
    });
    let all = stream == ALL_STREAM;
    let events = if all {
        store.read_all(from, max, direction)
    } else {
        store.read_stream(&stream, from, max, direction)
    }?;
    // Where the next page starts: a version for a stream, a position for `$all`.
    let key = |e: &herald_eventstore::RecordedEvent| if all { e.position } else { e.version };
    let next = match (direction, events.last()) {
        (_, None) => None,
        (Direction::Forwards, Some(last)) => Some(key(last) + 1),
        (Direction::Backwards, Some(last)) => key(last).checked_sub(1),
    };
    let body = json!({
        "stream": stream,
        "direction": direction.as_str(),
        "events": events.iter().map(herald_eventstore::RecordedEvent::to_json).collect::<Vec<_>>(),
        "next": next,
        "end_position": store.end_position(),
    });
    Ok(Json(body).into_response())
}

/// `GET /v1/streams?after=&max=`: existing streams, sorted by name.
pub async fn list(State(state): State<AppState>, Query(query): Query<QueryMap>) -> HandlerResult {
    let store = store(&state)?;
    let max = match opt_u64(&query, "max")? {
        None => 1000,
        Some(m) if m as usize > READ_EVENTS_MAX => {
            return Err(invalid("max", format!("must be at most {READ_EVENTS_MAX}")))
        }
        Some(m) => m as usize,
    };
    let streams = store.list_streams(query.get("after").map(String::as_str), max);
    Ok(Json(json!({ "streams": streams })).into_response())
}

/// `GET /v1/streams/{stream}/metadata`.
pub async fn get_metadata(
    State(state): State<AppState>,
    Path(stream): Path<String>,
) -> HandlerResult {
    let store = store(&state)?;
    let description = store.describe_stream(&stream)?;
    Ok(Json(description).into_response())
}

/// `PUT /v1/streams/{stream}/metadata` with `{"max_age_ms"?, "max_count"?}`.
pub async fn put_metadata(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    body: LimitedBody,
) -> HandlerResult {
    let store = store(&state)?;
    let metadata: StreamMetadata =
        serde_json::from_slice(&body.0).map_err(|e| invalid("metadata", format!("{e}")))?;
    let description = store.set_metadata(&stream, metadata).await?;
    Ok(Json(description).into_response())
}

/// `DELETE /v1/streams/{stream}?hard=true&expected_version=`: soft delete, or a
/// tombstone with `hard=true`.
pub async fn delete(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    Query(query): Query<QueryMap>,
) -> HandlerResult {
    let store = store(&state)?;
    let hard = match query.get("hard").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(invalid(
                "hard",
                format!("must be true or false, got {other:?}"),
            ))
        }
    };
    let expected = match query.get("expected_version") {
        Some(v) => ExpectedVersion::parse(v)?,
        None => ExpectedVersion::Any,
    };
    let position = store.delete_stream(&stream, expected, hard).await?;
    Ok(Json(json!({"stream": stream, "hard": hard, "position": position})).into_response())
}

/// `PUT /v1/streams/{stream}/snapshot` with `{"version": N, "data": JSON}`.
pub async fn put_snapshot(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    body: LimitedBody,
) -> HandlerResult {
    let store = store(&state)?;
    let value: Value = serde_json::from_slice(&body.0)
        .map_err(|e| invalid("body", format!("is not valid JSON: {e}")))?;
    let version = value
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("version", "must be a non-negative integer"))?;
    let data = value
        .get("data")
        .cloned()
        .ok_or_else(|| invalid("data", "is missing"))?;
    store.save_snapshot(&stream, version, data).await?;
    Ok(Json(json!({"stream": stream, "version": version})).into_response())
}

/// `GET /v1/streams/{stream}/snapshot`: `{"snapshot": {...} | null}`.
pub async fn get_snapshot(
    State(state): State<AppState>,
    Path(stream): Path<String>,
) -> HandlerResult {
    let store = store(&state)?;
    let snapshot = store.load_snapshot(&stream).await?;
    Ok(Json(json!({ "snapshot": snapshot })).into_response())
}

/// `GET /v1/streams/{stream}/subscribe?from=` (`$all` for every stream): a catch-up
/// subscription as SSE. `from` is the exclusive `$all` position to start after
/// (absent: the beginning; `end`: only new events).
pub async fn subscribe_stream(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StreamsError> {
    let target = if stream == ALL_STREAM {
        SubscriptionTarget::All
    } else {
        SubscriptionTarget::Stream(stream)
    };
    subscribe(&state, target, &query)
}

/// `GET /v1/categories/{category}/subscribe?from=`: every stream named `{category}-...`.
pub async fn subscribe_category(
    State(state): State<AppState>,
    Path(category): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StreamsError> {
    subscribe(&state, SubscriptionTarget::Category(category), &query)
}

fn subscribe(
    state: &AppState,
    target: SubscriptionTarget,
    query: &QueryMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StreamsError> {
    let store = store(state)?;
    let from = match query.get("from").map(String::as_str) {
        None | Some("start") => None,
        Some("end") => store.end_position().checked_sub(1),
        Some(_) => opt_u64(query, "from")?,
    };
    let subscription = store.subscribe(target, from)?;
    let (tx, rx) = mpsc::channel(SSE_BUFFER_EVENTS);
    tokio::spawn(pump(subscription, tx));
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    ))
}

async fn pump(mut subscription: CatchUpSubscription, tx: mpsc::Sender<Result<Event, Infallible>>) {
    loop {
        let next = tokio::select! {
            next = subscription.next() => next,
            () = tx.closed() => return,
        };
        let event = match next {
            Ok(recorded) => Event::default()
                .id(recorded.position.to_string())
                .event("event")
                .data(recorded.to_json().to_string()),
            Err(error) => {
                let _ = tx
                    .send(Ok(Event::default().event("error").data(error.to_string())))
                    .await;
                return;
            }
        };
        if tx.send(Ok(event)).await.is_err() {
            return;
        }
    }
}
