//! Queue state across `kill -9`: acknowledged messages are never delivered again, leased
//! but unacknowledged ones come back (with their delivery count kept; on JetStream once
//! their visibility timeout passed), queued ones are
//! not lost, and events published right before the kill reach the queue exactly once
//! (the dispatcher resumes from its checkpoint without copying anything twice).

mod bus_common;
mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bus_common::*;
use common::*;
use serde_json::{json, Value};

fn ids(range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(|i| event(&format!("e{i}"))).collect()
}

#[test]
fn acked_stay_acked_unacked_come_back_nothing_duplicated_after_kill_9() {
    let mut server = Server::start();
    let api = server.api();
    api.create_topic("src", 3);
    // Embedded leases die with the process; JetStream's live in the consumer and lapse
    // after the visibility timeout (the pulls below ask for more, which only the dead
    // gateway would have kept renewing).
    let visibility_ms = if common::nats::jetstream_suite() {
        3_000
    } else {
        60_000
    };
    create_subscription(
        &api,
        &json!({"name": "q", "topic": "src", "target": {"type": "queue"}, "visibility_timeout_ms": visibility_ms}),
    );
    api.publish("src", &ids(0..300));
    wait_queued(&api, "q", 300);

    // 100 acked (the acks returned), 50 leased and not acked, 150 never pulled.
    let acked_messages = drain(&api, "q", 100, false, Duration::from_secs(10));
    let (to_ack, leased) = acked_messages.split_at(100.min(acked_messages.len()));
    assert_eq!(
        ack(&api, "q", &receipts(to_ack))
            .iter()
            .filter(|o| *o == "acked")
            .count(),
        100
    );
    let mut leased: Vec<Value> = leased.to_vec();
    while leased.len() < 50 {
        leased.extend(pull(&api, "q", 50 - leased.len(), 60_000, 1_000));
    }
    let acked_ids: BTreeSet<String> = to_ack.iter().map(message_id).collect();
    let leased_ids: BTreeSet<String> = leased.iter().map(message_id).collect();

    // More events right before the crash, some possibly still being copied.
    api.publish("src", &ids(300..600));
    server.kill9();
    server.restart();
    let api = server.api();

    // Everything not acked is delivered, each exactly once, nothing acked comes back.
    let description = describe(&api, "q");
    let expected = 600 - acked_ids.len();
    let all = drain(&api, "q", expected, true, Duration::from_secs(20));
    let mut seen: HashMap<String, u64> = HashMap::new();
    for m in &all {
        *seen.entry(message_id(m)).or_default() += 1;
        let id = message_id(m);
        assert!(
            !acked_ids.contains(&id),
            "acked message {id} delivered again"
        );
        let expected_count = if leased_ids.contains(&id) { 2 } else { 1 };
        assert_eq!(m["delivery_count"], expected_count, "{m}");
    }
    assert_eq!(seen.len(), expected, "{description}");
    assert!(seen.values().all(|n| *n == 1), "duplicates: {seen:?}");
    assert!(pull(&api, "q", 10, 1_000, 500).is_empty());
    let queue = describe(&api, "q")["stats"]["queue"].clone();
    assert_eq!(
        queue["end_offset"], 600,
        "no copy twice in the queue log: {queue}"
    );

    // And the state survives a clean restart too.
    server.terminate();
    server.restart();
    let api = server.api();
    assert!(pull(&api, "q", 10, 1_000, 300).is_empty());
    api.publish("src", &ids(600..610));
    assert_eq!(
        drain(&api, "q", 10, true, Duration::from_secs(10)).len(),
        10
    );
}
