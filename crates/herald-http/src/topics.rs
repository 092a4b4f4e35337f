//! `/v1/topics`: create, list, describe, delete.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use herald_broker::metadata::TopicMeta;
use herald_broker::record::format_time_ms;
use herald_broker::{Broker, TopicConfig};
use serde_json::{json, Value};

use crate::auth::Access;
use crate::body::LimitedBody;
use crate::error::ApiError;
use crate::params::QueryMap;
use crate::AppState;
use herald_auth::{Operation, ResourceKind};

/// JSON description of a topic with live partition stats.
pub fn describe_json(broker: &Broker, meta: &TopicMeta) -> Value {
    let stats: Vec<Value> = broker
        .topic_stats(&meta.name)
        .unwrap_or_default()
        .into_iter()
        .map(|s| json!({"partition": s.partition, "start_offset": s.start_offset, "end_offset": s.end_offset, "size_bytes": s.size_bytes}))
        .collect();
    json!({
        "name": meta.name,
        "partitions": meta.config.partitions,
        "config": meta.config,
        "created_at": format_time_ms(meta.created_at_ms),
        "partition_stats": stats,
    })
}

pub async fn create(
    State(state): State<AppState>,
    access: Access,
    LimitedBody(body): LimitedBody,
) -> Result<impl IntoResponse, ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("body", format!("malformed JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::invalid(
            "body",
            "must be a JSON object like {\"name\": \"orders\", \"partitions\": 3}",
        ));
    };
    let name = match map.remove("name") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ApiError::invalid("name", "must be a string")),
        None => return Err(ApiError::invalid("name", "is required")),
    };
    if name.starts_with("__") {
        return Err(ApiError::invalid(
            "name",
            "names starting with `__` are reserved for Herald's internal topics",
        ));
    }
    access.require(ResourceKind::Topic, &name, Operation::Create)?;
    map.retain(|_, v| !v.is_null());
    // Check each setting alone first, so the error names the bad one.
    for (key, value) in &map {
        let single = json!({ key.clone(): value.clone() });
        serde_json::from_value::<TopicConfig>(single)
            .map_err(|e| ApiError::invalid(key.clone(), e.to_string()))?;
    }
    let config: TopicConfig = serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::invalid("body", e.to_string()))?;
    let meta = state.broker.create_topic(&name, config).await?;
    Ok((
        StatusCode::CREATED,
        Json(describe_json(&state.broker, &meta)),
    ))
}

/// Lists topics; internal ones (`__` prefix) only with `?internal=true`.
/// With auth on, only topics the caller has some right on are listed.
pub async fn list(
    State(state): State<AppState>,
    access: Access,
    Query(query): Query<QueryMap>,
) -> Json<Value> {
    let internal = query.get("internal").is_some_and(|v| v == "true");
    state.broker.refresh_stats(None).await;
    let topics: Vec<Value> = state
        .broker
        .list_topics()
        .iter()
        .filter(|m| internal || !m.name.starts_with("__"))
        .filter(|m| access.can_see(ResourceKind::Topic, &m.name))
        .map(|m| describe_json(&state.broker, m))
        .collect();
    Json(json!({ "topics": topics }))
}

pub async fn describe(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let topic = state.broker.topic(&topic)?;
    state.broker.refresh_stats(Some(topic.name())).await;
    Ok(Json(describe_json(&state.broker, &topic.meta)))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    reject_internal(&topic)?;
    state.broker.delete_topic(&topic).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Internal topics (`__` prefix: delayed events, subscription queues) are read-only over
/// the API: their owners inside Herald write and delete them.
pub fn reject_internal(topic: &str) -> Result<(), ApiError> {
    if topic.starts_with("__") {
        return Err(ApiError::invalid(
            "topic",
            format!("`{topic}` is an internal topic: it can be read but not written or deleted"),
        ));
    }
    Ok(())
}
