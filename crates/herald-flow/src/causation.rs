//! Correlation and causation: an event caused by another carries the cause's
//! `correlationid` (or the cause's id when it has none) and `causationid` = the cause's id,
//! so a whole chain across services shares one correlation id.

use herald_core::CloudEvent;

/// `event`, marked as caused by `cause`.
pub fn follow(event: CloudEvent, cause: &CloudEvent) -> CloudEvent {
    let correlation = cause
        .correlation_id()
        .map(str::to_string)
        .unwrap_or_else(|| cause.id.clone());
    event
        .with_extension("correlationid", correlation)
        .with_extension("causationid", cause.id.clone())
}

/// The correlation id of `event`: its `correlationid`, or its own id when it starts a chain.
pub fn correlation_of(event: &CloudEvent) -> &str {
    event.correlation_id().unwrap_or(&event.id)
}

/// The event's data as JSON (`Null` when it has no data or binary data).
pub fn json_data(event: &CloudEvent) -> serde_json::Value {
    match &event.data {
        Some(herald_core::Data::Json(text)) => {
            serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
        }
        _ => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_carries_the_chain() {
        let root = CloudEvent::new("a", "/t", "x");
        let second = follow(CloudEvent::new("b", "/t", "y"), &root);
        assert_eq!(second.correlation_id(), Some("a"));
        assert_eq!(second.causation_id(), Some("a"));
        let third = follow(CloudEvent::new("c", "/t", "z"), &second);
        assert_eq!(third.correlation_id(), Some("a"));
        assert_eq!(third.causation_id(), Some("b"));
        assert_eq!(correlation_of(&root), "a");
    }
}
