//! `/v1/persistent/...`: persistent subscriptions of the event store over HTTP (see
//! "Persistent subscriptions" in `docs/http-api.md`).
//!
//! A thin adapter over the [`herald_eventstore::EventStore`] persistent-subscription
//! calls: parse and validate the JSON body, call, render JSON. Errors are the event
//! store's (`404 subscription_not_found`, `409 subscription_exists`, `400`).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_eventstore::persistent::{READ_EVENTS_MAX, READ_WAIT_MAX, RECEIPTS_MAX};
use herald_eventstore::{
    CreatePersistent, NackAction, ParkedEvent, PersistentEvent, ReceiptOutcome,
};
use serde_json::{json, Map, Value};

use crate::body::LimitedBody;
use crate::params::{opt_u64, QueryMap};
use crate::streams::{store, StreamsError};
use crate::AppState;

type HandlerResult = Result<Response, StreamsError>;

/// Parked events listed per request when `max` is not given.
const PARKED_PAGE_DEFAULT: usize = 100;

/// The routes, merged into the streams router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/persistent", get(list).post(create))
        .route("/v1/persistent/{group}", get(info).delete(delete))
        .route("/v1/persistent/{group}/read", post(read))
        .route("/v1/persistent/{group}/ack", post(ack))
        .route("/v1/persistent/{group}/nack", post(nack))
        .route("/v1/persistent/{group}/parked", get(parked))
        .route("/v1/persistent/{group}/parked/replay", post(replay))
}

fn invalid(field: &str, message: impl Into<String>) -> StreamsError {
    StreamsError::Api(crate::error::ApiError::invalid(field, message))
}

/// The body as a JSON object (an empty body is `{}`).
fn object(body: &LimitedBody) -> Result<Map<String, Value>, StreamsError> {
    if body.0.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(&body.0) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("body", "must be a JSON object")),
        Err(e) => Err(invalid("body", format!("is not valid JSON: {e}"))),
    }
}

fn only_fields(body: &Map<String, Value>, allowed: &[&str]) -> Result<(), StreamsError> {
    match body.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(invalid(unknown, "unknown field")),
        None => Ok(()),
    }
}

fn opt_number(body: &Map<String, Value>, name: &str) -> Result<Option<u64>, StreamsError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(name, "must be a non-negative integer")),
    }
}

fn receipts(body: &Map<String, Value>) -> Result<Vec<String>, StreamsError> {
    let Some(Value::Array(items)) = body.get("receipts") else {
        return Err(invalid("receipts", "must be an array of receipt strings"));
    };
    if items.is_empty() || items.len() > RECEIPTS_MAX {
        return Err(invalid(
            "receipts",
            format!("must hold 1..={RECEIPTS_MAX} receipts"),
        ));
    }
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid("receipts", "must be an array of receipt strings"))
        })
        .collect()
}

fn outcomes_json(outcomes: &[(String, ReceiptOutcome)]) -> Value {
    let results: Vec<Value> = outcomes
        .iter()
        .map(|(receipt, outcome)| json!({"receipt": receipt, "outcome": outcome}))
        .collect();
    json!({ "results": results })
}

/// `POST /v1/persistent` body `{"group", "target", "start"?, "visibility_timeout_ms"?,
/// "max_retries"?}` → `201` with the group's info.
/// With auth on: `create` on the group and `consume` on the target stream (`$all` and
/// category targets are matched as names, so an ACL must cover the pattern itself).
pub async fn create(
    State(state): State<AppState>,
    access: crate::auth::Access,
    body: LimitedBody,
) -> HandlerResult {
    let store = store(&state)?;
    let value = Value::Object(object(&body)?);
    let text = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
    access.require(
        herald_auth::ResourceKind::Group,
        text("group"),
        herald_auth::Operation::Create,
    )?;
    access.require(
        herald_auth::ResourceKind::Stream,
        text("target"),
        herald_auth::Operation::Consume,
    )?;
    let request = CreatePersistent::from_json(&value)?;
    let info = store.create_persistent(request).await?;
    Ok((StatusCode::CREATED, Json(info.to_json())).into_response())
}

/// `GET /v1/persistent` → `{"subscriptions": [info...]}`.
pub async fn list(State(state): State<AppState>) -> HandlerResult {
    let store = store(&state)?;
    let infos: Vec<Value> = store
        .list_persistent()?
        .iter()
        .map(herald_eventstore::PersistentInfo::to_json)
        .collect();
    Ok(Json(json!({ "subscriptions": infos })).into_response())
}

/// `GET /v1/persistent/{group}` → the group's settings, checkpoint and counts.
pub async fn info(State(state): State<AppState>, Path(group): Path<String>) -> HandlerResult {
    let store = store(&state)?;
    Ok(Json(store.persistent_info(&group)?.to_json()).into_response())
}

/// `DELETE /v1/persistent/{group}` → `{"group", "deleted": true}`.
pub async fn delete(State(state): State<AppState>, Path(group): Path<String>) -> HandlerResult {
    let store = store(&state)?;
    store.delete_persistent(&group).await?;
    Ok(Json(json!({"group": group, "deleted": true})).into_response())
}

/// `POST /v1/persistent/{group}/read` body `{"max"?, "visibility_timeout_ms"?,
/// "wait_ms"?}` → `{"events": [{"receipt", "delivery_count", "event"}...]}`.
pub async fn read(
    State(state): State<AppState>,
    Path(group): Path<String>,
    body: LimitedBody,
) -> HandlerResult {
    let store = store(&state)?;
    let body = object(&body)?;
    only_fields(&body, &["max", "visibility_timeout_ms", "wait_ms"])?;
    let max = match opt_number(&body, "max")? {
        None => 10,
        Some(m) if m == 0 || m > READ_EVENTS_MAX as u64 => {
            return Err(invalid("max", format!("must be 1..={READ_EVENTS_MAX}")))
        }
        Some(m) => m as usize,
    };
    let wait_ms = opt_number(&body, "wait_ms")?.unwrap_or(0);
    if wait_ms > READ_WAIT_MAX.as_millis() as u64 {
        return Err(invalid(
            "wait_ms",
            format!("must be at most {}", READ_WAIT_MAX.as_millis()),
        ));
    }
    let visibility = opt_number(&body, "visibility_timeout_ms")?;
    let events = store
        .read_persistent(&group, max, visibility, Duration::from_millis(wait_ms))
        .await?;
    let events: Vec<Value> = events.iter().map(PersistentEvent::to_json).collect();
    Ok(Json(json!({ "events": events })).into_response())
}

/// `POST /v1/persistent/{group}/ack` body `{"receipts": [...]}`.
pub async fn ack(
    State(state): State<AppState>,
    Path(group): Path<String>,
    body: LimitedBody,
) -> HandlerResult {
    let store = store(&state)?;
    let body = object(&body)?;
    only_fields(&body, &["receipts"])?;
    let receipts = receipts(&body)?;
    let outcomes = store.ack_persistent(&group, &receipts).await?;
    Ok(Json(outcomes_json(&outcomes)).into_response())
}

/// `POST /v1/persistent/{group}/nack` body `{"receipts": [...], "action"?: "retry" |
/// "park" | "skip", "delay_ms"?, "reason"?}`.
pub async fn nack(
    State(state): State<AppState>,
    Path(group): Path<String>,
    body: LimitedBody,
) -> HandlerResult {
    let store = store(&state)?;
    let body = object(&body)?;
    only_fields(&body, &["receipts", "action", "delay_ms", "reason"])?;
    let receipts = receipts(&body)?;
    let delay_ms = opt_number(&body, "delay_ms")?.unwrap_or(0);
    let action = match body.get("action") {
        None | Some(Value::Null) => NackAction::Retry { delay_ms },
        Some(Value::String(a)) => NackAction::parse(a, delay_ms)?,
        Some(_) => return Err(invalid("action", "must be `retry`, `park` or `skip`")),
    };
    let reason = match body.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => Some(r.as_str()),
        Some(_) => return Err(invalid("reason", "must be a string")),
    };
    let outcomes = store
        .nack_persistent(&group, &receipts, action, reason)
        .await?;
    Ok(Json(outcomes_json(&outcomes)).into_response())
}

/// `GET /v1/persistent/{group}/parked?from=&max=` → `{"parked": [...], "next"}`.
pub async fn parked(
    State(state): State<AppState>,
    Path(group): Path<String>,
    Query(query): Query<QueryMap>,
) -> HandlerResult {
    let store = store(&state)?;
    let from = opt_u64(&query, "from")?.unwrap_or(0);
    let max = match opt_u64(&query, "max")? {
        None => PARKED_PAGE_DEFAULT,
        Some(m) if m == 0 || m > READ_EVENTS_MAX as u64 => {
            return Err(invalid("max", format!("must be 1..={READ_EVENTS_MAX}")))
        }
        Some(m) => m as usize,
    };
    let parked = store.list_parked(&group, from, max)?;
    let next = parked.last().map(|p| p.parked_index + 1);
    let parked: Vec<Value> = parked.iter().map(ParkedEvent::to_json).collect();
    Ok(Json(json!({ "parked": parked, "next": next })).into_response())
}

/// `POST /v1/persistent/{group}/parked/replay` → `{"replayed": n}`.
pub async fn replay(State(state): State<AppState>, Path(group): Path<String>) -> HandlerResult {
    let store = store(&state)?;
    let replayed = store.replay_parked(&group).await?;
    Ok(Json(json!({ "replayed": replayed })).into_response())
}
