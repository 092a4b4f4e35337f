//! W3C Trace Context at the HTTP edge: the `traceparent` / `tracestate` request
//! headers (validated, then stored on the published events that carry none) and the
//! OpenTelemetry parent of the server spans.
//!
//! Invariant: an event stored from a publish never gets a trace context that did not
//! validate; a span only gets a remote parent that parsed.

use std::str::FromStr;

use axum::http::HeaderMap;
use herald_core::trace::{validate_tracestate, TraceParent, EXT_TRACEPARENT, EXT_TRACESTATE};
use herald_core::{CloudEvent, ExtensionValue};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::error::ApiError;

/// A request's trace context: the parsed `traceparent` and the `tracestate` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTrace {
    pub parent: TraceParent,
    pub state: Option<String>,
}

/// The request's `traceparent` / `tracestate` headers; a malformed one is a 400 naming
/// the header. `tracestate` without `traceparent` is ignored, as W3C prescribes.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<RequestTrace>, ApiError> {
    let Some(value) = headers.get(EXT_TRACEPARENT) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid(EXT_TRACEPARENT, "header value must be visible ASCII"))?;
    let parent = TraceParent::parse(text.trim())
        .map_err(|e| ApiError::invalid(EXT_TRACEPARENT, format!("invalid W3C traceparent: {e}")))?;
    let state = match headers.get(EXT_TRACESTATE) {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| {
                ApiError::invalid(EXT_TRACESTATE, "header value must be visible ASCII")
            })?;
            validate_tracestate(text).map_err(|e| {
                ApiError::invalid(EXT_TRACESTATE, format!("invalid W3C tracestate: {e}"))
            })?;
            Some(text.to_string()).filter(|s| !s.is_empty())
        }
    };
    Ok(Some(RequestTrace { parent, state }))
}

/// Gives every event without its own `traceparent` the request's context (its own
/// `tracestate` is replaced too, so the pair always belongs together).
pub fn apply(events: &mut [CloudEvent], trace: &RequestTrace) {
    for event in events {
        if event.extensions.contains_key(EXT_TRACEPARENT) {
            continue;
        }
        event.extensions.insert(
            EXT_TRACEPARENT.to_string(),
            ExtensionValue::String(trace.parent.to_string()),
        );
        match &trace.state {
            Some(state) => {
                event.extensions.insert(
                    EXT_TRACESTATE.to_string(),
                    ExtensionValue::String(state.clone()),
                );
            }
            None => {
                event.extensions.remove(EXT_TRACESTATE);
            }
        }
    }
}

/// The OpenTelemetry context whose remote parent is `parent`.
pub fn otel_context(parent: &TraceParent, state: Option<&str>) -> opentelemetry::Context {
    let span_context = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        TraceFlags::new(parent.flags),
        true,
        state
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default(),
    );
    opentelemetry::Context::new().with_remote_span_context(span_context)
}

/// Makes `span` a child of the request's `traceparent` header when it parses (no-op
/// when it does not, or when no OpenTelemetry layer is installed).
pub fn set_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    let Some(text) = headers.get(EXT_TRACEPARENT).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let Ok(parent) = TraceParent::parse(text.trim()) else {
        return;
    };
    let state = headers.get(EXT_TRACESTATE).and_then(|v| v.to_str().ok());
    let _ = span.set_parent(otel_context(&parent, state));
}

/// Makes `span` a child of `event`'s own trace context, if it has one.
pub fn set_event_parent(span: &tracing::Span, event: &CloudEvent) {
    if let Some(parent) = event.traceparent().and_then(|t| TraceParent::parse(t).ok()) {
        let _ = span.set_parent(otel_context(&parent, event.tracestate()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, axum::http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn headers_are_validated() {
        assert_eq!(
            from_headers(&headers(&[("tracestate", "a=b")])).ok(),
            Some(None)
        );
        let trace = from_headers(&headers(&[("traceparent", PARENT), ("tracestate", "a=b")]))
            .ok()
            .flatten()
            .expect("valid");
        assert_eq!(trace.parent.to_string(), PARENT);
        assert_eq!(trace.state.as_deref(), Some("a=b"));
        let error = from_headers(&headers(&[("traceparent", "00-zz")])).expect_err("invalid");
        assert_eq!(error.field.as_deref(), Some("traceparent"));
        let error = from_headers(&headers(&[
            ("traceparent", PARENT),
            ("tracestate", "nokey"),
        ]))
        .expect_err("invalid");
        assert_eq!(error.field.as_deref(), Some("tracestate"));
    }

    #[test]
    fn events_keep_their_own_context() {
        let own = "00-11111111111111111111111111111111-2222222222222222-00";
        let mut events = vec![
            CloudEvent::new("a", "/s", "t"),
            CloudEvent::new("b", "/s", "t").with_extension("traceparent", own),
        ];
        let trace = RequestTrace {
            parent: TraceParent::parse(PARENT).expect("valid"),
            state: None,
        };
        apply(&mut events, &trace);
        assert_eq!(events[0].traceparent(), Some(PARENT));
        assert_eq!(events[1].traceparent(), Some(own));
    }
}
