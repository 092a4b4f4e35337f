//! The event store on JetStream through two Herald gateways on one nats-server: one set
//! of streams and one `$all` order whichever gateway appends, expected versions checked
//! across gateways (exactly one of two racing appends wins, nothing lost or duplicated),
//! and a gateway killed and restarted rebuilds its mirror and serves the same `$all`.
//!
//! Replay a failing run with `HERALD_TEST_SEED=<seed printed by the test>`.

mod common;

use std::thread;
use std::time::Duration;

use common::nats::{gateway, NatsServer};
use common::{wait_for, Api};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

fn append(api: &Api, stream: &str, expected: Value, ids: &[String]) -> common::Reply {
    let events: Vec<Value> = ids.iter().map(|id| common::event(id)).collect();
    api.post_json(
        &format!("/v1/streams/{stream}"),
        &json!({"expected_version": expected, "events": events}),
    )
}

/// Every event of `$all` as `(position, stream, version, id)`.
fn all(api: &Api) -> Vec<(u64, String, u64, String)> {
    let reply = api
        .get("/v1/streams/$all?from=0&max=10000")
        .expect_status(200);
    reply.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().expect("position"),
                e["stream"].as_str().expect("stream").to_string(),
                e["version"].as_u64().expect("version"),
                e["event"]["id"].as_str().expect("id").to_string(),
            )
        })
        .collect()
}

fn stream_ids(api: &Api, stream: &str) -> Vec<String> {
    let reply = api
        .get(&format!("/v1/streams/{stream}?max=10000"))
        .expect_status(200);
    reply.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"]["id"].as_str().expect("id").to_string())
        .collect()
}

/// Waits until the gateway's `$all` holds `count` events and returns it.
fn all_when(api: &Api, count: usize) -> Vec<(u64, String, u64, String)> {
    wait_for(&format!("{count} events in $all"), WAIT, || {
        let events = all(api);
        (events.len() == count).then_some(events)
    })
}

#[test]
fn appends_alternating_between_gateways_share_one_stream_and_one_all_order() {
    let nats = NatsServer::start_temp();
    let one = gateway(&nats.url(), &[]);
    let two = gateway(&nats.url(), &[]);
    let (a, b) = (one.api(), two.api());
    let mut ids = Vec::new();
    let mut expected = json!("no_stream");
    for i in 0..12u64 {
        let api = if i % 2 == 0 { &a } else { &b };
        let id = format!("e{i}");
        // The other gateway has just written: its expected version holds here too.
        let reply =
            append(api, "order-1", expected.clone(), std::slice::from_ref(&id)).expect_status(200);
        assert_eq!(reply.body["next_expected_version"], i);
        expected = json!(i);
        ids.push(id);
        // A second stream interleaves in `$all`.
        append(api, "audit", json!("any"), &[format!("audit-{i}")]).expect_status(200);
    }
    let on_a = all_when(&a, 24);
    let on_b = all_when(&b, 24);
    assert_eq!(on_a, on_b, "one $all order on both gateways");
    let positions: Vec<u64> = on_a.iter().map(|e| e.0).collect();
    assert_eq!(positions, (0..24).collect::<Vec<u64>>());
    assert_eq!(stream_ids(&a, "order-1"), ids);
    assert_eq!(stream_ids(&b, "order-1"), ids);
    // A stale expected version is refused on either gateway with the current version.
    for api in [&a, &b] {
        let reply = append(api, "order-1", json!(3), &["stale".to_string()]);
        reply.expect_error(409, "wrong_expected_version");
        assert_eq!(reply.body["current_version"], 11);
    }
}

#[test]
fn racing_appends_with_one_expected_version_have_exactly_one_winner() {
    let seed = common::seed();
    let nats = NatsServer::start_temp();
    let one = gateway(&nats.url(), &[]);
    let two = gateway(&nats.url(), &[]);
    let apis = [one.api(), two.api()];
    let rounds = 25u64;
    let mut winners = Vec::new();
    for round in 0..rounds {
        let expected = if round == 0 {
            json!("no_stream")
        } else {
            json!(round - 1)
        };
        let racers: Vec<_> = apis
            .iter()
            .enumerate()
            .map(|(g, api)| {
                let api = api.clone();
                let expected = expected.clone();
                // Seeded jitter so the two requests overlap in different ways.
                let delay_us =
                    StdRng::seed_from_u64(seed ^ (round * 2 + g as u64)).random_range(0..2_000u64);
                thread::spawn(move || {
                    thread::sleep(Duration::from_micros(delay_us));
                    let id = format!("g{g}-r{round}");
                    (id.clone(), append(&api, "race", expected, &[id]))
                })
            })
            .collect();
        let results: Vec<(String, common::Reply)> = racers
            .into_iter()
            .map(|r| r.join().expect("racer"))
            .collect();
        let mut won = Vec::new();
        for (id, reply) in &results {
            match reply.status {
                200 => {
                    assert_eq!(reply.body["next_expected_version"], round);
                    won.push(id.clone());
                }
                409 => {
                    reply.expect_error(409, "wrong_expected_version");
                    assert_eq!(reply.body["current_version"], round, "round {round}");
                }
                other => panic!("round {round}: {other}: {}", reply.text),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one winner");
        winners.extend(won);
    }
    // Nothing lost, nothing duplicated, the same on both gateways.
    for api in &apis {
        let ids = wait_for("every winner readable", WAIT, || {
            let ids = stream_ids(api, "race");
            (ids.len() == winners.len()).then_some(ids)
        });
        assert_eq!(ids, winners);
    }
    assert_eq!(all(&apis[0]), all(&apis[1]));
}

#[test]
fn a_killed_gateway_rebuilds_its_mirror_and_serves_the_same_all() {
    let nats = NatsServer::start_temp();
    let mut one = gateway(&nats.url(), &[]);
    let two = gateway(&nats.url(), &[]);
    for i in 0..20u64 {
        let api = if i % 3 == 0 { one.api() } else { two.api() };
        append(
            &api,
            &format!("acct-{}", i % 4),
            json!("any"),
            &[format!("x{i}")],
        )
        .expect_status(200);
    }
    let before = all_when(&one.api(), 20);
    one.kill9();
    // Written while the gateway is down: its mirror must pick these up on restart.
    for i in 20..25u64 {
        append(&two.api(), "acct-0", json!("any"), &[format!("x{i}")]).expect_status(200);
    }
    one.restart();
    let after = all_when(&one.api(), 25);
    assert_eq!(after[..20], before[..]);
    assert_eq!(after, all(&two.api()));
    // Writes continue from the rebuilt state with the right versions.
    let reply = append(
        &one.api(),
        "acct-0",
        json!(9),
        &["after-restart".to_string()],
    )
    .expect_status(200);
    assert_eq!(reply.body["next_expected_version"], 10);
    assert_eq!(reply.body["position"], 25);
}
