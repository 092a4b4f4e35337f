//! `/v1/schemas`: JSON Schemas per event `type`, versioned, checked for backward
//! compatibility on registration and enforced at publish.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use herald_core::schema::Compatibility;
use serde_json::{json, Value};

use crate::body::LimitedBody;
use crate::error::ApiError;
use crate::AppState;

/// Body: a JSON Schema, or `{"schema": <JSON Schema>, "compatibility": "backward" | "none"}`.
pub async fn register(
    State(state): State<AppState>,
    Path(ty): Path<String>,
    LimitedBody(body): LimitedBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid("body", format!("malformed JSON: {e}")))?;
    let (schema, compatibility) = match &value {
        Value::Object(map) if map.get("schema").is_some_and(Value::is_object) => {
            let compatibility = match map.get("compatibility") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s == "backward" => Some(Compatibility::Backward),
                Some(Value::String(s)) if s == "none" => Some(Compatibility::None),
                Some(_) => {
                    return Err(ApiError::invalid(
                        "compatibility",
                        "must be \"backward\" or \"none\"",
                    ))
                }
            };
            (map["schema"].clone(), compatibility)
        }
        _ => (value, None),
    };
    let registration = state
        .broker
        .register_schema(&ty, &schema, compatibility)
        .await?;
    let status = if registration.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"type": ty, "version": registration.version, "created": registration.created})),
    ))
}

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "schemas": state.broker.list_schemas() }))
}

pub async fn latest(
    State(state): State<AppState>,
    Path(ty): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (version, schema) = state.broker.schema(&ty, None)?;
    Ok(Json(
        json!({"type": ty, "version": version, "schema": schema}),
    ))
}

pub async fn version(
    State(state): State<AppState>,
    Path((ty, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let number: u32 = version.parse().map_err(|_| {
        ApiError::invalid(
            "version",
            format!("must be a positive integer, got {version:?}"),
        )
    })?;
    let (version, schema) = state.broker.schema(&ty, Some(number))?;
    Ok(Json(
        json!({"type": ty, "version": version, "schema": schema}),
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(ty): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_schema(&ty).await?;
    Ok(StatusCode::NO_CONTENT)
}
