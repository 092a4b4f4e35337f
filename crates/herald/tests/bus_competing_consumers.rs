//! Three competing consumers drain 10,000 queued messages while "crashing" at random
//! (a crash = leasing a batch and walking away without acking, then coming back).
//! Every message must be acknowledged exactly once overall: a successful ack answers
//! `acked` exactly once per message (on JetStream at least once: see the note below),
//! and nothing is left in the queue. Seeded.

mod bus_common;
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus_common::*;
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const MESSAGES: usize = 10_000;
const CONSUMERS: u64 = 3;

#[test]
fn every_message_is_acked_exactly_once_despite_consumer_crashes() {
    let seed = seed();
    let server = Server::start();
    let api = server.api();
    api.create_topic("work", 4);
    create_subscription(
        &api,
        &json!({"name": "pool", "topic": "work", "target": {"type": "queue"},
                "visibility_timeout_ms": 400, "max_deliveries": 1000}),
    );
    let events: Vec<Value> = (0..MESSAGES)
        .map(|i| event_with_data(&format!("m{i}"), json!({"i": i})))
        .collect();
    for chunk in events.chunks(1000) {
        api.publish("work", chunk);
    }
    wait_queued(&api, "pool", MESSAGES as u64);

    let acked: Arc<Mutex<HashMap<String, u32>>> = Arc::new(Mutex::new(HashMap::new()));
    let crashes = Arc::new(Mutex::new(0u32));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONSUMERS)
        .map(|n| {
            let api = Api::new(server.addr());
            let acked = Arc::clone(&acked);
            let crashes = Arc::clone(&crashes);
            std::thread::spawn(move || {
                let mut rng =
                    rand::rngs::StdRng::seed_from_u64(seed ^ (n + 1).wrapping_mul(0x9e37_79b9));
                loop {
                    if acked.lock().expect("acked").len() >= MESSAGES {
                        return;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "consumers took too long"
                    );
                    let max = rng.random_range(1..=200);
                    let messages = pull(&api, "pool", max, 400, 200);
                    if messages.is_empty() {
                        continue;
                    }
                    if rng.random_bool(0.1) {
                        // Crash: lease taken, never acked; redelivered after 400 ms.
                        *crashes.lock().expect("crashes") += 1;
                        continue;
                    }
                    // Ack part of the batch, sometimes after a pause (the lease may
                    // expire meanwhile and the message go to another consumer).
                    let keep = if rng.random_bool(0.2) {
                        rng.random_range(0..=messages.len())
                    } else {
                        messages.len()
                    };
                    if rng.random_bool(0.05) {
                        std::thread::sleep(Duration::from_millis(rng.random_range(0..600)));
                    }
                    let batch = &messages[..keep];
                    if batch.is_empty() {
                        continue;
                    }
                    let results = ack(&api, "pool", &receipts(batch));
                    let mut acked = acked.lock().expect("acked");
                    for (message, outcome) in batch.iter().zip(results) {
                        match outcome.as_str() {
                            "acked" => *acked.entry(message_id(message)).or_default() += 1,
                            "lease_lost" | "already_done" => {}
                            other => panic!("unexpected ack outcome {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("consumer thread");
    }
    let acked = acked.lock().expect("acked");
    assert_eq!(acked.len(), MESSAGES, "every message acked");
    let twice: Vec<_> = acked.iter().filter(|(_, n)| **n != 1).collect();
    if common::nats::jetstream_suite() {
        // The lease table refuses an ack within 25 ms of its lease's end; one slower than
        // that (a loaded machine) can still reach JetStream after it handed the message
        // out again, so `acked` twice is possible there (documented), and counted here.
        eprintln!("JetStream: {} messages acked more than once", twice.len());
    } else {
        assert!(twice.is_empty(), "acked more than once: {twice:?}");
    }
    eprintln!(
        "{MESSAGES} messages, {} crashes, {:?}",
        crashes.lock().expect("crashes"),
        started.elapsed()
    );
    // JetStream's counts are read about twice a second.
    wait_for("an empty backlog", Duration::from_secs(5), || {
        (describe(&api, "pool")["stats"]["queue"]["backlog"] == 0).then_some(())
    });
    assert!(pull(&api, "pool", 10, 1_000, 0).is_empty());
}
