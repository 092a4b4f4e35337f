//! Persistent subscriptions across a restart and a SIGKILL: the checkpoint and the
//! parked list persist, events in flight (leased, not acked) are delivered again, and
//! an event whose ack returned `acked` is never delivered again (acks are fsynced
//! before they return). On JetStream storage the leases live in JetStream, not in the
//! gateway: they outlive a restart (their receipts still ack) and events leased by a
//! killed gateway come again once their visibility timeout passes.
//!
//! Replay a failing run with `HERALD_TEST_SEED=<seed printed by the test>`.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::persistent::{self, id_of, receipts};
use common::{Api, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn append_jobs(api: &Api, count: usize) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for chunk in 0..count / 10 {
        let batch: Vec<String> = (0..10).map(|i| format!("j-{}", chunk * 10 + i)).collect();
        let events: Vec<Value> = batch.iter().map(|id| common::event(id)).collect();
        api.post_json(
            &format!("/v1/streams/job-{}", chunk % 3),
            &json!({ "events": events }),
        )
        .expect_status(200);
        ids.extend(batch);
    }
    ids
}

fn read(api: &Api, max: u64) -> Vec<Value> {
    persistent::read(api, "g", json!({ "max": max }))
}

fn ack(api: &Api, events: &[Value]) -> Vec<String> {
    persistent::ack(api, "g", events)
}

/// Reads and acks until a read comes back empty; returns the delivered events.
fn drain(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let events = read(api, 100);
        if events.is_empty() {
            return out;
        }
        assert!(ack(api, &events).iter().all(|o| o == "acked"));
        out.extend(events);
    }
}

fn post(api: &Api, path: &str, body: &Value) -> reqwest::blocking::RequestBuilder {
    api.client()
        .post(api.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
}

fn create_group(api: &Api, visibility_ms: u64) {
    api.post_json(
        "/v1/persistent",
        &json!({"group": "g", "target": "job-*", "visibility_timeout_ms": visibility_ms, "max_retries": 3}),
    )
    .expect_status(201);
}

fn jetstream() -> bool {
    common::nats::jetstream_suite()
}

#[test]
fn checkpoint_parked_list_and_in_flight_events_survive_a_restart() {
    let mut server = Server::start();
    let api = server.api();
    let all = append_jobs(&api, 300);
    create_group(&api, 600_000);
    let first = read(&api, 100);
    assert_eq!(first.len(), 100);
    let (to_ack, rest) = first.split_at(60);
    let (to_park, in_flight) = rest.split_at(10);
    assert!(ack(&api, to_ack).iter().all(|o| o == "acked"));
    let parked = persistent::nack(&api, "g", to_park, "park", "poison");
    assert!(parked.iter().all(|o| o == "parked"), "{parked:?}");
    let before = api.get("/v1/persistent/g").expect_status(200).body;
    let parked_before =
        api.get("/v1/persistent/g/parked").expect_status(200).body["parked"].clone();
    assert_eq!(before["in_flight"].as_u64(), Some(30));
    assert_eq!(
        before["checkpoint"],
        to_park.last().expect("parked")["event"]["position"],
        "{before}"
    );

    server.terminate();
    server.restart();
    let api = server.api();
    let after = api.get("/v1/persistent/g").expect_status(200).body;
    assert_eq!(after["checkpoint"], before["checkpoint"], "{after}");
    assert_eq!(after["parked"].as_u64(), Some(10));
    assert_eq!(
        api.get("/v1/persistent/g/parked").expect_status(200).body["parked"],
        parked_before
    );
    if jetstream() {
        // The leases are JetStream's: they outlive the gateway, and so do their receipts.
        assert_eq!(after["in_flight"].as_u64(), Some(30), "{after}");
        assert!(ack(&api, in_flight).iter().all(|o| o == "acked"));
        assert!(ack(&api, in_flight).iter().all(|o| o == "already_done"));
        let rest = drain(&api);
        assert!(rest.iter().all(|e| e["delivery_count"] == 1));
        let mut seen: BTreeSet<String> = first.iter().map(id_of).collect();
        for e in &rest {
            assert!(seen.insert(id_of(e)), "{} delivered twice", id_of(e));
        }
        assert_eq!(seen, all, "no event lost across the restart");
        let done = api.get("/v1/persistent/g").expect_status(200).body;
        assert_eq!(done["parked"].as_u64(), Some(10));
        assert_eq!(
            (done["in_flight"].as_u64(), done["pending"].as_u64()),
            (Some(0), Some(0)),
            "{done}"
        );
        return;
    }
    assert_eq!(
        after["in_flight"].as_u64(),
        Some(0),
        "leases do not survive a restart"
    );
    // The old receipts lost their leases; the in-flight events come again, counted.
    let stale: Vec<Value> = in_flight.to_vec();
    assert!(ack(&api, &stale[..1]).iter().all(|o| o == "lease_lost"));
    let rest = drain(&api);
    let in_flight_ids: BTreeSet<String> = in_flight.iter().map(id_of).collect();
    for e in &rest {
        let expected = if in_flight_ids.contains(&id_of(e)) {
            2
        } else {
            1
        };
        assert_eq!(e["delivery_count"].as_u64(), Some(expected), "{e}");
    }
    let mut seen: BTreeSet<String> = to_ack.iter().chain(to_park).map(id_of).collect();
    for e in &rest {
        assert!(
            seen.insert(id_of(e)),
            "{} delivered after it was acked or parked",
            id_of(e)
        );
    }
    assert_eq!(seen, all, "no event lost across the restart");
    let done = api.get("/v1/persistent/g").expect_status(200).body;
    assert_eq!(done["parked"].as_u64(), Some(10));
    assert_eq!(
        (done["in_flight"].as_u64(), done["pending"].as_u64()),
        (Some(0), Some(0)),
        "{done}"
    );
}

#[test]
fn acked_events_are_not_redelivered_after_kill_9() {
    let seed = common::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start();
    let api = server.api();
    let all = append_jobs(&api, 2000);
    // On JetStream, leases held at the kill lapse after the visibility timeout.
    create_group(&api, if jetstream() { 3000 } else { 600_000 });
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let uncertain = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (api, acked, stop) = (api.clone(), Arc::clone(&acked), Arc::clone(&stop));
        let uncertain = Arc::clone(&uncertain);
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let Ok(reply) = api.try_send(
                    post(&api, "/v1/persistent/g/read", &json!({"max": 20})),
                    "read".into(),
                ) else {
                    return;
                };
                let events = reply.body["events"].as_array().cloned().unwrap_or_default();
                if events.is_empty() {
                    continue;
                }
                let Ok(reply) = api.try_send(
                    post(
                        &api,
                        "/v1/persistent/g/ack",
                        &json!({"receipts": receipts(&events)}),
                    ),
                    "ack".into(),
                ) else {
                    // Killed while acking: the server may or may not have made it durable.
                    uncertain
                        .lock()
                        .expect("uncertain")
                        .extend(events.iter().map(id_of));
                    return;
                };
                let Some(results) = reply.body["results"].as_array() else {
                    return;
                };
                let mut acked = acked.lock().expect("acked");
                for (e, r) in events.iter().zip(results) {
                    if r["outcome"] == "acked" {
                        acked.insert(id_of(e));
                    }
                }
            }
        })
    };
    let at = rng.random_range(50..=400);
    common::wait_for("some acks before the kill", Duration::from_secs(60), || {
        (acked.lock().expect("acked").len() >= at).then_some(())
    });
    server.kill9();
    stop.store(true, Ordering::Release);
    consumer.join().expect("consumer thread");
    let acked_before = acked.lock().expect("acked").clone();
    eprintln!("killed after {} acked events", acked_before.len());

    server.restart();
    let api = server.api();
    let info = api.get("/v1/persistent/g").expect_status(200).body;
    let rest = if jetstream() {
        // Events leased when the gateway died come again after their lease lapses.
        let mut rest = Vec::new();
        common::wait_for(
            "every event delivered again",
            Duration::from_secs(60),
            || {
                rest.extend(drain(&api));
                // An ack cut off by the kill may have gone through: such events need not come.
                let seen: BTreeSet<String> = acked_before
                    .iter()
                    .cloned()
                    .chain(uncertain.lock().expect("uncertain").iter().cloned())
                    .chain(rest.iter().map(id_of))
                    .collect();
                (seen == all).then_some(())
            },
        );
        rest
    } else {
        assert_eq!(info["in_flight"].as_u64(), Some(0), "{info}");
        drain(&api)
    };
    let mut seen = acked_before.clone();
    for e in &rest {
        let id = id_of(e);
        assert!(
            !acked_before.contains(&id),
            "{id} was acked before the kill and came again"
        );
        assert!(
            seen.insert(id.clone()),
            "{id} delivered twice after the restart"
        );
    }
    // An ack cut off by the kill may have been made durable before it: such events need
    // not come again (measured once embedded: one batch of 20 missing, its ack in flight).
    seen.extend(uncertain.lock().expect("uncertain").iter().cloned());
    assert_eq!(
        seen, all,
        "every event was acked before the kill or delivered after it"
    );
}
