//! `POST/GET /v1/topics/{topic}/events`: publish (structured, batch, binary mode) and fetch.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use herald_broker::record::format_time_ms;
use herald_broker::{EventRecord, PublishReceipt, SeekPosition};
use herald_core::event::is_json_media_type;
use herald_core::CloudEvent;
use serde_json::{json, Value};

use crate::body::LimitedBody;
use crate::error::ApiError;
use crate::params::{opt_u32, opt_u64, parse_time, seek, wait, QueryMap};
use crate::{tracecontext, AppState};
use tracing::Instrument as _;

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
    crate::topics::reject_internal(&topic)?;
    state.broker.topic(&topic)?;
    let deliver_at_ms = delivery_time(&query, &headers)?;
    let request_trace = tracecontext::from_headers(&headers)?;
    let mut events = events_from_request(&headers, body)?;
    let span = tracing::info_span!(
        "herald.publish",
        otel.name = %format!("publish {topic}"),
        messaging.system = "herald",
        messaging.destination.name = %topic,
        messaging.batch.message_count = events.len(),
    );
    match &request_trace {
        // The request span is already the header's child; this one nests under it.
        Some(trace) => tracecontext::apply(&mut events, trace),
        None => {
            if let Some(first) = events.first() {
                tracecontext::set_event_parent(&span, first);
            }
        }
    }
    let entries: Vec<_> = events
        .into_iter()
        .map(|e| (e.partition_key().map(Bytes::from), e))
        .collect();
    publish_entries(&state, &topic, entries, partition, deliver_at_ms)
        .instrument(span)
        .await
}

async fn publish_entries(
    state: &AppState,
    topic: &str,
    entries: Vec<(Option<Bytes>, CloudEvent)>,
    partition: Option<u32>,
    deliver_at_ms: Option<i64>,
) -> Result<Json<Value>, ApiError> {
    let list: Vec<Value> = match deliver_at_ms {
        None => state
            .broker
            .publish_keyed(topic, entries, partition)
            .await?
            .iter()
            .map(receipt_json)
            .collect(),
        Some(at) => state
            .broker
            .publish_delayed(topic, entries, partition, at)
            .await?
            .into_iter()
            .map(|r| match &r.delivered {
                Some(receipt) => receipt_json(receipt),
                None => json!({"id": r.id, "scheduled_for": format_time_ms(r.deliver_at_ms)}),
            })
            .collect(),
    };
    Ok(Json(json!({ "events": list })))
}

fn receipt_json(r: &PublishReceipt) -> Value {
    let mut receipt = json!({"id": r.id, "partition": r.partition, "offset": r.offset});
    if r.duplicate {
        receipt["duplicate"] = json!(true);
    }
    receipt
}

/// `delay_ms=N` or `deliver_at=RFC3339` (query), or the `herald-delay-ms` /
/// `herald-deliver-at` headers: when the events should become visible.
fn delivery_time(query: &QueryMap, headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let delay = query
        .get("delay_ms")
        .cloned()
        .or_else(|| header("herald-delay-ms"));
    let at = query
        .get("deliver_at")
        .cloned()
        .or_else(|| header("herald-deliver-at"));
    match (delay, at) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "deliver_at",
            "give `delay_ms` or `deliver_at`, not both",
        )),
        (Some(d), None) => {
            let ms: i64 = d.parse().ok().filter(|ms: &i64| *ms >= 0).ok_or_else(|| {
                ApiError::invalid(
                    "delay_ms",
                    format!("must be a non-negative integer, got {d:?}"),
                )
            })?;
            Ok(Some(
                chrono::Utc::now().timestamp_millis().saturating_add(ms),
            ))
        }
        (None, Some(t)) => Ok(Some(parse_time("deliver_at", &t)?)),
        (None, None) => Ok(None),
    }
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
