//! `/v1/groups`: consumer-group membership, fetch, commit, describe, reset.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use herald_broker::{Assignment, GroupDescription, JoinOptions, OffsetReset, SeekPosition};
use serde_json::{json, Value};

use crate::auth::Access;
use crate::body::LimitedBody;
use crate::error::ApiError;
use crate::events::{records_json, FETCH_DEFAULT_MAX};
use crate::params::{opt_u64, parse_time, wait, QueryMap};
use crate::AppState;
use herald_auth::{Operation, ResourceKind};

fn assignments_json(assignments: &[Assignment]) -> Vec<Value> {
    assignments
        .iter()
        .map(|a| json!({"topic": a.topic, "partition": a.partition}))
        .collect()
}

pub fn description_json(d: &GroupDescription) -> Value {
    json!({
        "name": d.name,
        "generation": d.generation,
        "members": d.members.iter().map(|m| json!({"member_id": m.member_id, "topics": m.topics, "assignments": assignments_json(&m.assignments)})).collect::<Vec<_>>(),
        "offsets": d.offsets.iter().map(|o| json!({"topic": o.topic, "partition": o.partition, "committed": o.committed, "end_offset": o.end_offset, "lag": o.lag})).collect::<Vec<_>>(),
    })
}

/// Parses an optional JSON object body (empty body = `{}`).
fn json_body(body: Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid("body", "must be a JSON object")),
        Err(e) => Err(ApiError::invalid("body", format!("malformed JSON: {e}"))),
    }
}

pub async fn join(
    State(state): State<AppState>,
    Path(group): Path<String>,
    access: Access,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let topics: Vec<String> = match body.get("topics") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid("topics", "must be an array of topic names"))
            })
            .collect::<Result<_, _>>()?,
        Some(Value::String(t)) => vec![t.clone()],
        _ => {
            return Err(ApiError::invalid(
                "topics",
                "is required: an array of topic names",
            ))
        }
    };
    for topic in &topics {
        access.require(ResourceKind::Topic, topic, Operation::Consume)?;
    }
    let mut options = JoinOptions::new(topics);
    if let Some(v) = body.get("session_timeout_ms") {
        let ms = v
            .as_u64()
            .filter(|ms| (100..=3_600_000).contains(ms))
            .ok_or_else(|| {
                ApiError::invalid(
                    "session_timeout_ms",
                    "must be an integer between 100 and 3600000",
                )
            })?;
        options.session_timeout = Duration::from_millis(ms);
    }
    if let Some(v) = body.get("auto_offset_reset") {
        options.auto_offset_reset = match v.as_str() {
            Some("earliest") => OffsetReset::Earliest,
            Some("latest") => OffsetReset::Latest,
            _ => {
                return Err(ApiError::invalid(
                    "auto_offset_reset",
                    "must be \"earliest\" or \"latest\"",
                ))
            }
        };
    }
    let (member_id, generation, assignments) = state.broker.join_group(&group, options).await?;
    Ok(Json(
        json!({"member_id": member_id, "generation": generation, "assignments": assignments_json(&assignments)}),
    ))
}

pub async fn leave(
    State(state): State<AppState>,
    Path((group, member)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.broker.leave_group(&group, &member).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn heartbeat(
    State(state): State<AppState>,
    Path((group, member)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (generation, assignments) = state.broker.heartbeat(&group, &member)?;
    Ok(Json(
        json!({"generation": generation, "assignments": assignments_json(&assignments)}),
    ))
}

pub async fn fetch(
    State(state): State<AppState>,
    Path((group, member)): Path<(String, String)>,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    let max = opt_u64(&query, "max")?.map_or(FETCH_DEFAULT_MAX, |m| m as usize);
    if max == 0 {
        return Err(ApiError::invalid("max", "must be at least 1"));
    }
    let result = state
        .broker
        .fetch_for_member(&group, &member, max, wait(&query)?)
        .await?;
    Ok(Json(json!({
        "generation": result.generation,
        "assignments": assignments_json(&result.assignments),
        "events": records_json(&result.events),
    })))
}

fn parse_offsets(list: &Value) -> Result<Vec<(Assignment, u64)>, ApiError> {
    let Value::Array(items) = list else {
        return Err(ApiError::invalid(
            "offsets",
            "must be an array of {topic, partition, offset}",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let topic = item.get("topic").and_then(Value::as_str);
            let partition = item
                .get("partition")
                .and_then(Value::as_u64)
                .and_then(|p| u32::try_from(p).ok());
            let offset = item.get("offset").and_then(Value::as_u64);
            match (topic, partition, offset) {
                (Some(t), Some(p), Some(o)) => Ok((
                    Assignment {
                        topic: t.to_string(),
                        partition: p,
                    },
                    o,
                )),
                _ => Err(ApiError::invalid(
                    format!("offsets[{i}]"),
                    "needs a string `topic` and non-negative integer `partition` and `offset`",
                )),
            }
        })
        .collect()
}

pub async fn commit(
    State(state): State<AppState>,
    Path((group, member)): Path<(String, String)>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let offsets = body.get("offsets").map(parse_offsets).transpose()?;
    let committed = state
        .broker
        .commit_offsets(&group, &member, offsets)
        .await?;
    let list: Vec<Value> = committed
        .iter()
        .map(|(a, o)| json!({"topic": a.topic, "partition": a.partition, "offset": o}))
        .collect();
    Ok(Json(json!({ "committed": list })))
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let groups: Vec<Value> = state
        .broker
        .list_groups()
        .iter()
        .filter_map(|g| state.broker.describe_group(g).ok())
        .map(|d| description_json(&d))
        .collect();
    Json(json!({ "groups": groups }))
}

pub async fn describe(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(description_json(
        &state.broker.describe_group(&group)?,
    )))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(group): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_group(&group).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn reset(
    State(state): State<AppState>,
    Path(group): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(body)?;
    let topic = body
        .get("topic")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("topic", "is required"))?;
    let to = match body.get("to") {
        Some(Value::String(s)) if s == "earliest" => SeekPosition::Earliest,
        Some(Value::String(s)) if s == "latest" => SeekPosition::Latest,
        Some(Value::Number(n)) => SeekPosition::Offset(
            n.as_u64()
                .ok_or_else(|| ApiError::invalid("to", "offset must be non-negative"))?,
        ),
        Some(Value::Object(o)) if o.contains_key("offset") => SeekPosition::Offset(
            o["offset"]
                .as_u64()
                .ok_or_else(|| ApiError::invalid("to.offset", "must be a non-negative integer"))?,
        ),
        Some(Value::Object(o)) if o.contains_key("time") => {
            SeekPosition::Time(parse_time("to.time", o["time"].as_str().unwrap_or(""))?)
        }
        _ => {
            return Err(ApiError::invalid(
                "to",
                "must be \"earliest\", \"latest\", {\"offset\": N} or {\"time\": RFC3339}",
            ))
        }
    };
    state.broker.reset_group(&group, topic, to).await?;
    Ok(Json(description_json(
        &state.broker.describe_group(&group)?,
    )))
}
