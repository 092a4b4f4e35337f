//! The web console's server side through the real binary: `/ui` serves the embedded
//! assets (content types, ETag revalidation, 404s), and the `/v1/console` JSON views:
//! topology (producers by source with rates, subscriptions with matched topics and
//! dead-letter depth, groups with lag), filtered browsing (bounded scan, paging, bad
//! input) and chain lookup by correlation id (causation, queue copies, dead letters).

mod bus_common;
mod common;

use std::time::Duration;

use bus_common::*;
use common::*;
use serde_json::{json, Value};

fn ce(id: &str, source: &str, ty: &str, extra: Value) -> Value {
    let mut event = json!({"specversion": "1.0", "id": id, "source": source, "type": ty});
    if let (Some(map), Some(more)) = (event.as_object_mut(), extra.as_object()) {
        map.extend(more.clone());
    }
    event
}

#[test]
fn ui_serves_embedded_assets_with_types_and_revalidation() {
    let server = Server::start();
    let api = server.api();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let redirect = client.get(api.url("/ui")).send().expect("GET /ui");
    assert_eq!(redirect.status().as_u16(), 308);
    assert_eq!(redirect.headers()["location"], "/ui/");

    let page = api.get("/ui/").expect_status(200);
    assert!(page.headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    assert!(page.text.contains("<script src=\"/ui/app.js\""));
    assert_eq!(page.headers["cache-control"], "no-cache");
    for (asset, ty) in [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let reply = api.get(&format!("/ui/{asset}")).expect_status(200);
        let content_type = reply.headers["content-type"].to_str().expect("ascii");
        assert!(content_type.starts_with(ty), "{asset}: {content_type}");
        assert!(!reply.text.is_empty());
        let etag = reply.headers["etag"].clone();
        let again = client
            .get(api.url(&format!("/ui/{asset}")))
            .header("if-none-match", etag)
            .send()
            .expect("conditional GET");
        assert_eq!(again.status().as_u16(), 304, "{asset}");
    }
    api.get("/ui/nope.js").expect_error(404, "not_found");
    api.get("/ui/../Cargo.toml").expect_error(404, "not_found");
}

#[test]
fn topology_lists_producers_rates_subscriptions_and_groups() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("orders", 2);
    api.create_topic("audit", 1);
    create_subscription(
        &api,
        &json!({"name": "billing", "topic": "orders", "target": {"type": "queue"}}),
    );
    create_subscription(
        &api,
        &json!({"name": "copy", "topic": "orders.*", "target": {"type": "topic", "topic": "audit"}}),
    );
    let events: Vec<Value> = (0..20)
        .map(|i| {
            let source = if i % 4 == 0 { "/billing" } else { "/shop" };
            ce(&format!("e{i}"), source, "order.created", json!({}))
        })
        .collect();
    api.publish("orders", &events);
    let member = api.join_group("reporting", &json!({"topics": ["orders"]}));
    assert!(member["member_id"].is_string());

    let topology = wait_for("billing matched 20", Duration::from_secs(15), || {
        let t = api.get("/v1/console/topology").expect_status(200).body;
        let billing = subscription(&t, "billing");
        (billing["stats"]["matched"] == 20).then_some(t)
    });
    assert_eq!(topology["bus"], true);
    let orders = topic(&topology, "orders");
    assert_eq!(orders["events_stored"], 20);
    assert_eq!(orders["partitions"].as_array().map(Vec::len), Some(2));
    let activity = &orders["activity"];
    assert_eq!(activity["events_total"], 20);
    assert!(
        activity["rate_per_second"].as_f64() > Some(0.0),
        "{activity}"
    );
    assert_eq!(activity["history"].as_array().map(Vec::len), Some(60));
    let sources: Vec<(&str, u64)> = activity["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| {
            (
                s["source"].as_str().expect("source"),
                s["events_total"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(sources, vec![("/shop", 15), ("/billing", 5)]);
    // Internal topics (the queue) are not topology topics.
    assert!(topology["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .all(|t| !t["name"].as_str().unwrap_or("__").starts_with("__")));
    assert_eq!(
        subscription(&topology, "billing")["matched_topics"],
        json!(["orders"])
    );
    assert_eq!(subscription(&topology, "copy")["matched_topics"], json!([]));
    assert_eq!(subscription(&topology, "billing")["dead_letter_depth"], 0);
    let group = topology["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "reporting")
        .expect("group reporting");
    let lag: u64 = group["offsets"]
        .as_array()
        .expect("offsets")
        .iter()
        .map(|o| o["lag"].as_u64().expect("lag"))
        .sum();
    assert_eq!(lag, 20);
}

fn topic<'a>(topology: &'a Value, name: &str) -> &'a Value {
    topology["topics"]
        .as_array()
        .and_then(|list| list.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no topic {name} in {topology}"))
}

fn subscription<'a>(topology: &'a Value, name: &str) -> &'a Value {
    topology["subscriptions"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no subscription {name} in {topology}"))
}

#[test]
fn browse_filters_pages_and_refuses_bad_input() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("readings", 1);
    let events: Vec<Value> = (0..50)
        .map(|i| ce(&format!("r{i}"), "/s", "reading", json!({"data": {"n": i}})))
        .collect();
    api.publish("readings", &events);
    let filter = r#"{"data": {"n": [{"numeric": [">=", 40]}]}}"#.to_string();
    let page = api
        .get_query(
            "/v1/console/topics/readings/events",
            &[("filter", filter.clone()), ("max", "4".into())],
        )
        .expect_status(200)
        .body;
    let offsets: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(record_offset)
        .collect();
    assert_eq!(offsets, vec![40, 41, 42, 43]);
    assert_eq!(page["next_offset"], 44);
    assert_eq!(page["exhausted"], false);
    let next = api
        .get_query(
            "/v1/console/topics/readings/events",
            &[("filter", filter), ("offset", "44".into())],
        )
        .expect_status(200)
        .body;
    assert_eq!(next["events"].as_array().map(Vec::len), Some(6));
    assert_eq!(next["exhausted"], true);
    // The scan bound: 10 events read from offset 0, none matches.
    let bounded = api
        .get_query(
            "/v1/console/topics/readings/events",
            &[
                ("filter", r#"{"data": {"n": [49]}}"#.into()),
                ("scan_max", "10".into()),
            ],
        )
        .expect_status(200)
        .body;
    assert_eq!(bounded["scanned"], 10);
    assert_eq!(bounded["next_offset"], 10);
    assert_eq!(bounded["events"], json!([]));
    // By time: from_time in the future finds nothing.
    let later = api
        .get_query(
            "/v1/console/topics/readings/events",
            &[("from_time", "2999-01-01T00:00:00Z".into())],
        )
        .expect_status(200)
        .body;
    assert_eq!(later["events"], json!([]));

    let bad = api.get_query(
        "/v1/console/topics/readings/events",
        &[(
            "filter",
            r#"{"data": {"n": [{"numeric": ["~", 1]}]}}"#.into(),
        )],
    );
    bad.expect_error(400, "invalid_argument");
    assert!(bad.error_field().is_some_and(|f| f.starts_with("filter")));
    let bad = api.get_query(
        "/v1/console/topics/readings/events",
        &[("filter", "{not json".into())],
    );
    assert_eq!(bad.expect_error(400, "invalid_argument")["field"], "filter");
    let bad = api.get_query("/v1/console/topics/readings/events", &[("max", "0".into())]);
    assert_eq!(bad.expect_error(400, "invalid_argument")["field"], "max");
    let bad = api.get_query(
        "/v1/console/topics/readings/events",
        &[("scan_max", "1000000000".into())],
    );
    assert_eq!(
        bad.expect_error(400, "invalid_argument")["field"],
        "scan_max"
    );
    api.get("/v1/console/topics/missing/events")
        .expect_error(404, "topic_not_found");
    api.get_query(
        "/v1/console/topics/readings/events",
        &[("partition", "3".into())],
    )
    .expect_error(400, "invalid_argument");
}

#[test]
fn chain_follows_a_correlation_id_across_topics_with_dead_letters() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("orders", 2);
    api.create_topic("payments", 1);
    create_subscription(
        &api,
        &json!({"name": "charge", "topic": "orders", "target": {"type": "queue"},
                "max_deliveries": 1}),
    );
    let corr = json!({"correlationid": "c-1"});
    api.publish_one("orders", &ce("o-1", "/shop", "order.placed", corr.clone()));
    api.publish_one(
        "payments",
        &ce(
            "p-1",
            "/pay",
            "payment.failed",
            json!({"correlationid": "c-1", "causationid": "o-1"}),
        ),
    );
    api.publish_one("orders", &ce("other", "/shop", "order.placed", json!({})));
    wait_queued(&api, "charge", 2);
    // Dead-letter o-1: one delivery allowed, then a nack.
    let messages = pull(&api, "charge", 10, 30_000, 1_000);
    let o1: Vec<Value> = messages
        .iter()
        .filter(|m| message_id(m) == "o-1")
        .cloned()
        .collect();
    assert_eq!(o1.len(), 1, "{messages:?}");
    api.post_json(
        "/v1/subscriptions/charge/nack",
        &json!({"receipts": receipts(&o1), "reason": "card declined"}),
    )
    .expect_status(200);
    wait_for("the dead letter", Duration::from_secs(15), || {
        let dlq = api
            .get("/v1/subscriptions/charge/dlq")
            .expect_status(200)
            .body;
        (dlq["events"].as_array().map(Vec::len) == Some(1)).then_some(())
    });

    let chain = api.get("/v1/console/chains/c-1").expect_status(200).body;
    let events = chain["events"].as_array().expect("events");
    let ids: Vec<&str> = events.iter().map(record_id).collect();
    assert_eq!(ids, vec!["o-1", "p-1"], "{chain}");
    assert_eq!(events[0]["routed_to"], json!(["charge"]));
    assert_eq!(events[1]["causation_id"], "o-1");
    assert_eq!(events[1]["routed_to"], json!([]));
    let queued = events[0]["queued"].as_array().expect("queued");
    assert_eq!(queued.len(), 1, "{chain}");
    assert_eq!(queued[0]["subscription"], "charge");
    let dead = events[0]["dead_letters"].as_array().expect("dead letters");
    assert_eq!(dead.len(), 1, "{chain}");
    assert_eq!(dead[0]["reason"], "card declined");
    assert_eq!(dead[0]["delivery_count"], 1);
    assert_eq!(dead[0]["topic"], "charge.dlq");
    assert_eq!(chain["truncated"], false);
    assert!(chain["scanned"].as_u64() >= Some(5));

    // Bounded: reading one event per partition misses o-1 and says so.
    let bounded = api
        .get_query("/v1/console/chains/c-1", &[("scan_max", "1".into())])
        .expect_status(200)
        .body;
    assert_eq!(bounded["truncated"], true);
    let none = api.get("/v1/console/chains/nobody").expect_status(200).body;
    assert_eq!(none["events"], json!([]));
    let bad = api.get_query("/v1/console/chains/c-1", &[("scan_max", "0".into())]);
    assert_eq!(
        bad.expect_error(400, "invalid_argument")["field"],
        "scan_max"
    );
    let bad = api.get_query("/v1/console/chains/c-1", &[("since", "yesterday".into())]);
    assert_eq!(bad.expect_error(400, "invalid_argument")["field"], "since");
}
