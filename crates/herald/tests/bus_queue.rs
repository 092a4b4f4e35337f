//! Queue semantics through the HTTP API: pull with a lease, ack, nack (with delay),
//! extend, redelivery after the visibility timeout with a growing delivery count,
//! dead-lettering after `max_deliveries` with the reason in extensions, DLQ listing and
//! redrive, and the error answers of the subscription routes.

mod bus_common;
mod common;

use std::time::{Duration, Instant};

use bus_common::*;
use common::*;
use serde_json::json;

#[test]
fn lease_ack_nack_extend_redeliver_dead_letter_and_redrive() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("jobs", 2);
    create_subscription(
        &api,
        &json!({"name": "workers", "topic": "jobs", "target": {"type": "queue"},
                "visibility_timeout_ms": 300, "max_deliveries": 3}),
    );
    // A new subscription starts at the end: nothing from before it.
    for i in 0..4 {
        publish_data(&api, "jobs", &format!("j{i}"), "job", json!({"n": i}));
    }
    wait_queued(&api, "workers", 4);

    // Pull two, ack one, nack one, the rest stays.
    let first = pull(&api, "workers", 2, 30_000, 5_000);
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(first.iter().all(|m| m["delivery_count"] == 1));
    assert_eq!(first[0]["source"]["topic"], "jobs");
    assert_eq!(ack(&api, "workers", &receipts(&first[..1])), vec!["acked"]);
    assert_eq!(
        ack(&api, "workers", &receipts(&first[..1])),
        vec!["already_done"]
    );
    let reply = api
        .post_json(
            "/v1/subscriptions/workers/nack",
            &json!({"receipts": receipts(&first[1..2]), "delay_ms": 400}),
        )
        .expect_status(200);
    assert_eq!(outcomes(&reply), vec!["delayed"]);

    // The other two are there; the delayed one is not yet.
    let second = pull(&api, "workers", 10, 30_000, 1_000);
    let ids: Vec<String> = second.iter().map(message_id).collect();
    assert_eq!(second.len(), 2, "{ids:?}");
    assert!(!ids.contains(&message_id(&first[1])));
    assert_eq!(
        ack(&api, "workers", &receipts(&second)),
        vec!["acked", "acked"]
    );

    // After the delay it comes back with delivery count 2 (leased for 2 s: the extend
    // below must find the lease alive on a loaded machine too).
    let again = pull(&api, "workers", 10, 2_000, 3_000);
    assert_eq!(again.len(), 1);
    assert_eq!(message_id(&again[0]), message_id(&first[1]));
    assert_eq!(again[0]["delivery_count"], 2);

    // Extend the lease past the visibility timeout: not redelivered meanwhile.
    let reply = api
        .post_json(
            "/v1/subscriptions/workers/extend",
            &json!({"receipts": receipts(&again), "visibility_timeout_ms": 1_500}),
        )
        .expect_status(200);
    assert_eq!(outcomes(&reply), vec!["extended"]);
    assert!(pull(&api, "workers", 10, 200, 600).is_empty());

    // Let the lease expire: redelivered (count 3 = max), and the old receipt is stale.
    let third = pull(&api, "workers", 10, 200, 5_000);
    assert_eq!(third.len(), 1);
    assert_eq!(third[0]["delivery_count"], 3);
    assert_eq!(ack(&api, "workers", &receipts(&again)), vec!["lease_lost"]);

    // Its lease expires once more: deliveries exhausted, so it is dead-lettered.
    let dead = wait_for("the message in the DLQ", Duration::from_secs(10), || {
        let reply = api.get("/v1/subscriptions/workers/dlq").expect_status(200);
        let events = reply.body["events"].as_array().cloned().unwrap_or_default();
        (!events.is_empty()).then_some(events)
    });
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter["event"]["id"], message_id(&first[1]).as_str());
    assert_eq!(letter["delivery_count"], 3);
    assert!(
        letter["reason"]
            .as_str()
            .unwrap_or("")
            .contains("visibility timeout"),
        "{letter}"
    );
    assert_eq!(letter["source"]["topic"], "jobs");
    assert_eq!(letter["event"]["heraldsubscription"], "workers");
    // The DLQ topic exists as an ordinary topic.
    assert!(api.topic_names().contains(&"workers.dlq".to_string()));
    wait_for(
        "the dead-lettered message to leave the queue",
        Duration::from_secs(10),
        || (describe(&api, "workers")["stats"]["queue"]["backlog"] == 0).then_some(()),
    );
    assert!(pull(&api, "workers", 10, 1_000, 0).is_empty());

    // Redrive it back: same id, fresh delivery count, no DLQ extensions.
    let offset = letter["offset"].as_u64().expect("dlq offset");
    let reply = api
        .post_json(
            "/v1/subscriptions/workers/dlq/redrive",
            &json!({"offsets": [offset]}),
        )
        .expect_status(200);
    assert_eq!(reply.body["redriven"], 1);
    let back = pull(&api, "workers", 10, 30_000, 5_000);
    assert_eq!(back.len(), 1);
    assert_eq!(message_id(&back[0]), message_id(&first[1]));
    assert_eq!(back[0]["delivery_count"], 1);
    assert!(back[0]["event"].get("heralddlqreason").is_none());
    assert_eq!(ack(&api, "workers", &receipts(&back)), vec!["acked"]);
}

#[test]
fn nack_after_max_deliveries_dead_letters_with_the_given_reason() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("tasks", 1);
    create_subscription(
        &api,
        &json!({"name": "t", "topic": "tasks", "target": {"type": "queue"},
                "max_deliveries": 2, "dead_letter_topic": "tasks-failed"}),
    );
    publish_data(&api, "tasks", "x1", "task", json!(1));
    for attempt in 1..=2 {
        let m = pull(&api, "t", 1, 30_000, 5_000);
        assert_eq!(m.len(), 1, "attempt {attempt}");
        api.post_json(
            "/v1/subscriptions/t/nack",
            &json!({"receipts": receipts(&m), "reason": format!("bad input #{attempt}")}),
        )
        .expect_status(200);
    }
    let dead = wait_for("dead letter", Duration::from_secs(10), || {
        let records = api.fetch_all("tasks-failed", 0);
        (!records.is_empty()).then_some(records)
    });
    assert_eq!(dead[0]["event"]["heralddlqreason"], "bad input #2");
    assert_eq!(dead[0]["event"]["heralddeliverycount"], 2);
    assert_eq!(dead[0]["event"]["heraldsourcetopic"], "tasks");
    // Redrive everything to another topic.
    api.create_topic("retry", 1);
    let reply = api
        .post_json(
            "/v1/subscriptions/t/dlq/redrive",
            &json!({"all": true, "to_topic": "retry"}),
        )
        .expect_status(200);
    assert_eq!(reply.body["redriven"], 1);
    let retried = api.fetch_all("retry", 0);
    assert_eq!(record_id(&retried[0]), "x1");
    assert!(retried[0]["event"].get("heralddlqreason").is_none());
}

#[test]
fn long_poll_wakes_on_publish() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("lp", 1);
    queue_subscription(&api, "lp-sub", "lp");
    let publisher = {
        let api = api.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            publish_data(&api, "lp", "late", "t", json!(null));
        })
    };
    let started = Instant::now();
    let messages = pull(&api, "lp-sub", 5, 30_000, 10_000);
    assert_eq!(messages.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    publisher.join().expect("publisher");
}

#[test]
fn bad_requests_are_answered_and_change_nothing() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("orders", 1);
    queue_subscription(&api, "q", "orders");

    let bad = |body: serde_json::Value, field: &str| {
        let reply = api.post_json("/v1/subscriptions", &body);
        reply.expect_error(400, "invalid_argument");
        assert_eq!(reply.error_field(), Some(field), "{}", reply.text);
    };
    bad(
        json!({"name": "a b", "topic": "orders", "target": {"type": "queue"}}),
        "name",
    );
    bad(
        json!({"name": "x", "topic": "orders..x", "target": {"type": "queue"}}),
        "topic",
    );
    bad(
        json!({"name": "x", "topic": "__sub.q", "target": {"type": "queue"}}),
        "topic",
    );
    bad(
        json!({"name": "x", "topic": "orders", "target": {"type": "queue"},
               "filter": {"data": {"amount": [{"numeric": ["~", 3]}]}}}),
        "filter.data.amount[0].numeric",
    );
    bad(
        json!({"name": "x", "topic": "orders", "target": {"type": "webhook", "url": "ftp://h"}}),
        "target.url",
    );
    bad(
        json!({"name": "x", "topic": "orders.*", "target": {"type": "topic", "topic": "orders.copy"}}),
        "target.topic",
    );
    bad(
        json!({"name": "x", "topic": "orders", "target": {"type": "queue"}, "max_deliveries": 0}),
        "max_deliveries",
    );
    bad(
        json!({"name": "x", "topic": "orders", "target": {"type": "carrier-pigeon"}}),
        "body",
    );
    api.post_raw(
        "/v1/subscriptions",
        Some("application/json"),
        b"{not json".to_vec(),
        &[],
    )
    .expect_error(400, "invalid_argument");

    api.post_json(
        "/v1/subscriptions",
        &json!({"name": "q", "topic": "orders", "target": {"type": "queue"}}),
    )
    .expect_error(409, "subscription_exists");
    api.get("/v1/subscriptions/nope")
        .expect_error(404, "subscription_not_found");
    api.post_json("/v1/subscriptions/nope/pull", &json!({}))
        .expect_error(404, "subscription_not_found");
    api.post_json("/v1/subscriptions/q/pull", &json!({"max": 0}))
        .expect_error(400, "invalid_argument");
    api.post_json("/v1/subscriptions/q/pull", &json!({"bogus": 1}))
        .expect_error(400, "invalid_argument");
    api.post_json("/v1/subscriptions/q/ack", &json!({"receipts": []}))
        .expect_error(400, "invalid_argument");
    let reply = api
        .post_json(
            "/v1/subscriptions/q/ack",
            &json!({"receipts": ["garbage", "1.ff"]}),
        )
        .expect_status(200);
    // Well-formed for the embedded queue (`<offset>.<nonce>`), so its lease is gone; on
    // JetStream a receipt is an ack subject, and this is not one.
    let stale = if common::nats::jetstream_suite() {
        "invalid"
    } else {
        "lease_lost"
    };
    assert_eq!(outcomes(&reply), vec!["invalid", stale]);
    create_subscription(
        &api,
        &json!({"name": "live", "topic": "orders", "target": {"type": "stream"}}),
    );
    api.post_json("/v1/subscriptions/live/pull", &json!({}))
        .expect_error(409, "wrong_target");

    // Still working afterwards.
    publish_data(&api, "orders", "o1", "t", json!(1));
    assert_eq!(drain(&api, "q", 1, true, Duration::from_secs(10)).len(), 1);
    let names: Vec<String> = api.get("/v1/subscriptions").expect_status(200).body["subscriptions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, vec!["live", "q"]);
    api.delete("/v1/subscriptions/q").expect_status(204);
    api.delete("/v1/subscriptions/q")
        .expect_error(404, "subscription_not_found");
    assert!(!api.topic_names().contains(&"__sub.q".to_string()));
}

#[test]
fn a_catch_all_subscription_does_not_read_its_own_dead_letters() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("anything", 1);
    create_subscription(
        &api,
        &json!({"name": "all", "topic": ">", "target": {"type": "queue"}, "max_deliveries": 1}),
    );
    publish_data(&api, "anything", "poison", "t", json!(null));
    let m = pull(&api, "all", 1, 30_000, 5_000);
    assert_eq!(m.len(), 1);
    api.post_json(
        "/v1/subscriptions/all/nack",
        &json!({"receipts": receipts(&m)}),
    )
    .expect_status(200);
    wait_for("the dead letter", Duration::from_secs(10), || {
        (api.fetch_all("all.dlq", 0).len() == 1).then_some(())
    });
    assert!(
        pull(&api, "all", 10, 1_000, 700).is_empty(),
        "the dead letter came back"
    );
}
