//! Event-store persistent subscriptions shared by two gateways on one JetStream: a group
//! created on one gateway is read, acked, nacked, parked and replayed through either;
//! a short read lease lapses and the other gateway gets the event again; a gateway killed
//! with -9 while it holds leases loses nothing: the other gateway gets those events again
//! after the visibility timeout, every appended event is acked at least once, and the
//! group goes on.
//!
//! Replay a failing run with `HERALD_TEST_SEED=<seed printed by the test>`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::nats::two_gateways;
use common::persistent::{ack, append, id_of, nack, outcomes, read};
use common::{wait_for, Api};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// Reads through `api` until the events of every id in `ids` came (other events are
/// returned too); by id, the last delivery of each.
fn read_until(api: &Api, group: &str, ids: &BTreeSet<String>) -> BTreeMap<String, Value> {
    let mut got = BTreeMap::new();
    wait_for(&format!("{ids:?} delivered"), WAIT, || {
        for e in read(api, group, json!({"max": 100, "wait_ms": 500})) {
            got.insert(id_of(&e), e);
        }
        ids.iter().all(|id| got.contains_key(id)).then_some(())
    });
    got
}

fn info(api: &Api, group: &str) -> Value {
    api.get(&format!("/v1/persistent/{group}"))
        .expect_status(200)
        .body
}

#[test]
fn a_group_is_read_acked_parked_and_replayed_through_either_gateway() {
    let (_nats, one, two) = two_gateways();
    let (a, b) = (one.api(), two.api());
    a.post_json(
        "/v1/persistent",
        &json!({"group": "g", "target": "pay-*", "visibility_timeout_ms": 20000, "max_retries": 1}),
    )
    .expect_status(201);
    // One registry: the second gateway cannot create the same name.
    b.post_json("/v1/persistent", &json!({"group": "g", "target": "$all"}))
        .expect_error(409, "subscription_exists");
    wait_for("the group listed on gateway 2", WAIT, || {
        (b.get("/v1/persistent/g").status == 200).then_some(())
    });

    let ids: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    append(&a, "pay-1", &ids);
    append(&a, "user-1", &["u0".to_string()]);
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    let got = read_until(&b, "g", &all);
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        all,
        "only pay-* events"
    );
    assert!(got.values().all(|e| e["delivery_count"] == 1));
    let ev = |id: &str| got.get(id).expect("delivered");

    // Ack through gateway 1 what gateway 2 leased; again through gateway 2: already done.
    let first: Vec<&Value> = ["p0", "p1", "p2", "p3", "p4", "p8", "p9"]
        .iter()
        .map(|i| ev(i))
        .collect();
    assert!(ack(&a, "g", &first).iter().all(|o| o == "acked"));
    assert!(ack(&b, "g", &first).iter().all(|o| o == "already_done"));
    // A receipt of another group's queue is not a receipt of this one.
    let forged = json!({"receipts": ["HERALD_x_0.herald-es.1.1.1.1.0"]});
    let reply = a
        .post_json("/v1/persistent/g/ack", &forged)
        .expect_status(200)
        .body;
    assert_eq!(outcomes(&reply), ["invalid"]);

    // Park one and skip one through gateway 2; retry one: through gateway 1 it comes with
    // delivery count 2, and a second retry (max_retries 1) parks it.
    assert_eq!(nack(&b, "g", &[ev("p5")], "park", "poison"), ["parked"]);
    assert_eq!(nack(&b, "g", &[ev("p6")], "skip", ""), ["skipped"]);
    assert_eq!(nack(&b, "g", &[ev("p7")], "retry", "flaky"), ["retried"]);
    let again = read_until(&a, "g", &["p7".to_string()].into());
    let p7 = again.get("p7").expect("p7");
    assert_eq!(p7["delivery_count"], 2, "{p7}");
    assert_eq!(nack(&b, "g", &[ev("p7")], "retry", "x"), ["lease_lost"]);
    assert_eq!(nack(&a, "g", &[p7], "retry", "still flaky"), ["parked"]);

    // The parked list is shared.
    let parked = wait_for("two parked events on gateway 2", WAIT, || {
        let list = b.get("/v1/persistent/g/parked").expect_status(200).body["parked"].clone();
        (list.as_array().map(Vec::len) == Some(2)).then_some(list)
    });
    let reasons: BTreeSet<(String, String, u64)> = parked
        .as_array()
        .expect("parked")
        .iter()
        .map(|p| {
            (
                p["event"]["event"]["id"].as_str().expect("id").to_string(),
                p["reason"].as_str().expect("reason").to_string(),
                p["delivery_count"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("p5".to_string(), "poison".to_string(), 1),
            ("p7".to_string(), "still flaky".to_string(), 2)
        ]
        .into()
    );
    // Paging by parked index.
    let first_index = parked[0]["parked_index"].as_u64().expect("index");
    let page = b
        .get(&format!(
            "/v1/persistent/g/parked?from={}&max=1",
            first_index + 1
        ))
        .expect_status(200)
        .body;
    assert_eq!(page["parked"][0]["parked_index"], parked[1]["parked_index"]);

    // Replay through gateway 2; gateway 1 gets both again, fresh.
    let replayed = b
        .post_json("/v1/persistent/g/parked/replay", &json!({}))
        .expect_status(200)
        .body;
    assert_eq!(replayed["replayed"], 2);
    wait_for("the parked list empty on gateway 1", WAIT, || {
        (info(&a, "g")["parked"] == 0).then_some(())
    });
    let back = read_until(&a, "g", &["p5".to_string(), "p7".to_string()].into());
    assert!(back.values().all(|e| e["delivery_count"] == 1), "{back:?}");
    let back: Vec<&Value> = back.values().collect();
    assert!(ack(&b, "g", &back).iter().all(|o| o == "acked"));

    // A lease shorter than the group's (read visibility 300 ms): the event comes again
    // through the other gateway and the first receipt has lost it.
    append(&b, "pay-2", &["p10".to_string(), "p11".to_string()]);
    let short = read(
        &a,
        "g",
        json!({"max": 10, "visibility_timeout_ms": 300, "wait_ms": 5000}),
    );
    assert_eq!(
        short.iter().map(id_of).collect::<Vec<_>>(),
        ["p10", "p11"].map(String::from)
    );
    let again = read_until(&b, "g", &["p10".to_string(), "p11".to_string()].into());
    assert!(
        again.values().all(|e| e["delivery_count"] == 2),
        "{again:?}"
    );
    let short: Vec<&Value> = short.iter().collect();
    assert!(ack(&a, "g", &short).iter().all(|o| o == "lease_lost"));
    let again: Vec<&Value> = again.values().collect();
    assert!(ack(&a, "g", &again).iter().all(|o| o == "acked"));

    // Everything handled: both gateways agree.
    let last_pay = short[1]["event"]["position"].clone();
    for api in [&a, &b] {
        let info = wait_for("the group drained", WAIT, || {
            let info = info(api, "g");
            (info["in_flight"] == 0 && info["pending"] == 0 && info["parked"] == 0).then_some(info)
        });
        assert!(
            info["checkpoint"].as_u64() >= last_pay.as_u64(),
            "{info} vs {last_pay}"
        );
    }

    // Deleted through gateway 2: gone on gateway 1.
    b.delete("/v1/persistent/g").expect_status(200);
    wait_for("the group gone on gateway 1", WAIT, || {
        (a.get("/v1/persistent/g").status == 404).then_some(())
    });
    a.post_json("/v1/persistent/g/read", &json!({"max": 1}))
        .expect_error(404, "subscription_not_found");
}

#[test]
fn a_killed_gateways_leases_lapse_and_the_group_goes_on() {
    let seed = common::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let (_nats, mut one, two) = two_gateways();
    let (a, b) = (one.api(), two.api());
    b.post_json(
        "/v1/persistent",
        &json!({"group": "jobs", "target": "job-*", "visibility_timeout_ms": 3000}),
    )
    .expect_status(201);
    let mut appended = BTreeSet::new();
    let mut n = 0;
    while n < 300 {
        let count = rng.random_range(1..=30).min(300 - n);
        let ids: Vec<String> = (n..n + count).map(|i| format!("j-{i}")).collect();
        let api = if rng.random_bool(0.5) { &a } else { &b };
        append(api, &format!("job-{}", rng.random_range(0..4)), &ids);
        appended.extend(ids);
        n += count;
    }

    // Gateway 1 leases some events and acks part of them, then dies holding the rest.
    let mut acked: BTreeMap<String, u32> = BTreeMap::new();
    // Held by gateway 1: when its lease began at the earliest.
    let mut held: BTreeMap<String, Instant> = BTreeMap::new();
    let rounds = rng.random_range(2..=5);
    for _ in 0..rounds {
        let leased_at = Instant::now();
        let events = read(
            &a,
            "jobs",
            json!({"max": rng.random_range(10..=40), "wait_ms": 2000}),
        );
        let (to_ack, keep): (Vec<&Value>, Vec<&Value>) =
            events.iter().partition(|_| rng.random_bool(0.5));
        for (e, o) in to_ack.iter().zip(ack(&a, "jobs", &to_ack)) {
            assert_eq!(o, "acked");
            *acked.entry(id_of(e)).or_default() += 1;
        }
        held.extend(keep.iter().map(|e| (id_of(e), leased_at)));
    }
    assert!(!held.is_empty(), "gateway 1 holds leases when it is killed");
    eprintln!(
        "gateway 1 killed holding {} leases, {} acked",
        held.len(),
        acked.len()
    );
    one.kill9();

    // Gateway 2 drains the group: the held events come again (delivery count 2) once
    // their leases lapse, not before the visibility timeout.
    let mut redelivered = BTreeSet::new();
    let mut earliest = Duration::MAX;
    wait_for(
        "every appended event acked",
        Duration::from_secs(60),
        || {
            let events = read(&b, "jobs", json!({"max": 100, "wait_ms": 500}));
            let events: Vec<&Value> = events.iter().collect();
            for e in &events {
                if let Some(leased_at) = held.get(&id_of(e)) {
                    assert!(e["delivery_count"].as_u64() >= Some(2), "{e}");
                    earliest = earliest.min(leased_at.elapsed());
                    redelivered.insert(id_of(e));
                }
            }
            for (e, o) in events.iter().zip(ack(&b, "jobs", &events)) {
                assert_eq!(o, "acked", "{e}");
                *acked.entry(id_of(e)).or_default() += 1;
            }
            (acked.keys().cloned().collect::<BTreeSet<_>>() == appended).then_some(())
        },
    );
    assert_eq!(
        redelivered,
        held.keys().cloned().collect::<BTreeSet<_>>(),
        "every held event came again"
    );
    // Leased no earlier than `leased_at`, they came back no sooner than 3 s after it.
    assert!(
        earliest >= Duration::from_millis(2900),
        "a held event came back {earliest:?} after its lease began (visibility 3 s)"
    );
    let twice: Vec<_> = acked.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "acked more than once: {twice:?}");

    // The group goes on: new events through gateway 2.
    let more: Vec<String> = (0..20).map(|i| format!("late-{i}")).collect();
    append(&b, "job-9", &more);
    let got = read_until(&b, "jobs", &more.iter().cloned().collect());
    let got: Vec<&Value> = got.values().collect();
    assert!(ack(&b, "jobs", &got).iter().all(|o| o == "acked"));
    let info = wait_for("the group drained", WAIT, || {
        let info = info(&b, "jobs");
        (info["in_flight"] == 0 && info["pending"] == 0).then_some(info)
    });
    eprintln!("final info: {info}");
}
