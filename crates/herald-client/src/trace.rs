//! Continuing W3C traces through Herald: the context an event carries (its
//! `traceparent` / `tracestate` extensions), the child context a handler starts its
//! span with, and stamping a parent context onto events before publishing.
//!
//! Invariant: a [`TraceContext`] always holds a `traceparent` that parsed, so what it
//! stamps onto an event passes the broker's validation.

use herald_broker::EventRecord;
pub use herald_core::trace::{TraceParent, EXT_TRACEPARENT, EXT_TRACESTATE};
use herald_core::{CloudEvent, ExtensionValue};

/// A W3C trace context: the parent span and the vendor `tracestate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub parent: TraceParent,
    pub state: Option<String>,
}

impl TraceContext {
    /// Parses a `traceparent` header value (and an optional `tracestate`; an invalid
    /// one is dropped, as W3C prescribes).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let parent = TraceParent::parse(traceparent.trim()).ok()?;
        let state = tracestate
            .filter(|s| herald_core::trace::validate_tracestate(s).is_ok() && !s.is_empty())
            .map(str::to_string);
        Some(Self { parent, state })
    }

    /// The context an event carries, if it has a valid `traceparent`.
    pub fn from_event(event: &CloudEvent) -> Option<Self> {
        Self::parse(event.traceparent()?, event.tracestate())
    }

    /// The same trace with a fresh random span id: the span a handler starts, and the
    /// context to publish follow-up events with.
    pub fn child(&self) -> Self {
        Self {
            parent: self.parent.child(new_span_id()),
            state: self.state.clone(),
        }
    }

    /// The `traceparent` header / extension value.
    pub fn traceparent(&self) -> String {
        self.parent.to_string()
    }

    /// The trace id as 32 hex characters.
    pub fn trace_id(&self) -> String {
        self.parent.trace_id_hex()
    }

    /// The span id (the `parent-id` field) as 16 hex characters.
    pub fn span_id(&self) -> String {
        self.parent.parent_id_hex()
    }

    /// Sets `event`'s `traceparent` / `tracestate` to this context (replacing any).
    pub fn stamp(&self, event: &mut CloudEvent) {
        event.extensions.insert(
            EXT_TRACEPARENT.to_string(),
            ExtensionValue::String(self.traceparent()),
        );
        match &self.state {
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

/// The context to start a handler's span with for `event`: a child of the context
/// the event carries (same trace id, new span id), or `None` if it carries none.
pub fn child_traceparent(event: &CloudEvent) -> Option<TraceContext> {
    TraceContext::from_event(event).map(|c| c.child())
}

/// [`child_traceparent`] of a fetched record's event.
pub fn record_child_traceparent(record: &EventRecord) -> Option<TraceContext> {
    child_traceparent(&record.event)
}

/// A random non-zero 8-byte span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[..8]);
        if id != [0; 8] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let event = CloudEvent::new("e", "/s", "t")
            .with_extension(EXT_TRACEPARENT, PARENT)
            .with_extension(EXT_TRACESTATE, "v=1");
        let child = child_traceparent(&event).expect("event has a context");
        assert_eq!(child.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(child.span_id(), "00f067aa0ba902b7");
        assert_eq!(child.state.as_deref(), Some("v=1"));
        let mut next = CloudEvent::new("f", "/s", "t");
        child.stamp(&mut next);
        assert_eq!(next.traceparent(), Some(child.traceparent().as_str()));
        assert!(next.validate().is_ok());
        assert!(child_traceparent(&CloudEvent::new("g", "/s", "t")).is_none());
    }
}
