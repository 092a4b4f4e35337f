//! Scenario tests of the store on a real directory: random operation sequences checked
//! against a model and against a reopened store, optimistic concurrency, metadata,
//! deletes, snapshots and catch-up subscriptions.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_core::CloudEvent;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::{
    Direction, EventStore, EventStoreConfig, EventStoreError, ExpectedVersion, StreamMetadata,
    SubscriptionTarget,
};

fn open(dir: &std::path::Path) -> EventStore {
    EventStore::open(dir, EventStoreConfig::default()).expect("open event store")
}

fn event(id: &str) -> CloudEvent {
    CloudEvent::new(id, "/tests", "test.happened").with_json_data(&json!({"id": id}))
}

fn seed() -> u64 {
    let seed = std::env::var("HERALD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    eprintln!("seed={seed} (replay with HERALD_TEST_SEED={seed})");
    seed
}

/// A stream's events as (version, position, id).
type StreamDump = (String, Vec<(u64, u64, String)>);

/// Everything a store answers, for comparing two stores.
fn dump(store: &EventStore) -> (Vec<String>, Vec<StreamDump>) {
    let all: Vec<String> = store
        .read_all(0, usize::MAX, Direction::Forwards)
        .expect("read $all")
        .into_iter()
        .map(|e| format!("{}@{}:{}#{}", e.stream, e.version, e.position, e.event.id))
        .collect();
    let streams = store
        .list_streams(None, usize::MAX)
        .into_iter()
        .map(|info| {
            let events = store
                .read_stream(&info.stream, 0, usize::MAX, Direction::Forwards)
                .expect("read stream")
                .into_iter()
                .map(|e| (e.version, e.position, e.event.id))
                .collect();
            (info.stream, events)
        })
        .collect();
    (all, streams)
}

#[tokio::test]
async fn random_appends_match_a_model_and_survive_reopen() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // Model: stream -> ids in version order.
    let mut model: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut all_ids = Vec::new();
    for step in 0..300 {
        let stream = format!("s-{}", rng.random_range(0..6));
        let current = model.get(&stream).map(|ids| ids.len() as u64);
        let expected = match rng.random_range(0..4) {
            0 => ExpectedVersion::Any,
            1 => ExpectedVersion::NoStream,
            2 => ExpectedVersion::StreamExists,
            _ => ExpectedVersion::Exact(rng.random_range(0..8)),
        };
        let should_win = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::StreamExists => current.is_some(),
            ExpectedVersion::Exact(n) => current.is_some_and(|c| c == n + 1),
        };
        let count = rng.random_range(1..4);
        let ids: Vec<String> = (0..count).map(|i| format!("e{step}-{i}")).collect();
        let result = store
            .append(&stream, expected, ids.iter().map(|id| event(id)).collect())
            .await;
        match (should_win, result) {
            (true, Ok(receipt)) => {
                let ids_of_stream = model.entry(stream.clone()).or_default();
                ids_of_stream.extend(ids.iter().cloned());
                assert_eq!(
                    receipt.next_expected_version,
                    ids_of_stream.len() as u64 - 1
                );
                all_ids.extend(ids);
            }
            (false, Err(EventStoreError::WrongExpectedVersion { current: c, .. })) => {
                assert_eq!(c, current.map(|n| n - 1), "current version in the conflict");
            }
            (win, other) => panic!("step {step}: expected win={win}, got {other:?}"),
        }
    }
    let before = dump(&store);
    let all: Vec<String> = before
        .0
        .iter()
        .map(|s| s.rsplit('#').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        all, all_ids,
        "$all holds every accepted event in append order"
    );
    for (stream, events) in &before.1 {
        let ids: Vec<String> = events.iter().map(|e| e.2.clone()).collect();
        assert_eq!(Some(&ids), model.get(stream), "stream {stream}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.0, i as u64, "dense versions in {stream}");
        }
    }
    store.close().expect("close");
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(dump(&reopened), before, "reopen gives the same reads");
}

#[tokio::test]
async fn concurrent_writers_never_both_win_a_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = Vec::new();
            let mut expected = ExpectedVersion::NoStream;
            while wins.len() < 5 {
                let id = format!("w{writer}-{}", wins.len());
                match store.append("race", expected, vec![event(&id)]).await {
                    Ok(r) => {
                        wins.push(r.next_expected_version);
                        expected = ExpectedVersion::Exact(r.next_expected_version);
                    }
                    Err(EventStoreError::WrongExpectedVersion { current, .. }) => {
                        expected =
                            current.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            wins
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.extend(task.await.expect("writer"));
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (0..40).collect::<Vec<u64>>(),
        "each version won exactly once"
    );
    let events = store
        .read_stream("race", 0, 100, Direction::Forwards)
        .expect("read");
    assert_eq!(events.len(), 40);
    let backwards = store
        .read_stream("race", u64::MAX, 3, Direction::Backwards)
        .expect("read");
    assert_eq!(
        backwards.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![39, 38, 37]
    );
}

#[tokio::test]
async fn bad_input_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for bad in ["../x", "", "$all", "a/b"] {
        assert!(matches!(
            store
                .append(bad, ExpectedVersion::Any, vec![event("e")])
                .await,
            Err(EventStoreError::Invalid { .. })
        ));
    }
    assert!(matches!(
        store.append("ok", ExpectedVersion::Any, vec![]).await,
        Err(EventStoreError::Invalid { .. })
    ));
    let mut invalid = event("e");
    invalid.id = String::new();
    assert!(matches!(
        store
            .append("ok", ExpectedVersion::Any, vec![invalid])
            .await,
        Err(EventStoreError::Invalid { .. })
    ));
    let big = CloudEvent::new("big", "/t", "t").with_json_data(&json!("x".repeat(2 * 1024 * 1024)));
    assert!(matches!(
        store.append("ok", ExpectedVersion::Any, vec![big]).await,
        Err(EventStoreError::EventTooLarge { .. })
    ));
    assert!(matches!(
        store.read_stream("missing", 0, 10, Direction::Forwards),
        Err(EventStoreError::StreamNotFound { .. })
    ));
    assert!(
        store.list_streams(None, 10).is_empty(),
        "nothing was written"
    );
}

#[tokio::test]
async fn metadata_deletes_and_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let ids: Vec<CloudEvent> = (0..5).map(|i| event(&format!("e{i}"))).collect();
    store
        .append("order-1", ExpectedVersion::NoStream, ids)
        .await
        .expect("append");
    store
        .set_metadata(
            "order-1",
            StreamMetadata {
                max_count: Some(2),
                max_age_ms: None,
            },
        )
        .await
        .expect("metadata");
    let visible = store
        .read_stream("order-1", 0, 10, Direction::Forwards)
        .expect("read");
    assert_eq!(
        visible.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![3, 4]
    );

    store
        .delete_stream("order-1", ExpectedVersion::Exact(4), false)
        .await
        .expect("soft delete");
    assert!(matches!(
        store.read_stream("order-1", 0, 10, Direction::Forwards),
        Err(EventStoreError::StreamNotFound { .. })
    ));
    assert!(store.list_streams(None, 10).is_empty());
    let again = store
        .append("order-1", ExpectedVersion::NoStream, vec![event("again")])
        .await
        .expect("recreate");
    assert_eq!(
        again.next_expected_version, 5,
        "versions continue after a soft delete"
    );
    let visible = store
        .read_stream("order-1", 0, 10, Direction::Forwards)
        .expect("read");
    assert_eq!(
        visible.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![5]
    );

    store
        .delete_stream("order-1", ExpectedVersion::Any, true)
        .await
        .expect("tombstone");
    assert!(matches!(
        store
            .append("order-1", ExpectedVersion::Any, vec![event("x")])
            .await,
        Err(EventStoreError::StreamDeleted { .. })
    ));
    assert_eq!(
        store
            .read_all(0, 100, Direction::Forwards)
            .expect("all")
            .len(),
        6,
        "$all keeps them"
    );
    store.close().expect("close");
    drop(store);
    let reopened = open(dir.path());
    assert!(
        reopened
            .describe_stream("order-1")
            .expect("describe")
            .tombstoned
    );
    assert!(matches!(
        reopened
            .append("order-1", ExpectedVersion::Any, vec![event("x")])
            .await,
        Err(EventStoreError::StreamDeleted { .. })
    ));
}

#[tokio::test]
async fn snapshots_are_durable_and_never_go_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let events: Vec<CloudEvent> = (0..4).map(|i| event(&format!("e{i}"))).collect();
    store
        .append("cart-9", ExpectedVersion::Any, events)
        .await
        .expect("append");
    assert_eq!(store.load_snapshot("cart-9").await.expect("load"), None);
    assert!(
        store.save_snapshot("cart-9", 4, json!({})).await.is_err(),
        "no version 4 yet"
    );
    store
        .save_snapshot("cart-9", 2, json!({"total": 2}))
        .await
        .expect("save");
    store
        .save_snapshot("cart-9", 1, json!({"total": 1}))
        .await
        .expect("older save is ignored");
    store.close().expect("close");
    drop(store);
    let store = open(dir.path());
    let snapshot = store
        .load_snapshot("cart-9")
        .await
        .expect("load")
        .expect("some");
    assert_eq!((snapshot.version, snapshot.data), (2, json!({"total": 2})));
    let after = store
        .read_stream("cart-9", snapshot.version + 1, 10, Direction::Forwards)
        .expect("read");
    assert_eq!(after.iter().map(|e| e.version).collect::<Vec<_>>(), vec![3]);
    store
        .delete_stream("cart-9", ExpectedVersion::Any, false)
        .await
        .expect("delete");
    store
        .append("cart-9", ExpectedVersion::NoStream, vec![event("new")])
        .await
        .expect("recreate");
    assert_eq!(
        store.load_snapshot("cart-9").await.expect("load"),
        None,
        "a delete drops the snapshot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_subscriptions_switch_to_live_without_gap_or_duplicate() {
    let seed = seed();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for i in 0..50 {
        let stream = format!("order-{}", i % 3);
        store
            .append(&stream, ExpectedVersion::Any, vec![event(&format!("h{i}"))])
            .await
            .expect("history");
        store
            .append(
                "user-1",
                ExpectedVersion::Any,
                vec![event(&format!("u{i}"))],
            )
            .await
            .expect("history");
    }
    let mut all = store
        .subscribe(SubscriptionTarget::All, None)
        .expect("subscribe");
    let mut category = store
        .subscribe(SubscriptionTarget::Category("order".into()), None)
        .expect("subscribe");
    let mut one = store
        .subscribe(SubscriptionTarget::Stream("order-1".into()), Some(10))
        .expect("subscribe");
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            for i in 0..200 {
                let stream = if rng.random_bool(0.5) {
                    format!("order-{}", i % 3)
                } else {
                    "user-1".to_string()
                };
                let count = rng.random_range(1..4);
                let events = (0..count).map(|j| event(&format!("l{i}-{j}"))).collect();
                store
                    .append(&stream, ExpectedVersion::Any, events)
                    .await
                    .expect("live append");
            }
        })
    };
    writer.await.expect("writer");
    let end = store.end_position();
    let expected_all = store
        .read_all(0, usize::MAX, Direction::Forwards)
        .expect("all");
    let timeout = Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < expected_all.len() {
        got.push(
            tokio::time::timeout(timeout, all.next())
                .await
                .expect("in time")
                .expect("next"),
        );
    }
    assert_eq!(
        got, expected_all,
        "$all subscription: every event once, in order"
    );
    assert!(got.last().is_some_and(|e| e.position == end - 1));

    let expected_orders: Vec<_> = expected_all
        .iter()
        .filter(|e| e.stream.starts_with("order-"))
        .cloned()
        .collect();
    let mut got = Vec::new();
    while got.len() < expected_orders.len() {
        got.push(
            tokio::time::timeout(timeout, category.next())
                .await
                .expect("in time")
                .expect("next"),
        );
    }
    assert_eq!(got, expected_orders, "category subscription");

    let expected_one: Vec<_> = expected_all
        .iter()
        .filter(|e| e.stream == "order-1" && e.position > 10)
        .cloned()
        .collect();
    let mut got = Vec::new();
    while got.len() < expected_one.len() {
        got.push(
            tokio::time::timeout(timeout, one.next())
                .await
                .expect("in time")
                .expect("next"),
        );
    }
    assert_eq!(got, expected_one, "stream subscription from a position");
    assert!(
        all.try_next().expect("try").is_none(),
        "nothing beyond the end"
    );

    // Live: a waiting subscriber wakes on a new append.
    let waiter = tokio::spawn(async move { all.next().await });
    store
        .append("order-2", ExpectedVersion::Any, vec![event("late")])
        .await
        .expect("append");
    let late = tokio::time::timeout(timeout, waiter)
        .await
        .expect("in time")
        .expect("join")
        .expect("next");
    assert_eq!(late.event.id, "late");
}

#[tokio::test]
async fn a_category_subscription_scans_past_a_read_budget_of_other_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EventStoreConfig {
        read_bytes_max: 1024,
        ..EventStoreConfig::default()
    };
    let store = EventStore::open(dir.path(), config).expect("open");
    for i in 0..200 {
        store
            .append(
                "user-1",
                ExpectedVersion::Any,
                vec![event(&format!("u{i}"))],
            )
            .await
            .expect("append");
    }
    store
        .append("order-1", ExpectedVersion::Any, vec![event("o")])
        .await
        .expect("append");
    let mut orders = store
        .subscribe(SubscriptionTarget::Category("order".into()), None)
        .expect("subscribe");
    let next = tokio::time::timeout(Duration::from_secs(10), orders.next())
        .await
        .expect("no wait for a new append");
    assert_eq!(next.expect("next").event.id, "o");
    let mut again = store
        .subscribe(SubscriptionTarget::Category("order".into()), None)
        .expect("subscribe");
    assert_eq!(
        again.try_next().expect("try").map(|e| e.event.id),
        Some("o".to_string())
    );
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = open(dir.path());
    assert!(matches!(
        EventStore::open(dir.path(), EventStoreConfig::default()),
        Err(EventStoreError::Locked { .. })
    ));
}

/// Throughput and reopen figures (run explicitly: `cargo nextest run -p herald-eventstore
/// --run-ignored only -E 'test(measure)' --no-capture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn measure_append_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let writers: u64 = 16;
    let appends_per_writer: u64 = 500;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..appends_per_writer {
                    let events = (0..4).map(|j| event(&format!("{w}-{i}-{j}"))).collect();
                    store
                        .append(&format!("agg-{w}"), ExpectedVersion::Any, events)
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let elapsed = started.elapsed();
    let events = writers * appends_per_writer * 4;
    eprintln!(
        "appends: {} of 4 events from {writers} writers in {elapsed:?}: {:.0} appends/s, {:.0} events/s (fsync always)",
        writers * appends_per_writer,
        f64::from(u32::try_from(writers * appends_per_writer).unwrap_or(0)) / elapsed.as_secs_f64(),
        f64::from(u32::try_from(events).unwrap_or(0)) / elapsed.as_secs_f64()
    );
    store.close().expect("close");
    drop(store);
    let started = std::time::Instant::now();
    let reopened = open(dir.path());
    eprintln!(
        "reopen (index rebuild) of {events} events: {:?}",
        started.elapsed()
    );
    assert_eq!(reopened.end_position(), events);
}

/// Streams with events, metadata, a soft delete and a tombstone.
async fn varied_history(store: &EventStore, rounds: usize, prefix: &str) {
    for round in 0..rounds {
        for s in 0..5 {
            let stream = format!("{prefix}-{s}");
            let ids: Vec<CloudEvent> = (0..3).map(|i| event(&format!("{round}-{s}-{i}"))).collect();
            store
                .append(&stream, ExpectedVersion::Any, ids)
                .await
                .expect("append");
        }
    }
    store
        .set_metadata(
            &format!("{prefix}-0"),
            StreamMetadata {
                max_count: Some(2),
                ..StreamMetadata::default()
            },
        )
        .await
        .expect("metadata");
    store
        .delete_stream(&format!("{prefix}-1"), ExpectedVersion::Any, false)
        .await
        .expect("soft delete");
    store
        .delete_stream(&format!("{prefix}-2"), ExpectedVersion::Any, true)
        .await
        .expect("tombstone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_checkpoint_covers_a_prefix_and_the_suffix_is_scanned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected;
    {
        let store = open(dir.path());
        varied_history(&store, 4, "s").await;
        store.close().expect("close");
    }
    let checkpoint_end;
    {
        let store = open(dir.path());
        checkpoint_end = store.end_position();
        assert_eq!(store.opened_from_index_checkpoint(), Some(checkpoint_end));
        // More history, also on checkpointed streams, then "crash" (no close: the
        // checkpoint stays at the old end).
        varied_history(&store, 2, "t").await;
        for stream in ["s-1", "s-3"] {
            store
                .append(
                    stream,
                    ExpectedVersion::Any,
                    vec![event(&format!("more-{stream}"))],
                )
                .await
                .expect("append");
        }
        assert!(store
            .append("s-2", ExpectedVersion::Any, vec![event("after-tombstone")])
            .await
            .is_err());
        expected = dump(&store);
    }
    let store = open(dir.path());
    assert_eq!(store.opened_from_index_checkpoint(), Some(checkpoint_end));
    assert_eq!(
        dump(&store),
        expected,
        "checkpoint + suffix = the whole log"
    );
    drop(store);
    std::fs::remove_file(dir.path().join(crate::index_checkpoint::FILE)).expect("remove");
    let store = open(dir.path());
    assert_eq!(store.opened_from_index_checkpoint(), None);
    assert_eq!(dump(&store), expected, "full scan gives the same index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_foreign_index_checkpoints_fall_back_to_a_full_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(crate::index_checkpoint::FILE);
    let expected;
    {
        let store = open(dir.path());
        varied_history(&store, 3, "s").await;
        expected = dump(&store);
        store.close().expect("close");
    }
    // A flipped byte: the checksum catches it.
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    {
        let store = open(dir.path());
        assert_eq!(store.opened_from_index_checkpoint(), None);
        assert_eq!(dump(&store), expected);
        store.close().expect("close rewrites it");
    }
    {
        let store = open(dir.path());
        assert_eq!(
            store.opened_from_index_checkpoint(),
            Some(store.end_position())
        );
    }
    // A checkpoint of a longer log (stale for this one), and one of a different log
    // of the same length: both refused.
    {
        let store = open(other.path());
        varied_history(&store, 5, "s").await;
        store.close().expect("close");
    }
    std::fs::copy(other.path().join(crate::index_checkpoint::FILE), &path).expect("copy");
    let store = open(dir.path());
    assert_eq!(store.opened_from_index_checkpoint(), None);
    assert_eq!(dump(&store), expected);
}

/// Reopen time of a store of 200 000 events with and without the index checkpoint.
/// Run: `cargo test --release -p herald-eventstore --lib -- --ignored index_reopen_timing --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing run for BENCHMARKS.md"]
async fn index_reopen_timing() {
    const EVENTS: usize = 200_000;
    const PER_APPEND: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        for batch in 0..EVENTS / PER_APPEND {
            let events = (0..PER_APPEND)
                .map(|i| event(&format!("{batch}-{i}")))
                .collect();
            store
                .append(
                    &format!("order-{}", batch % 1000),
                    ExpectedVersion::Any,
                    events,
                )
                .await
                .expect("append");
        }
        store.close().expect("close");
    }
    let time_open = |label: &str| {
        let started = std::time::Instant::now();
        let store = open(dir.path());
        let elapsed = started.elapsed();
        eprintln!(
            "{label}: {} ms (index from checkpoint: {:?}, {} events)",
            elapsed.as_millis(),
            store.opened_from_index_checkpoint(),
            store.end_position()
        );
        store
    };
    for _ in 0..3 {
        drop(time_open("reopen with the index checkpoint"));
    }
    let path = dir.path().join(crate::index_checkpoint::FILE);
    for _ in 0..3 {
        let saved = std::fs::read(&path).expect("read checkpoint");
        std::fs::remove_file(&path).expect("remove checkpoint");
        let config = EventStoreConfig {
            index_checkpoint_records: u64::MAX,
            ..EventStoreConfig::default()
        };
        let started = std::time::Instant::now();
        let store = EventStore::open(dir.path(), config).expect("open");
        eprintln!(
            "reopen with a full scan: {} ms ({} events)",
            started.elapsed().as_millis(),
            store.end_position()
        );
        drop(store);
        std::fs::write(&path, saved).expect("restore checkpoint");
    }
}
