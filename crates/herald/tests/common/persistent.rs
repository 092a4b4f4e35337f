//! Persistent-subscription helpers the event-store tests share: appending to a stream,
//! reading, acking and nacking a group over HTTP, and picking the id and receipt out of a
//! delivered event. Every call expects success (`200`); error cases are written out in
//! the tests that check them.

use std::borrow::Borrow;

use serde_json::{json, Value};

use super::Api;

/// Appends one event per id to `stream`.
pub fn append(api: &Api, stream: &str, ids: &[String]) {
    let events: Vec<Value> = ids.iter().map(|id| super::event(id)).collect();
    api.post_json(
        &format!("/v1/streams/{stream}"),
        &json!({ "events": events }),
    )
    .expect_status(200);
}

/// One read of `group` with the request `body` (`max`, `wait_ms`, ...).
pub fn read(api: &Api, group: &str, body: Value) -> Vec<Value> {
    api.post_json(&format!("/v1/persistent/{group}/read"), &body)
        .expect_status(200)
        .body["events"]
        .as_array()
        .expect("events")
        .clone()
}

/// The CloudEvents id of a delivered event.
pub fn id_of(event: &Value) -> String {
    event["event"]["event"]["id"]
        .as_str()
        .expect("id")
        .to_string()
}

pub fn receipts<V: Borrow<Value>>(events: &[V]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.borrow()["receipt"].as_str().expect("receipt").to_string())
        .collect()
}

/// The per-receipt outcomes of an ack or nack reply, in request order.
pub fn outcomes(reply: &Value) -> Vec<String> {
    reply["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome").to_string())
        .collect()
}

/// Acks `events` in `group`; the outcome of each. No request for no events.
pub fn ack<V: Borrow<Value>>(api: &Api, group: &str, events: &[V]) -> Vec<String> {
    if events.is_empty() {
        return Vec::new();
    }
    let reply = api
        .post_json(
            &format!("/v1/persistent/{group}/ack"),
            &json!({"receipts": receipts(events)}),
        )
        .expect_status(200)
        .body;
    outcomes(&reply)
}

/// Nacks `events` in `group` with `action` (`retry`, `park`, `skip`); the outcome of each.
pub fn nack<V: Borrow<Value>>(
    api: &Api,
    group: &str,
    events: &[V],
    action: &str,
    reason: &str,
) -> Vec<String> {
    let reply = api
        .post_json(
            &format!("/v1/persistent/{group}/nack"),
            &json!({"receipts": receipts(events), "action": action, "reason": reason}),
        )
        .expect_status(200)
        .body;
    outcomes(&reply)
}
