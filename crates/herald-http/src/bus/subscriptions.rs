//! `/v1/subscriptions`: subscription admin, queue operations and dead letters.
//! Shapes are in `docs/http-api.md` ("Subscriptions", "Queues", "Dead letters").

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use herald_bus::{ReceiptOutcome, RedriveSelection};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Access;
use crate::body::LimitedBody;
use crate::bus::{bus, json_body};
use crate::error::ApiError;
use crate::params::{opt_u32, opt_u64, QueryMap};
use crate::AppState;
use herald_auth::{Operation, ResourceKind};

/// Most receipts one ack / nack / extend takes.
pub const RECEIPTS_MAX: usize = 1000;
/// Default messages per pull.
pub const PULL_DEFAULT_MAX: usize = 10;

pub async fn create(
    State(state): State<AppState>,
    access: Access,
    LimitedBody(body): LimitedBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let definition: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("body", format!("is not valid JSON: {e}")))?;
    authorize_create(&access, &definition)?;
    let description = bus(&state)?.create_subscription(definition).await?;
    Ok((StatusCode::CREATED, Json(description)))
}

/// With auth on, creating a subscription needs `create` on its name, `consume` on its
/// source pattern (an ACL pattern must cover the pattern string itself) and `produce`
/// on a target or dead-letter topic. Shape errors are left to the bus's validation.
fn authorize_create(access: &Access, definition: &Value) -> Result<(), ApiError> {
    if access.0.is_none() {
        return Ok(());
    }
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    access.require(
        ResourceKind::Subscription,
        &text(definition.get("name")),
        Operation::Create,
    )?;
    access.require(
        ResourceKind::Topic,
        &text(definition.get("topic")),
        Operation::Consume,
    )?;
    let target = definition.get("target");
    if target.and_then(|t| t.get("type")).and_then(Value::as_str) == Some("topic") {
        access.require(
            ResourceKind::Topic,
            &text(target.and_then(|t| t.get("topic"))),
            Operation::Produce,
        )?;
    }
    if let Some(dlq) = definition.get("dead_letter_topic").and_then(Value::as_str) {
        access.require(ResourceKind::Topic, dlq, Operation::Produce)?;
    }
    Ok(())
}

pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"subscriptions": bus(&state)?.list_subscriptions()}),
    ))
}

pub async fn describe(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(bus(&state)?.describe_subscription(&name)?))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    bus(&state)?.delete_subscription(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    max: Option<usize>,
    visibility_timeout_ms: Option<u64>,
    #[serde(default)]
    wait_ms: u64,
}

pub async fn pull(
    State(state): State<AppState>,
    Path(name): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    let request: PullRequest = json_body(&body)?;
    let max = request.max.unwrap_or(PULL_DEFAULT_MAX);
    if max == 0 {
        return Err(ApiError::invalid("max", "must be at least 1"));
    }
    let messages = bus(&state)?
        .pull(
            &name,
            max,
            request.visibility_timeout_ms,
            Duration::from_millis(request.wait_ms),
        )
        .await?;
    let list: Vec<Value> = messages.iter().map(herald_bus::Message::to_json).collect();
    Ok(Json(json!({ "messages": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptsRequest {
    receipts: Vec<String>,
    #[serde(default)]
    delay_ms: u64,
    reason: Option<String>,
    visibility_timeout_ms: Option<u64>,
}

fn receipts_request(body: &bytes::Bytes) -> Result<ReceiptsRequest, ApiError> {
    let request: ReceiptsRequest = json_body(body)?;
    if request.receipts.is_empty() || request.receipts.len() > RECEIPTS_MAX {
        return Err(ApiError::invalid(
            "receipts",
            format!("give between 1 and {RECEIPTS_MAX} receipts"),
        ));
    }
    Ok(request)
}

fn outcomes_json(outcomes: &[(String, ReceiptOutcome)], counted: ReceiptOutcome) -> Value {
    let results: Vec<Value> = outcomes
        .iter()
        .map(|(receipt, outcome)| json!({"receipt": receipt, "outcome": outcome}))
        .collect();
    let count = outcomes.iter().filter(|(_, o)| *o == counted).count();
    json!({"results": results, "count": count})
}

pub async fn ack(
    State(state): State<AppState>,
    Path(name): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    let request = receipts_request(&body)?;
    let outcomes = bus(&state)?.ack(&name, &request.receipts).await?;
    Ok(Json(outcomes_json(&outcomes, ReceiptOutcome::Acked)))
}

pub async fn nack(
    State(state): State<AppState>,
    Path(name): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    let request = receipts_request(&body)?;
    if request.delay_ms > herald_bus::spec::VISIBILITY_TIMEOUT_MS_MAX {
        return Err(ApiError::invalid(
            "delay_ms",
            format!(
                "must be at most {}",
                herald_bus::spec::VISIBILITY_TIMEOUT_MS_MAX
            ),
        ));
    }
    let outcomes = bus(&state)?
        .nack(
            &name,
            &request.receipts,
            request.delay_ms,
            request.reason.as_deref(),
        )
        .await?;
    let mut out = outcomes_json(&outcomes, ReceiptOutcome::Released);
    out["count"] = json!(outcomes
        .iter()
        .filter(|(_, o)| matches!(
            o,
            ReceiptOutcome::Released | ReceiptOutcome::Delayed | ReceiptOutcome::DeadLettered
        ))
        .count());
    Ok(Json(out))
}

pub async fn extend(
    State(state): State<AppState>,
    Path(name): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    let request = receipts_request(&body)?;
    let visibility = request
        .visibility_timeout_ms
        .ok_or_else(|| ApiError::invalid("visibility_timeout_ms", "is required"))?;
    let outcomes = bus(&state)?
        .extend(&name, &request.receipts, visibility)
        .await?;
    Ok(Json(outcomes_json(&outcomes, ReceiptOutcome::Extended)))
}

pub async fn dead_letters(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    let partition = opt_u32(&query, "partition")?.unwrap_or(0);
    let offset = opt_u64(&query, "offset")?;
    let max = opt_u64(&query, "max")?.map_or(100, |m| m as usize);
    if max == 0 {
        return Err(ApiError::invalid("max", "must be at least 1"));
    }
    let (events, next_offset) = bus(&state)?
        .dead_letters(&name, partition, offset, max)
        .await?;
    Ok(Json(json!({"events": events, "next_offset": next_offset})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    offsets: Option<Vec<u64>>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    partition: u32,
    to_topic: Option<String>,
}

pub async fn redrive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    let request: RedriveRequest = json_body(&body)?;
    let selection = match (request.all, request.offsets) {
        (true, None) => RedriveSelection::All,
        (false, Some(offsets)) if !offsets.is_empty() => RedriveSelection::Offsets(offsets),
        (true, Some(_)) => {
            return Err(ApiError::invalid(
                "all",
                "give `all: true` or `offsets`, not both",
            ))
        }
        _ => {
            return Err(ApiError::invalid(
                "offsets",
                "give a non-empty `offsets` list or `all: true`",
            ))
        }
    };
    let count = bus(&state)?
        .redrive(&name, request.partition, selection, request.to_topic)
        .await?;
    Ok(Json(json!({"redriven": count})))
}
