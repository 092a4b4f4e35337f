//! Persistent subscriptions over HTTP, black-box against the real server: competing
//! consumers draining events appended while they consume (each event acked exactly
//! once; redeliveries after an expired lease counted), nack → park after the retries
//! → replay, and bad input (unknown group 404, duplicate 409, bad names 400).
//!
//! Replay a failing run with `HERALD_TEST_SEED=<seed printed by the test>`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::persistent::{ack, append, id_of, nack, outcomes, read};
use common::Server;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const EVENTS: usize = 1000;
const CONSUMERS: usize = 3;

#[derive(Default)]
struct Tally {
    /// Per event id: how many acks answered `acked`.
    acked: BTreeMap<String, u32>,
    /// Per event id: deliveries seen.
    delivered: BTreeMap<String, u32>,
    /// Acks answered `lease_lost` or `already_done` (a late consumer).
    late_acks: u32,
    /// Deliveries a consumer dropped without acking (a simulated crash).
    abandoned: u32,
}

#[test]
fn competing_consumers_drain_events_appended_while_they_consume() {
    let seed = common::seed();
    let server = Server::start();
    let api = server.api();
    api.post_json(
        "/v1/persistent",
        &json!({"group": "billing", "target": "order-*", "visibility_timeout_ms": 5000}),
    )
    .expect_status(201);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = Arc::new(AtomicBool::new(false));
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| {
            let (api, tally, done) = (api.clone(), Arc::clone(&tally), Arc::clone(&done));
            thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ (c as u64 + 1));
                while !done.load(Ordering::Acquire) {
                    let max = rng.random_range(1..=25);
                    let events = read(
                        &api,
                        "billing",
                        json!({"max": max, "wait_ms": 200, "visibility_timeout_ms": 1000}),
                    );
                    if events.is_empty() {
                        continue;
                    }
                    {
                        let mut t = tally.lock().expect("tally");
                        for e in &events {
                            *t.delivered.entry(id_of(e)).or_default() += 1;
                        }
                        // Now and then a consumer "crashes" with its batch: the leases
                        // expire and another consumer gets the events.
                        if rng.random_bool(0.03) {
                            t.abandoned += events.len() as u32;
                            continue;
                        }
                    }
                    let outcomes = ack(&api, "billing", &events);
                    let mut t = tally.lock().expect("tally");
                    for (e, outcome) in events.iter().zip(outcomes) {
                        match outcome.as_str() {
                            "acked" => *t.acked.entry(id_of(e)).or_default() += 1,
                            "lease_lost" | "already_done" => t.late_acks += 1,
                            other => panic!("unexpected ack outcome {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    // Append while they consume: order events in batches over 10 streams, with events
    // of another category in between that the group must not see.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut expected = BTreeSet::new();
    let mut n = 0;
    while n < EVENTS {
        let count = rng.random_range(1..=20).min(EVENTS - n);
        let ids: Vec<String> = (n..n + count).map(|i| format!("o-{i}")).collect();
        expected.extend(ids.iter().cloned());
        append(&api, &format!("order-{}", rng.random_range(0..10)), &ids);
        append(&api, "user-1", &[format!("u-{n}")]);
        n += count;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally.lock().expect("tally").acked.len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "consumers did not drain the group in time"
        );
        thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::Release);
    for consumer in consumers {
        consumer.join().expect("consumer thread");
    }
    let t = tally.lock().expect("tally");
    let acked: BTreeSet<String> = t.acked.keys().cloned().collect();
    assert_eq!(
        acked, expected,
        "every order event, and only those, was acked"
    );
    for (id, count) in &t.acked {
        assert_eq!(*count, 1, "{id} acked {count} times");
    }
    let redeliveries: u32 = t.delivered.values().map(|d| d - 1).sum();
    eprintln!(
        "{EVENTS} events, {CONSUMERS} consumers: {redeliveries} redeliveries, {} abandoned deliveries, {} late acks",
        t.abandoned, t.late_acks
    );
    // Every delivery ended in exactly one of: the event's single `acked`, a late ack
    // after its lease expired, or an abandoned batch. So each redelivery is explained
    // by one expired lease, and no event was acked twice.
    assert_eq!(
        redeliveries,
        t.late_acks + t.abandoned,
        "redeliveries come only from expired leases"
    );
    let info = api.get("/v1/persistent/billing").expect_status(200).body;
    let end = api
        .get("/v1/streams/$all?from=end&direction=backwards&max=1")
        .expect_status(200)
        .body;
    let last_order_position = api
        .get("/v1/streams/$all?from=end&direction=backwards&max=100")
        .expect_status(200)
        .body["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| {
            e["stream"]
                .as_str()
                .is_some_and(|s| s.starts_with("order-"))
        })
        .map(|e| e["position"].as_u64().expect("position"))
        .expect("an order event near the end");
    let checkpoint = info["checkpoint"].as_u64().expect("checkpoint");
    assert!(checkpoint >= last_order_position, "{info} vs {end}");
    assert_eq!(
        (info["in_flight"].as_u64(), info["pending"].as_u64()),
        (Some(0), Some(0)),
        "{info}"
    );
}

#[test]
fn nack_retries_then_parks_and_replay_brings_events_back() {
    let server = Server::start();
    let api = server.api();
    append(&api, "pay-1", &["p0".into(), "p1".into(), "p2".into()]);
    api.post_json(
        "/v1/persistent",
        &json!({"group": "g", "target": "pay-1", "max_retries": 2}),
    )
    .expect_status(201);
    // p0 fails every time: 3 deliveries (1 + 2 retries), then it is parked.
    let mut parked_outcome = None;
    for attempt in 1..=3u64 {
        let events = read(&api, "g", json!({"max": 10}));
        let p0: Vec<Value> = events
            .iter()
            .filter(|e| id_of(e) == "p0")
            .cloned()
            .collect();
        assert_eq!(p0.len(), 1, "attempt {attempt}: {events:?}");
        assert_eq!(p0[0]["delivery_count"].as_u64(), Some(attempt));
        let others: Vec<Value> = events
            .iter()
            .filter(|e| id_of(e) != "p0")
            .cloned()
            .collect();
        let acked = ack(&api, "g", &others);
        assert!(acked.iter().all(|o| o == "acked"), "{acked:?}");
        parked_outcome = nack(&api, "g", &p0, "retry", "card declined").pop();
    }
    assert_eq!(parked_outcome.as_deref(), Some("parked"));
    assert!(
        read(&api, "g", json!({"max": 10})).is_empty(),
        "nothing left to deliver"
    );
    let info = api.get("/v1/persistent/g").expect_status(200).body;
    assert_eq!(info["parked"].as_u64(), Some(1), "{info}");
    let last = api
        .get("/v1/streams/pay-1?from=end&direction=backwards&max=1")
        .expect_status(200)
        .body;
    assert_eq!(
        info["checkpoint"], last["events"][0]["position"],
        "parked events do not hold the checkpoint back"
    );
    let parked = api.get("/v1/persistent/g/parked").expect_status(200).body;
    let list = parked["parked"].as_array().expect("parked");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["reason"], "card declined");
    assert_eq!(list[0]["delivery_count"].as_u64(), Some(3));
    assert_eq!(list[0]["event"]["event"]["id"], "p0");
    // An explicit park and a skip.
    append(&api, "pay-1", &["p3".into(), "p4".into()]);
    let events = read(&api, "g", json!({"max": 10}));
    let by_id = |id: &str| -> Vec<&Value> { events.iter().filter(|e| id_of(e) == id).collect() };
    assert_eq!(nack(&api, "g", &by_id("p3"), "park", ""), ["parked"]);
    assert_eq!(nack(&api, "g", &by_id("p4"), "skip", ""), ["skipped"]);
    // Replay: both parked events come back, with a fresh delivery count.
    let replayed = api
        .post_json("/v1/persistent/g/parked/replay", &json!({}))
        .expect_status(200)
        .body;
    assert_eq!(replayed["replayed"].as_u64(), Some(2));
    assert_eq!(
        api.get("/v1/persistent/g").expect_status(200).body["parked"].as_u64(),
        Some(0)
    );
    let events = read(&api, "g", json!({"max": 10}));
    let ids: BTreeSet<String> = events.iter().map(id_of).collect();
    assert_eq!(ids, ["p0".to_string(), "p3".to_string()].into());
    assert!(events
        .iter()
        .all(|e| e["delivery_count"].as_u64() == Some(1)));
    assert!(ack(&api, "g", &events).iter().all(|o| o == "acked"));
    // CLI over the same server.
    let out = common::run_cli(
        &server.url(),
        &["--json", "streams", "persistent", "info", "g"],
        None,
        Duration::from_secs(30),
    )
    .success();
    let lines = out.json_lines();
    assert_eq!(lines[0]["group"], "g");
    assert_eq!(lines[0]["parked"].as_u64(), Some(0));
}

#[test]
fn bad_input_is_refused_with_json_errors() {
    let server = Server::start();
    let api = server.api();
    api.post_json("/v1/persistent", &json!({"group": "g", "target": "$all"}))
        .expect_status(201);
    api.post_json("/v1/persistent", &json!({"group": "g", "target": "$all"}))
        .expect_error(409, "subscription_exists");
    for (body, field) in [
        (json!({"group": "bad name", "target": "$all"}), "group"),
        (json!({"group": "h", "target": "bad stream!"}), "target"),
        (json!({"group": "h", "target": "*"}), "target"),
        (json!({"group": "h"}), "target"),
        (
            json!({"group": "h", "target": "$all", "start": "soon"}),
            "start",
        ),
        (
            json!({"group": "h", "target": "$all", "visibility_timeout_ms": 0}),
            "visibility_timeout_ms",
        ),
        (
            json!({"group": "h", "target": "$all", "max_retries": 100000}),
            "max_retries",
        ),
        (
            json!({"group": "h", "target": "$all", "colour": "red"}),
            "colour",
        ),
    ] {
        let reply = api.post_json("/v1/persistent", &body);
        reply.expect_error(400, "invalid_argument");
        assert_eq!(reply.error_field(), Some(field), "{body}");
    }
    api.get("/v1/persistent/nope")
        .expect_error(404, "subscription_not_found");
    api.post_json("/v1/persistent/nope/read", &json!({}))
        .expect_error(404, "subscription_not_found");
    api.post_json("/v1/persistent/nope/ack", &json!({"receipts": ["1.1"]}))
        .expect_error(404, "subscription_not_found");
    api.delete("/v1/persistent/nope")
        .expect_error(404, "subscription_not_found");
    api.post_json("/v1/persistent/g/read", &json!({"max": 0}))
        .expect_error(400, "invalid_argument");
    api.post_json("/v1/persistent/g/read", &json!({"wait_ms": 600000}))
        .expect_error(400, "invalid_argument");
    api.post_json("/v1/persistent/g/ack", &json!({"receipts": []}))
        .expect_error(400, "invalid_argument");
    api.post_json("/v1/persistent/g/ack", &json!({"receipts": "x"}))
        .expect_error(400, "invalid_argument");
    api.post_json(
        "/v1/persistent/g/nack",
        &json!({"receipts": ["1.1"], "action": "explode"}),
    )
    .expect_error(400, "invalid_argument");
    let reply = api
        .post_json(
            "/v1/persistent/g/ack",
            &json!({"receipts": ["garbage", "99.ff"]}),
        )
        .expect_status(200)
        .body;
    // On JetStream a receipt is an ack subject naming the group's stream: the second is
    // not one either.
    let second = if common::nats::jetstream_suite() {
        "invalid"
    } else {
        "lease_lost"
    };
    assert_eq!(outcomes(&reply), ["invalid", second]);
    let listed = api.get("/v1/persistent").expect_status(200).body;
    assert_eq!(listed["subscriptions"].as_array().map(Vec::len), Some(1));
    api.delete("/v1/persistent/g").expect_status(200);
    api.get("/v1/persistent/g")
        .expect_error(404, "subscription_not_found");
    api.post_json("/v1/persistent", &json!({"group": "g", "target": "$all"}))
        .expect_status(201);
}
