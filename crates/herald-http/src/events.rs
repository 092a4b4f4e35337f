//! `POST/GET /v1/topics/{topic}/events`: publish (structured, batch, binary mode) and fetch.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use herald_broker::{EventRecord, SeekPosition};
use herald_core::event::is_json_media_type;
use herald_core::CloudEvent;
use serde_json::{json, Value};

use crate::body::LimitedBody;
use crate::error::ApiError;
use crate::params::{opt_u32, opt_u64, seek, wait, QueryMap};
use crate::AppState;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";
/// Default number of events one fetch returns.
pub const FETCH_DEFAULT_MAX: usize = 100;

/// Turns a request into events according to its content mode.
pub fn events_from_request(headers: &HeaderMap, body: Bytes) -> Result<Vec<CloudEvent>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if headers.contains_key("ce-specversion") {
        let ce_headers: Vec<(String, String)> = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("ce-"))
            .map(|(name, value)| {
                value
                    .to_str()
                    .map(|v| (name.as_str().to_string(), v.to_string()))
                    .map_err(|_| {
                        ApiError::invalid(
                            name.as_str().trim_start_matches("ce-"),
                            "header value must be visible ASCII",
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let event = CloudEvent::from_binary(
            ce_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            content_type.as_deref(),
            body,
        )?;
        return Ok(vec![event]);
    }
    let essence = content_type.as_deref().map(|ct| {
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match essence.as_deref() {
        Some(BATCH) => Ok(CloudEvent::parse_batch(&body)?),
        Some(STRUCTURED) => Ok(vec![CloudEvent::parse_structured(&body)?]),
        Some(ct) if is_json_media_type(ct) => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'[') {
                Ok(CloudEvent::parse_batch(&body)?)
            } else {
                Ok(vec![CloudEvent::parse_structured(&body)?])
            }
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type {:?} needs binary mode (ce-specversion, ce-id, ce-source, ce-type headers); or send {STRUCTURED}, {BATCH} or application/json",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

pub async fn publish(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(query): Query<QueryMap>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Value>, ApiError> {
    let partition = opt_u32(&query, "partition")?;
    state.broker.topic(&topic)?;
    let events = events_from_request(&headers, body)?;
    let receipts = state.broker.publish(&topic, events, partition).await?;
    let list: Vec<Value> = receipts
        .into_iter()
        .map(|r| json!({"id": r.id, "partition": r.partition, "offset": r.offset}))
        .collect();
    Ok(Json(json!({ "events": list })))
}

pub fn records_json(records: &[EventRecord]) -> Vec<Value> {
    records.iter().map(EventRecord::to_json).collect()
}

pub async fn fetch(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    let partition = opt_u32(&query, "partition")?.unwrap_or(0);
    let max = opt_u64(&query, "max")?.map_or(FETCH_DEFAULT_MAX, |m| m as usize);
    if max == 0 {
        return Err(ApiError::invalid("max", "must be at least 1"));
    }
    let position = seek(&query, SeekPosition::Earliest)?;
    let result = state
        .broker
        .fetch(&topic, partition, position, max, wait(&query)?)
        .await?;
    Ok(Json(json!({
        "events": records_json(&result.events),
        "next_offset": result.next_offset,
        "start_offset": result.start_offset,
        "end_offset": result.end_offset,
    })))
}
