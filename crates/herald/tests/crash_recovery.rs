//! Durability under SIGKILL: concurrent producers publish keyed batches to an
//! `fsync=always` topic, the server is killed at a random moment, restarted on the same
//! data directory, and every acknowledged event must be there exactly once at its
//! acknowledged (partition, offset); nothing rejected may appear and nothing may appear
//! twice. Also: SIGTERM is graceful (exit 0, nothing acknowledged lost).
//!
//! Replay a failing run with `HERALD_TEST_SEED=<seed printed by the test>`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{parse_acks, record_id, record_offset, Api, Server};
use herald_core::partitioner::partition_for_key;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const TOPIC: &str = "durable";
const PARTITIONS: u32 = 3;
const PRODUCERS: usize = 3;
const KEYS_PER_PRODUCER: usize = 4;
const BATCH_EVENTS_MAX: usize = 8;
const CYCLES: usize = 20;

/// What one publish request came to.
#[derive(Debug)]
enum Outcome {
    /// 200: the events are durable at these positions.
    Acked(Vec<common::Ack>),
    /// A definite refusal (429, 503): none of these events may ever appear.
    Rejected(Vec<String>),
    /// No answer (the server died): each event may appear at most once.
    Unknown(Vec<String>),
}

/// Everything the producers were told, across all cycles.
#[derive(Default)]
struct Ledger {
    /// Events that must be at exactly this (partition, offset): acknowledged, or seen
    /// after a recovery (a recovered log does not un-write events later).
    placed: HashMap<String, (u32, u64)>,
    rejected: HashSet<String>,
    unknown: HashSet<String>,
    key_of: HashMap<String, String>,
    /// Per key, the last acknowledged offset: acks of one key must increase.
    last_offset_of_key: HashMap<String, u64>,
    acked_count: usize,
}

impl Ledger {
    fn record(&mut self, outcomes: Vec<Outcome>) {
        for outcome in outcomes {
            match outcome {
                Outcome::Acked(acks) => {
                    for ack in acks {
                        let key = self.key_of[&ack.id].clone();
                        let expected = partition_for_key(key.as_bytes(), PARTITIONS);
                        assert_eq!(
                            ack.partition, expected,
                            "{ack:?}: key {key} hashes to {expected}"
                        );
                        if let Some(last) = self.last_offset_of_key.insert(key.clone(), ack.offset)
                        {
                            assert!(
                                ack.offset > last,
                                "{ack:?}: offsets of key {key} must increase (last {last})"
                            );
                        }
                        let previous = self
                            .placed
                            .insert(ack.id.clone(), (ack.partition, ack.offset));
                        assert!(previous.is_none(), "{ack:?} acknowledged twice");
                        self.acked_count += 1;
                    }
                }
                Outcome::Rejected(ids) => self.rejected.extend(ids),
                Outcome::Unknown(ids) => self.unknown.extend(ids),
            }
        }
    }

    /// Reads the whole topic and checks it against the ledger.
    fn verify(&mut self, api: &Api, cycle: usize) {
        let mut found: HashMap<String, (u32, u64)> = HashMap::new();
        for partition in 0..PARTITIONS {
            let records = api.fetch_all(TOPIC, partition);
            for (index, record) in records.iter().enumerate() {
                let offset = record_offset(record);
                assert_eq!(
                    offset, index as u64,
                    "cycle {cycle}: partition {partition} offsets are dense from 0"
                );
                let id = record_id(record).to_string();
                if let Some(first) = found.insert(id.clone(), (partition, offset)) {
                    panic!("cycle {cycle}: event {id} appears twice: at {first:?} and at ({partition}, {offset})");
                }
                if let Some(key) = self.key_of.get(&id) {
                    assert_eq!(record["key"], *key, "cycle {cycle}: {record}");
                    assert_eq!(
                        record["event"]["partitionkey"], *key,
                        "cycle {cycle}: {record}"
                    );
                }
            }
        }
        for (id, position) in &self.placed {
            match found.get(id) {
                Some(actual) => assert_eq!(
                    actual, position,
                    "cycle {cycle}: event {id} moved from {position:?} to {actual:?}"
                ),
                None => panic!("cycle {cycle}: acknowledged event {id} at {position:?} is lost"),
            }
        }
        for (id, position) in found {
            if self.placed.contains_key(&id) {
                continue;
            }
            assert!(
                !self.rejected.contains(&id),
                "cycle {cycle}: rejected event {id} appeared at {position:?}"
            );
            assert!(
                self.unknown.contains(&id),
                "cycle {cycle}: event {id} at {position:?} was never published"
            );
            self.unknown.remove(&id);
            self.placed.insert(id, position);
        }
    }
}

fn create_topic(api: &Api, fsync: &str) {
    // Small segments, so recovery crosses segment boundaries.
    let body =
        json!({"name": TOPIC, "partitions": PARTITIONS, "fsync": fsync, "segment_bytes": 65536});
    let reply = api.post_json("/v1/topics", &body);
    if reply.status != 201 {
        eprintln!(
            "segment_bytes=65536 refused ({} {}); using the default",
            reply.status, reply.text
        );
        api.create_topic_with(&json!({"name": TOPIC, "partitions": PARTITIONS, "fsync": fsync}));
    }
}

/// Publishes keyed batches until `stop` or the first transport error.
fn produce(
    api: &Api,
    producer: usize,
    cycle: usize,
    seed: u64,
    stop: &AtomicBool,
) -> (Vec<Outcome>, HashMap<String, String>) {
    let mut rng = StdRng::seed_from_u64(seed ^ ((cycle as u64) << 32) ^ producer as u64);
    let mut outcomes = Vec::new();
    let mut key_of = HashMap::new();
    let mut sequence = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let count = rng.random_range(1..=BATCH_EVENTS_MAX);
        let mut events = Vec::with_capacity(count);
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let id = format!("c{cycle}-p{producer}-{sequence}");
            let key = format!("p{producer}-k{}", rng.random_range(0..KEYS_PER_PRODUCER));
            let padding = "x".repeat(rng.random_range(0..256));
            sequence += 1;
            let mut event = common::keyed_event(&id, &key);
            event["data"] = json!({"sequence": sequence, "padding": padding});
            key_of.insert(id.clone(), key);
            ids.push(id);
            events.push(event);
        }
        let builder = api.raw_builder(
            &format!("/v1/topics/{TOPIC}/events"),
            Some("application/cloudevents-batch+json"),
            Value::Array(events).to_string().into_bytes(),
            &[],
        );
        match api.try_send(builder, format!("publish {ids:?}")) {
            Ok(reply) if reply.status == 200 => {
                let acks = parse_acks(&reply);
                let acked: Vec<&str> = acks.iter().map(|a| a.id.as_str()).collect();
                assert_eq!(acked, ids, "acks in request order: {}", reply.text);
                outcomes.push(Outcome::Acked(acks));
            }
            Ok(reply) if reply.status == 429 || reply.status == 503 => {
                outcomes.push(Outcome::Rejected(ids));
                thread::sleep(Duration::from_millis(5));
            }
            Ok(reply) => panic!("publish: unexpected {} {}", reply.status, reply.text),
            Err(_) => {
                outcomes.push(Outcome::Unknown(ids));
                break;
            }
        }
    }
    (outcomes, key_of)
}

/// Runs the producers until `stop_server` has stopped the server, then records all outcomes.
fn run_producers(
    server: &mut Server,
    ledger: &mut Ledger,
    cycle: usize,
    seed: u64,
    stop_server: impl FnOnce(&mut Server),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|producer| {
            let api = server.api();
            let stop = Arc::clone(&stop);
            thread::spawn(move || produce(&api, producer, cycle, seed, &stop))
        })
        .collect();
    stop_server(server);
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        let (outcomes, key_of) = handle.join().expect("producer thread");
        ledger.key_of.extend(key_of);
        ledger.record(outcomes);
    }
}

#[test]
fn sigkill_loses_no_acknowledged_event() {
    let seed = common::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut server = Server::start();
    create_topic(&server.api(), "always");
    let mut ledger = Ledger::default();
    for cycle in 0..CYCLES {
        let delay = Duration::from_millis(rng.random_range(50..=400));
        run_producers(&mut server, &mut ledger, cycle, seed, |server| {
            thread::sleep(delay);
            server.kill9();
        });
        server.restart();
        ledger.verify(&server.api(), cycle);
        eprintln!(
            "cycle {cycle}: killed after {delay:?}; {} acknowledged, {} placed, {} unknown so far",
            ledger.acked_count,
            ledger.placed.len(),
            ledger.unknown.len()
        );
    }
    assert!(ledger.acked_count > 0, "no event was ever acknowledged");
    // The recovered server still takes writes at the right offsets.
    let api = server.api();
    let ack = api.publish_one(TOPIC, &common::keyed_event("final", "p0-k0"));
    let last = ledger.last_offset_of_key["p0-k0"];
    assert_eq!(ack.partition, partition_for_key(b"p0-k0", PARTITIONS));
    assert!(ack.offset > last, "{ack:?} after {last}");
    eprintln!("{CYCLES} crash cycles in {:?}", started.elapsed());
}

#[test]
fn sigterm_is_graceful_and_loses_nothing() {
    let seed = common::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start();
    // fsync=never: a graceful shutdown still keeps everything acknowledged.
    create_topic(&server.api(), "never");
    let mut ledger = Ledger::default();
    let delay = Duration::from_millis(rng.random_range(100..=400));
    let mut status = None;
    run_producers(&mut server, &mut ledger, 0, seed, |server| {
        thread::sleep(delay);
        status = Some(server.terminate());
    });
    let status = status.expect("terminated");
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0, got {status}");
    server.restart();
    ledger.verify(&server.api(), 0);
    assert!(
        ledger.acked_count > 0,
        "no event was acknowledged before SIGTERM"
    );

    // SIGINT is graceful too.
    let api = server.api();
    ledger.key_of.insert("after-restart".into(), "p1-k1".into());
    let acks = api.publish(TOPIC, &[common::keyed_event("after-restart", "p1-k1")]);
    ledger.record(vec![Outcome::Acked(acks.clone())]);
    let status = server.interrupt();
    assert_eq!(status.code(), Some(0), "SIGINT exits 0, got {status}");
    server.restart();
    let api = server.api();
    let records = api.fetch_all(TOPIC, acks[0].partition);
    let record = &records[acks[0].offset as usize];
    assert_eq!(record_id(record), "after-restart", "{record}");
    ledger.verify(&api, 1);
}

/// The tail (highest-numbered) `.log` segment of each partition of `TOPIC`, per the
/// data-directory layout in ARCHITECTURE.md (`topics/<topic>/<partition>/<base>.log`).
fn tail_segments(server: &Server) -> Vec<std::path::PathBuf> {
    (0..PARTITIONS)
        .map(|partition| {
            let dir = server
                .data_dir()
                .join("topics")
                .join(TOPIC)
                .join(partition.to_string());
            let mut logs: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("partition directory {}: {e}", dir.display()))
                .map(|entry| entry.expect("dir entry").path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
                .collect();
            logs.sort();
            logs.pop()
                .unwrap_or_else(|| panic!("no .log segment in {}", dir.display()))
        })
        .collect()
}

/// Publishes keyed batches (one producer, sequentially) and records the acks.
fn publish_acked(api: &Api, ledger: &mut Ledger, prefix: &str, batches: usize, rng: &mut StdRng) {
    for batch in 0..batches {
        let count = rng.random_range(1..=BATCH_EVENTS_MAX);
        let events: Vec<Value> = (0..count)
            .map(|i| {
                let id = format!("{prefix}-{batch}-{i}");
                let key = format!("p0-k{}", rng.random_range(0..KEYS_PER_PRODUCER));
                ledger.key_of.insert(id.clone(), key.clone());
                common::keyed_event(&id, &key)
            })
            .collect();
        let acks = api.publish(TOPIC, &events);
        ledger.record(vec![Outcome::Acked(acks)]);
    }
}

#[test]
fn torn_tail_is_truncated_at_recovery() {
    let seed = common::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start();
    create_topic(&server.api(), "always");
    let mut ledger = Ledger::default();
    publish_acked(&server.api(), &mut ledger, "before", 60, &mut rng);
    server.kill9();

    // What a crash mid-write (or a power loss with preallocated pages) leaves behind.
    for (partition, segment) in tail_segments(&server).iter().enumerate() {
        let original_length = std::fs::metadata(segment).expect("segment metadata").len();
        let mut garbage = Vec::new();
        match (partition + rng.random_range(0..3usize)) % 3 {
            // Zeroed pages.
            0 => garbage.resize(rng.random_range(1..5000), 0u8),
            // A batch header that promises more bytes than there are.
            1 => {
                garbage.extend_from_slice(&1_000_000u64.to_le_bytes());
                garbage.extend_from_slice(&4096u32.to_le_bytes());
                garbage.extend_from_slice(&0xdead_beefu32.to_le_bytes());
                garbage.extend_from_slice(&[1, 0, 0, 0]);
                garbage.resize(garbage.len() + rng.random_range(0..200), 0xab);
            }
            // Random bytes.
            _ => garbage.extend((0..rng.random_range(1..3000)).map(|_| rng.random::<u8>())),
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(segment)
            .expect("open segment");
        std::io::Write::write_all(&mut file, &garbage).expect("append garbage");
        eprintln!(
            "partition {partition}: appended {} garbage bytes to {} ({original_length} bytes)",
            garbage.len(),
            segment.display()
        );
    }

    server.restart();
    ledger.verify(&server.api(), 0);
    // Appends continue right after the last good batch, and survive another crash.
    publish_acked(&server.api(), &mut ledger, "after", 30, &mut rng);
    ledger.verify(&server.api(), 1);
    server.kill9();
    server.restart();
    ledger.verify(&server.api(), 2);
}
