//! Webhooks against a tiny receiver on 127.0.0.1:0: an endpoint failing 3 times then
//! succeeding gets the event delivered exactly once after retries, with a valid
//! HMAC signature; an endpoint that always fails lands the event in the dead-letter
//! topic with the reason, and redrive delivers it once the endpoint recovers;
//! binary mode carries attributes in `ce-*` headers; `ordered_by_key` keeps per-key
//! order through failures. Seeded where random.

mod bus_common;
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus_common::*;
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn webhook(
    name: &str,
    topic: &str,
    target: serde_json::Value,
    max_deliveries: u32,
) -> serde_json::Value {
    json!({"name": name, "topic": topic, "target": target, "max_deliveries": max_deliveries})
}

#[test]
fn fails_three_times_then_delivered_exactly_once_with_a_valid_signature() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("orders", 1);
    let calls = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let calls = Arc::clone(&calls);
        Receiver::start(move |_, _| {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                503
            } else {
                200
            }
        })
    };
    create_subscription(
        &api,
        &webhook(
            "hook",
            "orders",
            json!({"type": "webhook", "url": receiver.url(), "secret": "s3cret",
                   "retry": {"initial_backoff_ms": 20, "max_backoff_ms": 100}}),
            10,
        ),
    );
    publish_data(&api, "orders", "o-1", "order.created", json!({"total": 42}));
    wait_for("4 attempts", Duration::from_secs(15), || {
        (receiver.received().len() >= 4).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let received = receiver.received();
    assert_eq!(received.len(), 4, "no attempt after the success");
    assert_eq!(received.iter().filter(|r| r.status == 200).count(), 1);
    for (i, r) in received.iter().enumerate() {
        assert_eq!(r.headers["content-type"], "application/cloudevents+json");
        assert_eq!(r.json()["id"], "o-1");
        assert_eq!(r.json()["data"]["total"], 42);
        assert_eq!(r.headers["x-herald-delivery-count"], (i + 1).to_string());
        let signature = &r.headers["x-herald-signature"];
        assert!(signature_valid("s3cret", signature, &r.body), "{signature}");
        assert!(!signature_valid("wrong", signature, &r.body));
    }
    // The same delivery id on every retry, for idempotent receivers.
    let delivery: std::collections::BTreeSet<&String> = received
        .iter()
        .map(|r| &r.headers["x-herald-delivery"])
        .collect();
    assert_eq!(delivery.len(), 1);
    let stats = describe(&api, "hook")["stats"].clone();
    assert_eq!(stats["webhook"]["delivered"], 1, "{stats}");
    assert_eq!(stats["webhook"]["failed_attempts"], 3, "{stats}");
    assert_eq!(stats["queue"]["backlog"], 0, "{stats}");
    assert_eq!(describe(&api, "hook")["target"]["secret"], "***");
    // Webhook queues are consumed by the server only.
    api.post_json("/v1/subscriptions/hook/pull", &json!({}))
        .expect_error(409, "wrong_target");
}

#[test]
fn always_failing_endpoint_dead_letters_with_the_reason_and_redrive_works() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("orders", 1);
    let healthy = Arc::new(AtomicBool::new(false));
    let receiver = {
        let healthy = Arc::clone(&healthy);
        Receiver::start(move |_, _| {
            if healthy.load(Ordering::SeqCst) {
                204
            } else {
                500
            }
        })
    };
    create_subscription(
        &api,
        &webhook(
            "flaky",
            "orders",
            json!({"type": "webhook", "url": receiver.url(), "mode": "binary",
                   "retry": {"initial_backoff_ms": 10, "max_backoff_ms": 50}}),
            3,
        ),
    );
    publish_data(&api, "orders", "o-9", "order.created", json!({"total": 7}));
    let dead = wait_for("the dead letter", Duration::from_secs(15), || {
        let reply = api.get("/v1/subscriptions/flaky/dlq").expect_status(200);
        let events = reply.body["events"].as_array().cloned().unwrap_or_default();
        (!events.is_empty()).then_some(events)
    });
    assert_eq!(receiver.received().len(), 3, "max_deliveries attempts");
    assert_eq!(dead[0]["event"]["id"], "o-9");
    assert_eq!(dead[0]["delivery_count"], 3);
    let reason = dead[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("HTTP 500"), "{reason}");
    // Binary mode: attributes as headers, data as the body.
    let first = &receiver.received()[0];
    assert_eq!(first.headers["ce-id"], "o-9");
    assert_eq!(first.headers["ce-type"], "order.created");
    assert_eq!(first.headers["ce-specversion"], "1.0");
    assert_eq!(first.json(), json!({"total": 7}));

    // The endpoint recovers; redrive delivers it.
    healthy.store(true, Ordering::SeqCst);
    let out = run_cli(
        &server.url(),
        &["dlq", "redrive", "flaky", "--all"],
        None,
        Duration::from_secs(20),
    )
    .success();
    assert!(out.stdout.contains("redrove 1"), "{}", out.stdout);
    wait_for("delivery after redrive", Duration::from_secs(10), || {
        receiver
            .received()
            .iter()
            .any(|r| r.status == 204)
            .then_some(())
    });
    let listed = run_cli(
        &server.url(),
        &["--json", "dlq", "list", "flaky"],
        None,
        Duration::from_secs(20),
    )
    .success();
    assert_eq!(listed.json_lines()[0]["reason"], dead[0]["reason"]);
}

#[test]
fn ordered_by_key_keeps_per_key_order_through_failures() {
    let seed = seed();
    let server = Server::start();
    let api = server.api();
    api.create_topic("ledger", 3);
    let rng = Arc::new(Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)));
    let delivered: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::new(Mutex::new(HashMap::new()));
    let receiver = {
        let rng = Arc::clone(&rng);
        let delivered = Arc::clone(&delivered);
        Receiver::start(move |_, body| {
            if rng.lock().expect("rng").random_bool(0.3) {
                return 500;
            }
            let event: serde_json::Value = serde_json::from_slice(body).expect("json body");
            let key = event["partitionkey"].as_str().expect("key").to_string();
            let n = event["data"]["n"].as_u64().expect("n");
            delivered
                .lock()
                .expect("delivered")
                .entry(key)
                .or_default()
                .push(n);
            200
        })
    };
    create_subscription(
        &api,
        &webhook(
            "ordered",
            "ledger",
            json!({"type": "webhook", "url": receiver.url(), "ordered_by_key": true, "max_concurrency": 4,
                   "retry": {"initial_backoff_ms": 5, "max_backoff_ms": 20}}),
            50,
        ),
    );
    let keys = ["acct-1", "acct-2", "acct-3", "acct-4", "acct-5"];
    let mut events = Vec::new();
    for n in 0..100u64 {
        let key = keys[(n % keys.len() as u64) as usize];
        let mut e = keyed_event(&format!("t{n}"), key);
        e["data"] = json!({"n": n});
        events.push(e);
    }
    api.publish("ledger", &events);
    wait_for("all 100 delivered", Duration::from_secs(20), || {
        let total: usize = delivered
            .lock()
            .expect("delivered")
            .values()
            .map(Vec::len)
            .sum();
        (total >= 100).then_some(())
    });
    for (key, ns) in delivered.lock().expect("delivered").iter() {
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(ns, &sorted, "key {key} out of order");
        assert_eq!(ns.len(), 20, "key {key}: each exactly once");
    }
}
