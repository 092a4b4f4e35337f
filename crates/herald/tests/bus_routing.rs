//! Routing: topic patterns (`*`, `>`, exact) and content filters decide which
//! subscriptions get which events; a topic created after a subscription that matches
//! its pattern is picked up from its first event; forward-to-topic copies matching
//! events (same ids) into another topic; `/v1/filters/test` explains matches.

mod bus_common;
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bus_common::*;
use common::*;
use serde_json::json;

fn queued_ids(api: &Api, name: &str, count: usize) -> BTreeSet<String> {
    let messages = drain(api, name, count, true, Duration::from_secs(15));
    assert!(
        pull(api, name, 100, 1_000, 300).is_empty(),
        "{name} got more than the {count} expected"
    );
    messages.iter().map(message_id).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn patterns_and_filters_decide_who_gets_what() {
    let server = Server::start();
    let api = server.api();
    for topic in ["orders.eu", "orders.us", "orders.eu.archive", "payments"] {
        api.create_topic(topic, 2);
    }
    let q = |name: &str, topic: &str, filter: serde_json::Value| {
        let mut d = json!({"name": name, "topic": topic, "target": {"type": "queue"}});
        if !filter.is_null() {
            d["filter"] = filter;
        }
        create_subscription(&api, &d);
    };
    q("all-orders", "orders.*", json!(null));
    q(
        "big-orders",
        "orders.>",
        json!({"data": {"amount": [{"numeric": [">", 100]}]}}),
    );
    q(
        "eu-created",
        "orders.eu",
        json!({"type": [{"prefix": "order.created"}]}),
    );
    q(
        "gold",
        "orders.>",
        json!({"$or": [{"data": {"tier": ["gold"]}}, {"subject": ["vip"]}]}),
    );
    q("payments-only", "payments", json!(null));

    publish_data(
        &api,
        "orders.eu",
        "a",
        "order.created",
        json!({"amount": 50}),
    );
    publish_data(
        &api,
        "orders.eu",
        "b",
        "order.created.v2",
        json!({"amount": 500, "tier": "gold"}),
    );
    publish_data(&api, "orders.us", "c", "order.paid", json!({"amount": 101}));
    publish_data(
        &api,
        "orders.eu.archive",
        "d",
        "order.created",
        json!({"amount": 1000}),
    );
    publish_data(
        &api,
        "payments",
        "e",
        "payment.done",
        json!({"amount": 999}),
    );
    api.publish_one(
        "orders.us",
        &json!({"specversion": "1.0", "id": "f", "source": "/s", "type": "x", "subject": "vip"}),
    );

    assert_eq!(
        queued_ids(&api, "all-orders", 4),
        set(&["a", "b", "c", "f"])
    );
    assert_eq!(queued_ids(&api, "big-orders", 3), set(&["b", "c", "d"]));
    assert_eq!(queued_ids(&api, "eu-created", 2), set(&["a", "b"]));
    assert_eq!(queued_ids(&api, "gold", 2), set(&["b", "f"]));
    assert_eq!(queued_ids(&api, "payments-only", 1), set(&["e"]));
    assert_eq!(describe(&api, "big-orders")["stats"]["matched"], 3);

    // A topic created later that matches a pattern is read from its first event.
    api.create_topic("orders.jp", 1);
    wait_for(
        "the new topic to be routed",
        Duration::from_secs(10),
        || {
            publish_data(&api, "orders.jp", "probe", "t", json!({"amount": 1}));
            let got = pull(&api, "all-orders", 100, 30_000, 300);
            let ids: Vec<String> = got.iter().map(message_id).collect();
            if !got.is_empty() {
                ack(&api, "all-orders", &receipts(&got));
            }
            ids.iter().any(|i| i == "probe").then_some(())
        },
    );
}

#[test]
fn forward_to_topic_copies_matching_events_with_their_ids() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("clicks", 2);
    api.create_topic("views", 1);
    api.create_topic("audit", 1);
    for (name, topic) in [("fwd-clicks", "clicks"), ("fwd-views", "views")] {
        create_subscription(
            &api,
            &json!({"name": name, "topic": topic, "filter": {"data": {"flag": [true]}},
                    "target": {"type": "topic", "topic": "audit"}}),
        );
    }
    publish_data(&api, "clicks", "c1", "click", json!({"flag": true}));
    publish_data(&api, "clicks", "c2", "click", json!({"flag": false}));
    publish_data(&api, "views", "v1", "view", json!({"flag": true}));
    let records = wait_for("forwarded events", Duration::from_secs(10), || {
        let records = api.fetch_all("audit", 0);
        (records.len() >= 2).then_some(records)
    });
    let ids: BTreeSet<String> = records.iter().map(|r| record_id(r).to_string()).collect();
    assert_eq!(ids, set(&["c1", "v1"]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(api.fetch_all("audit", 0).len(), 2, "nothing else forwarded");
    // A forward target that does not exist is counted, not fatal.
    create_subscription(
        &api,
        &json!({"name": "fwd-missing", "topic": "clicks", "target": {"type": "topic", "topic": "nowhere"}}),
    );
    publish_data(&api, "clicks", "c3", "click", json!({"flag": true}));
    wait_for(
        "the routing error to be counted",
        Duration::from_secs(10),
        || {
            let d = describe(&api, "fwd-missing");
            (d["stats"]["errors"].as_u64() >= Some(1)).then_some(())
        },
    );
    wait_for(
        "c3 still forwarded by the other subscription",
        Duration::from_secs(10),
        || (api.fetch_all("audit", 0).len() == 3).then_some(()),
    );
}

#[test]
fn filters_test_endpoint_and_cli() {
    let server = Server::start();
    let api = server.api();
    let pattern = json!({"type": ["order.created"], "data": {"amount": [{"numeric": [">=", 10]}]}});
    let hit = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "order.created", "data": {"amount": 12}});
    let miss = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "order.created", "data": {"amount": 3}});
    let reply = api
        .post_json(
            "/v1/filters/test",
            &json!({"pattern": pattern, "event": hit}),
        )
        .expect_status(200);
    assert_eq!(reply.body["matches"], true, "{}", reply.text);
    let reply = api
        .post_json("/filters/test", &json!({"pattern": pattern, "event": miss}))
        .expect_status(200);
    assert_eq!(reply.body["matches"], false);
    assert!(reply.body["explanation"].is_object(), "{}", reply.text);
    let reply = api.post_json(
        "/v1/filters/test",
        &json!({"pattern": {"type": "not-a-list"}, "event": hit}),
    );
    reply.expect_error(400, "invalid_argument");
    assert_eq!(reply.error_field(), Some("pattern.type"), "{}", reply.text);
    let reply = api.post_json(
        "/v1/filters/test",
        &json!({"pattern": {}, "event": {"id": 1}}),
    );
    reply.expect_error(400, "invalid_argument");

    let out = run_cli(
        &server.url(),
        &[
            "--json",
            "filters",
            "test",
            "--pattern",
            &pattern.to_string(),
            "--event",
            &hit.to_string(),
        ],
        None,
        Duration::from_secs(20),
    )
    .success();
    assert_eq!(out.json_lines()[0]["matches"], true);
}
