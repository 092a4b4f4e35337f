//! The event store on a real nats-server: several stores ("gateways", each with its own
//! directory) on one JetStream share streams, `$all` order, expected-version checks and
//! snapshots; a store reopened on a fresh directory rebuilds the same mirror; an invalid
//! message is skipped alike everywhere; NATS going away is a retryable 503, never a panic.

use std::path::Path;
use std::time::Duration;

use herald_broker::storage::{JetStreamBackend, JetStreamConfig};
use herald_core::CloudEvent;
use herald_eventstore::{
    Direction, EventStore, EventStoreConfig, EventStoreError, ExpectedVersion, StreamMetadata,
    SubscriptionTarget,
};
use herald_testkit::NatsServer;
use serde_json::json;

async fn backend(nats: &NatsServer) -> JetStreamBackend {
    JetStreamBackend::connect(JetStreamConfig::new(nats.url()))
        .await
        .expect("connect to JetStream")
}

async fn open(nats: &NatsServer, dir: &Path) -> EventStore {
    EventStore::open_jetstream(dir, EventStoreConfig::default(), &backend(nats).await)
        .await
        .expect("open the event store on JetStream")
}

fn event(id: &str) -> CloudEvent {
    CloudEvent::new(id, "/tests", "test.happened").with_json_data(&json!({ "id": id }))
}

/// `$all` as `stream@version:position#id`.
fn all(store: &EventStore) -> Vec<String> {
    store
        .read_all(0, usize::MAX, Direction::Forwards)
        .expect("read $all")
        .into_iter()
        .map(|e| format!("{}@{}:{}#{}", e.stream, e.version, e.position, e.event.id))
        .collect()
}

fn stream_ids(store: &EventStore, stream: &str) -> Vec<String> {
    store
        .read_stream(stream, 0, usize::MAX, Direction::Forwards)
        .expect("read stream")
        .into_iter()
        .map(|e| e.event.id)
        .collect()
}

/// Waits until `store`'s mirror holds `$all` up to `end` (another gateway wrote it).
async fn wait_end(store: &EventStore, end: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.end_position() < end {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mirror stuck at {} < {end}",
            store.end_position()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_streams_all_order_and_expected_versions() {
    let nats = NatsServer::start_temp();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&nats, dirs.0.path()).await;
    let b = open(&nats, dirs.1.path()).await;

    // Alternating appends with the right expected versions all succeed.
    let mut expected = ExpectedVersion::NoStream;
    for i in 0..10u64 {
        let store = if i % 2 == 0 { &a } else { &b };
        let written = store
            .append("order-1", expected, vec![event(&format!("e{i}"))])
            .await
            .unwrap_or_else(|e| panic!("append {i}: {e}"));
        assert_eq!(written.next_expected_version, i);
        assert_eq!(
            written.position, i,
            "one record per append: positions are dense"
        );
        expected = ExpectedVersion::Exact(i);
    }
    // A stale expected version is refused on the gateway that did not see the last write
    // yet as well as on the one that did: JetStream checks it, not the local mirror.
    for store in [&a, &b] {
        match store
            .append("order-1", ExpectedVersion::Exact(3), vec![event("stale")])
            .await
        {
            Err(EventStoreError::WrongExpectedVersion { current, .. }) => {
                assert_eq!(current, Some(9))
            }
            other => panic!("stale append: {other:?}"),
        }
    }
    wait_end(&a, 10).await;
    wait_end(&b, 10).await;
    let ids: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    assert_eq!(stream_ids(&a, "order-1"), ids);
    assert_eq!(stream_ids(&b, "order-1"), ids);
    assert_eq!(all(&a), all(&b));

    // Metadata, snapshots and deletes written on one gateway apply on the other.
    a.set_metadata(
        "order-1",
        StreamMetadata {
            max_count: Some(3),
            max_age_ms: None,
        },
    )
    .await
    .expect("metadata");
    b.save_snapshot("order-1", 9, json!({"total": 9}))
        .await
        .expect("snapshot");
    let snapshot = a
        .load_snapshot("order-1")
        .await
        .expect("load")
        .expect("some");
    assert_eq!((snapshot.version, snapshot.data), (9, json!({"total": 9})));
    // An older snapshot never replaces a newer one, whichever gateway saves it.
    a.save_snapshot("order-1", 2, json!({"total": 2}))
        .await
        .expect("older snapshot");
    let snapshot = b
        .load_snapshot("order-1")
        .await
        .expect("load")
        .expect("some");
    assert_eq!(snapshot.version, 9);
    wait_end(&b, 11).await;
    assert_eq!(stream_ids(&b, "order-1"), ["e7", "e8", "e9"]);
    b.delete_stream("order-1", ExpectedVersion::Exact(9), false)
        .await
        .expect("soft delete");
    wait_end(&a, 12).await;
    assert!(matches!(
        a.read_stream("order-1", 0, 10, Direction::Forwards),
        Err(EventStoreError::StreamNotFound { .. })
    ));
    assert_eq!(a.load_snapshot("order-1").await.expect("load"), None);
    // Recreated on the other gateway: versions continue.
    let written = a
        .append("order-1", ExpectedVersion::NoStream, vec![event("again")])
        .await
        .expect("recreate");
    assert_eq!(written.next_expected_version, 10);
    wait_end(&b, 13).await;
    assert_eq!(all(&a), all(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_with_one_expected_version_have_exactly_one_winner() {
    let nats = NatsServer::start_temp();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&nats, dirs.0.path()).await;
    let b = open(&nats, dirs.1.path()).await;
    let rounds = 20u64;
    for round in 0..rounds {
        let expected = round
            .checked_sub(1)
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let (ra, rb) = tokio::join!(
            a.append("race", expected, vec![event(&format!("a{round}"))]),
            b.append("race", expected, vec![event(&format!("b{round}"))]),
        );
        let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {ra:?} / {rb:?}");
        for result in [ra, rb] {
            match result {
                Ok(written) => assert_eq!(written.next_expected_version, round),
                Err(EventStoreError::WrongExpectedVersion { current, .. }) => {
                    assert_eq!(current, Some(round), "round {round}")
                }
                Err(other) => panic!("round {round}: {other}"),
            }
        }
    }
    // `Any` never loses a write: both land, one after the other.
    let (ra, rb) = tokio::join!(
        a.append("race", ExpectedVersion::Any, vec![event("any-a")]),
        b.append("race", ExpectedVersion::Any, vec![event("any-b")]),
    );
    let mut versions = vec![
        ra.expect("any a").next_expected_version,
        rb.expect("any b").next_expected_version,
    ];
    versions.sort_unstable();
    assert_eq!(versions, [rounds, rounds + 1]);
    wait_end(&a, rounds + 2).await;
    wait_end(&b, rounds + 2).await;
    let events = a
        .read_stream("race", 0, usize::MAX, Direction::Forwards)
        .expect("read");
    assert_eq!(
        events.len() as u64,
        rounds + 2,
        "nothing lost or duplicated"
    );
    for (version, e) in events.iter().enumerate() {
        assert_eq!(e.version, version as u64);
    }
    assert_eq!(all(&a), all(&b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_gateway_rebuilds_the_same_mirror_and_subscriptions_follow_it() {
    let nats = NatsServer::start_temp();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&nats, dirs.0.path()).await;
    let b = open(&nats, dirs.1.path()).await;
    let mut live = b
        .subscribe(SubscriptionTarget::All, None)
        .expect("subscribe");
    for i in 0..30u64 {
        let stream = format!("acct-{}", i % 3);
        a.append(&stream, ExpectedVersion::Any, vec![event(&format!("x{i}"))])
            .await
            .expect("append");
    }
    // The other gateway's catch-up subscription sees every write, in `$all` order.
    for i in 0..30u64 {
        let next = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .expect("live event in time")
            .expect("event");
        assert_eq!((next.position, next.event.id), (i, format!("x{i}")));
    }
    let before = all(&a);
    a.close().expect("close");
    drop(a);
    // The same directory (the mirror is wiped and rebuilt) and a fresh one agree.
    let reopened = open(&nats, dirs.0.path()).await;
    assert_eq!(all(&reopened), before);
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = open(&nats, fresh_dir.path()).await;
    assert_eq!(all(&fresh), before);
    assert_eq!(all(&b), before);
    // And writes continue from the rebuilt state.
    let written = fresh
        .append("acct-0", ExpectedVersion::Exact(9), vec![event("after")])
        .await
        .expect("append after rebuild");
    assert_eq!(written.position, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_message_is_skipped_by_every_gateway() {
    let nats = NatsServer::start_temp();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(&nats, dirs.0.path()).await;
    a.append("s", ExpectedVersion::NoStream, vec![event("one")])
        .await
        .expect("append");
    // Garbage, and a well-formed batch that claims a version out of sequence.
    let js = backend(&nats).await;
    let client = js.context().clone();
    client
        .publish("herald.es.s", bytes::Bytes::from_static(b"not a batch"))
        .await
        .expect("publish")
        .await
        .expect("ack");
    let value = herald_eventstore::record::encode_event_record(
        "s",
        5,
        &herald_eventstore::record::encode_event_body(&event("bad")),
    );
    let batch = herald_eventstore::batch::encode(&[herald_log::Record {
        timestamp_ms: 1,
        key: Some(bytes::Bytes::from_static(b"s")),
        value: value.into(),
    }]);
    let mut headers = async_nats::HeaderMap::new();
    // It expects the right subject sequence (the garbage is the last message on `s`)
    // but a version out of sequence.
    headers.insert("Herald-Expects", "2");
    client
        .publish_with_headers("herald.es.s", headers, batch.into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let written = a
        .append("s", ExpectedVersion::Exact(0), vec![event("two")])
        .await
        .expect("the store still writes after skipping");
    assert_eq!((written.next_expected_version, written.position), (1, 1));
    let b = open(&nats, dirs.1.path()).await;
    assert_eq!(all(&a), all(&b));
    assert_eq!(stream_ids(&b, "s"), ["one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_going_away_is_a_retryable_unavailable_error() {
    let mut nats = NatsServer::start_temp();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&nats, dir.path()).await;
    store
        .append("s", ExpectedVersion::NoStream, vec![event("one")])
        .await
        .expect("append");
    nats.kill9();
    let error = store
        .append("s", ExpectedVersion::Exact(0), vec![event("two")])
        .await
        .expect_err("no NATS");
    assert_eq!(error.http_status(), 503, "{error}");
    // Reads are served from the mirror meanwhile.
    assert_eq!(stream_ids(&store, "s"), ["one"]);
    nats.restart();
    // The refused write's outcome was unknown (it may reach JetStream once NATS is back):
    // retrying it lands it, or finds it already there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match store
            .append("s", ExpectedVersion::Exact(0), vec![event("two")])
            .await
        {
            Ok(written) => {
                assert_eq!(written.next_expected_version, 1);
                break;
            }
            Err(EventStoreError::WrongExpectedVersion { current, .. }) => {
                assert_eq!(current, Some(1));
                break;
            }
            Err(error) => {
                assert_eq!(error.http_status(), 503, "{error}");
                assert!(tokio::time::Instant::now() < deadline, "{error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    wait_end(&store, 2).await;
    assert_eq!(stream_ids(&store, "s"), ["one", "two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_larger_than_a_nats_message_is_refused_whole() {
    let nats = NatsServer::start_temp();
    let dir = tempfile::tempdir().unwrap();
    let store = open(&nats, dir.path()).await;
    // nats-server's default max_payload is 1 MiB.
    let big = "x".repeat(300 * 1024);
    let events: Vec<CloudEvent> = (0..5)
        .map(|i| {
            CloudEvent::new(format!("b{i}"), "/tests", "big").with_json_data(&json!({ "b": big }))
        })
        .collect();
    let error = store
        .append("big", ExpectedVersion::Any, events)
        .await
        .expect_err("too large");
    assert_eq!(error.http_status(), 413, "{error}");
    assert!(matches!(
        store.read_stream("big", 0, 10, Direction::Forwards),
        Err(EventStoreError::StreamNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_cluster_node_killed_under_load_loses_no_acknowledged_append() {
    let cluster_dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsServer::start_cluster(cluster_dir.path());
    let urls: Vec<String> = cluster.iter().map(NatsServer::url).collect();
    let mut config = JetStreamConfig::new(urls.join(","));
    config.replicas = 3;
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut stores = Vec::new();
    for dir in [dirs.0.path(), dirs.1.path()] {
        let backend = JetStreamBackend::connect(config.clone())
            .await
            .expect("connect to the cluster");
        stores.push(
            EventStore::open_jetstream(dir, EventStoreConfig::default(), &backend)
                .await
                .expect("open on the cluster"),
        );
    }
    // Two writers (one per gateway) append with `Any`, retrying refusals; only what was
    // acknowledged counts.
    let acked = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let writers: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(g, store)| {
            let (store, acked) = (store.clone(), std::sync::Arc::clone(&acked));
            tokio::spawn(async move {
                // Refusals may last while the cluster elects new leaders. An append
                // answers within its publish timeout plus the 30 s it waits for this
                // gateway's mirror; one that does not fails the test by name.
                let mut refused = 0u32;
                for i in 0..150u32 {
                    let stream = format!("acct-{}", i % 4);
                    let id = format!("g{g}-{i}");
                    loop {
                        let append = store.append(&stream, ExpectedVersion::Any, vec![event(&id)]);
                        let answer = tokio::time::timeout(Duration::from_secs(75), append)
                            .await
                            .unwrap_or_else(|_| {
                                panic!("gateway {g}: append {i} did not answer within 75 s")
                            });
                        match answer {
                            Ok(written) => {
                                acked.lock().push((
                                    stream.clone(),
                                    written.next_expected_version,
                                    id,
                                ));
                                break;
                            }
                            Err(error) => {
                                assert_eq!(error.http_status(), 503, "{error}");
                                refused += 1;
                                assert!(refused < 600, "refused for too long: {error}");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().len() < 60 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster[0].kill9();
    for writer in writers {
        writer.await.expect("writer");
    }
    let acked = acked.lock().clone();
    assert_eq!(acked.len(), 300);
    // Both mirrors converge on the same `$all`, holding every acknowledged append.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while stores[0].end_position() != stores[1].end_position() {
        assert!(tokio::time::Instant::now() < deadline, "mirrors diverge");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(all(&stores[0]), all(&stores[1]));
    for (stream, version, id) in &acked {
        let events = stores[1]
            .read_stream(stream, *version, 1, Direction::Forwards)
            .expect("read");
        assert_eq!(
            events.first().map(|e| e.event.id.as_str()),
            Some(id.as_str()),
            "{stream}@{version}"
        );
    }
    drop(cluster);
}

/// Figures for the report (not a pass/fail test): `cargo test -p herald-eventstore --test
/// jetstream -- --ignored --nocapture measure`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_append_latency_throughput_and_rebuild() {
    let nats = NatsServer::start_temp();
    let local_dir = tempfile::tempdir().unwrap();
    let local = EventStore::open(local_dir.path(), EventStoreConfig::default()).expect("open");
    let js_dir = tempfile::tempdir().unwrap();
    let js = open(&nats, js_dir.path()).await;
    for (name, store) in [("embedded", &local), ("jetstream", &js)] {
        let count = 500u32;
        let started = std::time::Instant::now();
        for i in 0..count {
            store
                .append("lat", ExpectedVersion::Any, vec![event(&format!("l{i}"))])
                .await
                .expect("append");
        }
        let per_append_us = started.elapsed().as_micros() / u128::from(count);
        let writers = 16u32;
        let per_writer = 250u32;
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        store
                            .append(
                                &format!("tp-{w}"),
                                ExpectedVersion::Any,
                                vec![event(&format!("t{w}-{i}"))],
                            )
                            .await
                            .expect("append");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
        let rate = f64::from(writers * per_writer) / started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: sequential append {per_append_us} us; {writers} concurrent writers \
             {rate:.0} appends/s"
        );
    }
    let events = js.end_position();
    let started = std::time::Instant::now();
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = open(&nats, fresh_dir.path()).await;
    assert_eq!(fresh.end_position(), events);
    eprintln!(
        "jetstream: mirror rebuilt at open: {events} appends in {} ms",
        started.elapsed().as_millis()
    );
}
