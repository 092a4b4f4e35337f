//! Publish deduplication by CloudEvents (source, id) within the topic's window, also
//! across a kill -9 restart.

mod common;

use common::{event, Server};
use serde_json::json;

#[test]
fn repeated_ids_are_acknowledged_but_stored_once_even_after_a_crash() {
    let mut server = Server::start();
    let api = server.api();
    api.create_topic("payments", 3);
    let first = api
        .post_json("/v1/topics/payments/events", &event("pay-1"))
        .expect_status(200);
    let original = &first.body["events"][0];
    assert!(original.get("duplicate").is_none(), "{original}");

    let again = api
        .post_json("/v1/topics/payments/events", &event("pay-1"))
        .expect_status(200);
    let dup = &again.body["events"][0];
    assert_eq!(dup["duplicate"], json!(true), "{dup}");
    assert_eq!(
        (dup["partition"].clone(), dup["offset"].clone()),
        (original["partition"].clone(), original["offset"].clone())
    );

    // Same id, another source: a different event.
    let mut other_source = event("pay-1");
    other_source["source"] = json!("/elsewhere");
    let other = api
        .post_json("/v1/topics/payments/events", &other_source)
        .expect_status(200);
    assert!(other.body["events"][0].get("duplicate").is_none());

    // Duplicates inside one batch get the first one's position.
    let batch = json!([event("pay-2"), event("pay-2"), event("pay-3")]);
    let reply = api
        .post_json("/v1/topics/payments/events", &batch)
        .expect_status(200);
    let acks = reply.body["events"].as_array().expect("acks").clone();
    assert_eq!(acks[1]["duplicate"], json!(true));
    assert_eq!(acks[0]["offset"], acks[1]["offset"]);
    assert_eq!(acks[0]["partition"], acks[1]["partition"]);

    server.kill9();
    server.restart();
    let api = server.api();
    let after = api
        .post_json("/v1/topics/payments/events", &event("pay-1"))
        .expect_status(200);
    assert_eq!(
        after.body["events"][0]["duplicate"],
        json!(true),
        "dedup window survives kill -9"
    );
    assert_eq!(after.body["events"][0]["offset"], original["offset"]);

    let stored: u64 = api.describe_topic("payments")["partition_stats"]
        .as_array()
        .expect("stats")
        .iter()
        .map(|p| p["end_offset"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(stored, 4, "pay-1, pay-1 from another source, pay-2, pay-3");
}

#[test]
fn dedup_can_be_turned_off_per_topic() {
    let server = Server::start();
    let api = server.api();
    api.create_topic_with(&json!({"name": "raw", "dedup_window_ms": 0}));
    for _ in 0..3 {
        let reply = api
            .post_json("/v1/topics/raw/events", &event("same"))
            .expect_status(200);
        assert!(reply.body["events"][0].get("duplicate").is_none());
    }
    assert_eq!(
        api.describe_topic("raw")["partition_stats"][0]["end_offset"],
        json!(3)
    );
}
