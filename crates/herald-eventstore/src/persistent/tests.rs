//! Scenario tests of persistent subscriptions on a real directory: competing reads,
//! ack/nack/park/replay, the checkpoint, hidden events, and state across a reopen.

use std::collections::BTreeSet;
use std::time::Duration;

use herald_core::CloudEvent;
use serde_json::json;

use crate::persistent::{CreatePersistent, NackAction, ReceiptOutcome, StartFrom};
use crate::{
    EventStore, EventStoreConfig, EventStoreError, ExpectedVersion, StreamMetadata,
    SubscriptionTarget,
};

fn open(dir: &std::path::Path) -> EventStore {
    EventStore::open(dir, EventStoreConfig::default()).expect("open event store")
}

fn event(id: &str) -> CloudEvent {
    CloudEvent::new(id, "/tests", "test.happened").with_json_data(&json!({"id": id}))
}

fn create(group: &str, target: &str, max_retries: u32) -> CreatePersistent {
    CreatePersistent {
        group: group.into(),
        target: SubscriptionTarget::from_name(target).expect("target"),
        start: StartFrom::Start,
        visibility_timeout_ms: Some(60_000),
        max_retries: Some(max_retries),
    }
}

async fn append(store: &EventStore, stream: &str, ids: &[&str]) {
    store
        .append(
            stream,
            ExpectedVersion::Any,
            ids.iter().map(|i| event(i)).collect(),
        )
        .await
        .expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_group_leases_acks_and_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    append(&store, "order-1", &["a", "b"]).await;
    append(&store, "user-1", &["u"]).await;
    append(&store, "order-2", &["c"]).await;
    store
        .create_persistent(create("g", "order-*", 3))
        .await
        .expect("create");
    assert!(matches!(
        store.create_persistent(create("g", "$all", 3)).await,
        Err(EventStoreError::SubscriptionExists { .. })
    ));
    let first = store
        .read_persistent("g", 2, None, Duration::ZERO)
        .await
        .expect("read");
    let second = store
        .read_persistent("g", 10, None, Duration::ZERO)
        .await
        .expect("read");
    let ids = |events: &[crate::PersistentEvent]| -> Vec<String> {
        events.iter().map(|e| e.event.event.id.clone()).collect()
    };
    assert_eq!(ids(&first), ["a", "b"]);
    assert_eq!(
        ids(&second),
        ["c"],
        "leased events go to one reader at a time"
    );
    // Ack out of order: the checkpoint only passes events acked below it.
    let acked = store
        .ack_persistent("g", &[second[0].receipt.clone()])
        .await
        .expect("ack");
    assert_eq!(acked[0].1, ReceiptOutcome::Acked);
    assert_eq!(store.persistent_info("g").expect("info").checkpoint, None);
    store
        .ack_persistent("g", &[first[0].receipt.clone()])
        .await
        .expect("ack");
    let info = store.persistent_info("g").expect("info");
    assert_eq!(info.checkpoint, Some(first[0].event.position));
    assert_eq!(info.in_flight, 1);
    let again = store
        .ack_persistent("g", &[first[0].receipt.clone(), "nonsense".into()])
        .await
        .expect("ack");
    assert_eq!(again[0].1, ReceiptOutcome::AlreadyDone);
    assert_eq!(again[1].1, ReceiptOutcome::Invalid);
    store
        .ack_persistent("g", &[first[1].receipt.clone()])
        .await
        .expect("ack");
    let info = store.persistent_info("g").expect("info");
    assert_eq!(info.checkpoint, Some(store.end_position() - 1));
    assert_eq!((info.in_flight, info.pending), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_park_then_replay_and_state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receipt_before;
    {
        let store = open(dir.path());
        append(&store, "s-1", &["x", "y"]).await;
        store
            .create_persistent(create("g", "s-1", 1))
            .await
            .expect("create");
        // x: nacked twice (1 retry allowed) -> parked. y: skipped.
        for attempt in 1..=2 {
            let got = store
                .read_persistent("g", 2, None, Duration::ZERO)
                .await
                .expect("read");
            let x = got.iter().find(|e| e.event.event.id == "x").expect("x");
            assert_eq!(x.delivery_count, attempt);
            let out = store
                .nack_persistent(
                    "g",
                    std::slice::from_ref(&x.receipt),
                    NackAction::Retry { delay_ms: 0 },
                    Some("boom"),
                )
                .await
                .expect("nack");
            let expected = if attempt == 1 {
                ReceiptOutcome::Retried
            } else {
                ReceiptOutcome::Parked
            };
            assert_eq!(out[0].1, expected);
            if let Some(y) = got.iter().find(|e| e.event.event.id == "y") {
                let out = store
                    .nack_persistent(
                        "g",
                        std::slice::from_ref(&y.receipt),
                        NackAction::Skip,
                        None,
                    )
                    .await
                    .expect("skip");
                assert_eq!(out[0].1, ReceiptOutcome::Skipped);
            }
        }
        let parked = store.list_parked("g", 0, 10).expect("parked");
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].reason, "boom");
        assert_eq!(parked[0].delivery_count, 2);
        let info = store.persistent_info("g").expect("info");
        assert_eq!(
            (info.parked, info.checkpoint),
            (1, Some(store.end_position() - 1))
        );
        append(&store, "s-1", &["z"]).await;
        let got = store
            .read_persistent("g", 10, None, Duration::ZERO)
            .await
            .expect("read");
        assert_eq!(got.len(), 1);
        receipt_before = got[0].receipt.clone();
        store.close().expect("close");
    }
    let store = open(dir.path());
    let info = store.persistent_info("g").expect("info after reopen");
    assert_eq!(info.parked, 1, "the parked list is durable");
    // The lease of z was lost with the restart: z comes again, its count kept.
    let got = store
        .read_persistent("g", 10, None, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].event.event.id.as_str(), got[0].delivery_count),
        ("z", 2)
    );
    let stale = store
        .ack_persistent("g", &[receipt_before])
        .await
        .expect("ack");
    assert_eq!(stale[0].1, ReceiptOutcome::LeaseLost);
    store
        .ack_persistent("g", &[got[0].receipt.clone()])
        .await
        .expect("ack");
    assert_eq!(store.replay_parked("g").await.expect("replay"), 1);
    assert_eq!(store.persistent_info("g").expect("info").parked, 0);
    let got = store
        .read_persistent("g", 10, None, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].event.event.id.as_str(), got[0].delivery_count),
        ("x", 1)
    );
    store
        .ack_persistent("g", &[got[0].receipt.clone()])
        .await
        .expect("ack");
    assert!(store
        .read_persistent("g", 10, None, Duration::ZERO)
        .await
        .expect("read")
        .is_empty());
    store.delete_persistent("g").await.expect("delete");
    assert!(matches!(
        store.persistent_info("g"),
        Err(EventStoreError::SubscriptionNotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_read_wakes_on_append_and_lease_expiry_redelivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    store
        .create_persistent(create("g", "$all", 5))
        .await
        .expect("create");
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .read_persistent("g", 10, Some(50), Duration::from_secs(30))
                .await
        })
    };
    append(&store, "s-1", &["late"]).await;
    let got = reader.await.expect("join").expect("read");
    assert_eq!(got[0].event.event.id, "late");
    // Not acked within 50 ms: delivered again to the next reader.
    let again = store
        .read_persistent("g", 10, None, Duration::from_secs(30))
        .await
        .expect("read");
    assert_eq!(
        (again[0].event.event.id.as_str(), again[0].delivery_count),
        ("late", 2)
    );
    let lost = store
        .ack_persistent("g", &[got[0].receipt.clone()])
        .await
        .expect("ack");
    assert_eq!(lost[0].1, ReceiptOutcome::LeaseLost);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_skip_hidden_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    append(&store, "a-1", &["a0", "a1", "a2"]).await;
    append(&store, "a-2", &["gone"]).await;
    append(&store, "a-3", &["tomb"]).await;
    store
        .set_metadata(
            "a-1",
            StreamMetadata {
                max_count: Some(1),
                ..StreamMetadata::default()
            },
        )
        .await
        .expect("metadata");
    store
        .delete_stream("a-2", ExpectedVersion::Any, false)
        .await
        .expect("soft delete");
    store
        .delete_stream("a-3", ExpectedVersion::Any, true)
        .await
        .expect("tombstone");
    append(&store, "a-4", &["kept"]).await;
    let expected: BTreeSet<&str> = ["a2", "kept"].into();
    for target in [
        SubscriptionTarget::All,
        SubscriptionTarget::Category("a".into()),
    ] {
        let mut sub = store.subscribe(target.clone(), None).expect("subscribe");
        let mut seen = BTreeSet::new();
        while let Some(e) = sub.try_next().expect("next") {
            seen.insert(e.event.id);
        }
        let seen: BTreeSet<&str> = seen.iter().map(String::as_str).collect();
        assert_eq!(seen, expected, "{target:?}");
    }
    let mut sub = store
        .subscribe(SubscriptionTarget::Stream("a-1".into()), None)
        .expect("subscribe");
    assert_eq!(
        sub.try_next().expect("next").map(|e| e.event.id),
        Some("a2".into())
    );
    assert_eq!(sub.try_next().expect("next"), None);
    store
        .create_persistent(create("g", "a-*", 1))
        .await
        .expect("create");
    let got = store
        .read_persistent("g", 100, None, Duration::ZERO)
        .await
        .expect("read");
    let ids: BTreeSet<&str> = got.iter().map(|e| e.event.event.id.as_str()).collect();
    assert_eq!(ids, expected);
}

/// Two stores (two gateways) on one nats-server share a group: created on one, read on
/// the other, acked, nacked, parked and replayed across them.
mod shared {
    use super::*;
    use herald_broker::storage::{JetStreamBackend, JetStreamConfig};
    use herald_testkit::nats::NatsServer;

    async fn open_js(dir: &std::path::Path, url: &str) -> EventStore {
        let backend = JetStreamBackend::connect(JetStreamConfig::new(url))
            .await
            .expect("connect");
        EventStore::open_jetstream(dir, EventStoreConfig::default(), &backend)
            .await
            .expect("open on JetStream")
    }

    async fn read_until(store: &EventStore, group: &str, want: usize) -> Vec<PersistentEvent> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while out.len() < want {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {want}",
                out.len()
            );
            out.extend(
                store
                    .read_persistent(group, want - out.len(), None, Duration::from_millis(500))
                    .await
                    .expect("read"),
            );
        }
        out
    }

    use crate::persistent::PersistentEvent;

    fn ids(events: &[PersistentEvent]) -> BTreeSet<String> {
        events.iter().map(|e| e.event.event.id.clone()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_stores_share_one_group() {
        let nats = NatsServer::start_temp();
        let (d1, d2) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let one = open_js(d1.path(), &nats.url()).await;
        let two = open_js(d2.path(), &nats.url()).await;
        append(&one, "order-1", &["a", "b", "c", "d"]).await;
        append(&one, "user-1", &["u"]).await;
        one.create_persistent(create("g", "order-*", 1))
            .await
            .expect("create");
        assert!(matches!(
            two.create_persistent(create("g", "$all", 1)).await,
            Err(EventStoreError::SubscriptionExists { .. })
        ));
        let got = read_until(&two, "g", 4).await;
        assert_eq!(ids(&got), ["a", "b", "c", "d"].map(String::from).into());
        let receipt = |id: &str| {
            vec![got
                .iter()
                .find(|e| e.event.event.id == id)
                .expect("delivered")
                .receipt
                .clone()]
        };
        let acked = one.ack_persistent("g", &receipt("a")).await.expect("ack");
        assert_eq!(acked[0].1, ReceiptOutcome::Acked);
        let again = two.ack_persistent("g", &receipt("a")).await.expect("ack");
        assert_eq!(again[0].1, ReceiptOutcome::AlreadyDone);
        let parked = two
            .nack_persistent("g", &receipt("b"), NackAction::Park, Some("bad"))
            .await
            .expect("park");
        assert_eq!(parked[0].1, ReceiptOutcome::Parked);
        let skipped = one
            .nack_persistent("g", &receipt("c"), NackAction::Skip, None)
            .await
            .expect("skip");
        assert_eq!(skipped[0].1, ReceiptOutcome::Skipped);
        let retried = one
            .nack_persistent("g", &receipt("d"), NackAction::Retry { delay_ms: 0 }, None)
            .await
            .expect("retry");
        assert_eq!(retried[0].1, ReceiptOutcome::Retried);
        let d = read_until(&one, "g", 1).await;
        assert_eq!(
            (d[0].event.event.id.as_str(), d[0].delivery_count),
            ("d", 2)
        );
        let stale = two.ack_persistent("g", &receipt("d")).await.expect("ack");
        assert_eq!(stale[0].1, ReceiptOutcome::LeaseLost);
        let exhausted = two
            .nack_persistent(
                "g",
                &[d[0].receipt.clone()],
                NackAction::Retry { delay_ms: 0 },
                None,
            )
            .await
            .expect("retry");
        assert_eq!(exhausted[0].1, ReceiptOutcome::Parked, "max_retries 1");
        let list = two.list_parked("g", 0, 10).expect("parked");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].reason, "bad");
        assert_eq!(list[1].reason, "delivery attempts exhausted");
        assert_eq!(one.replay_parked("g").await.expect("replay"), 2);
        assert_eq!(one.replay_parked("g").await.expect("replay"), 0);
        let back = read_until(&two, "g", 2).await;
        assert_eq!(ids(&back), ["b", "d"].map(String::from).into());
        assert!(back.iter().all(|e| e.delivery_count == 1));
        let receipts: Vec<String> = back.iter().map(|e| e.receipt.clone()).collect();
        let acked = one.ack_persistent("g", &receipts).await.expect("ack");
        assert!(acked.iter().all(|(_, o)| *o == ReceiptOutcome::Acked));
        let info = one.persistent_info("g").expect("info");
        assert_eq!(
            (info.in_flight, info.pending, info.parked),
            (0, 0, 0),
            "{info:?}"
        );
        two.delete_persistent("g").await.expect("delete");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while one.persistent_info("g").is_ok() {
            assert!(std::time::Instant::now() < deadline, "still listed on one");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        one.close().expect("close");
        two.close().expect("close");
    }

    /// A last allowed delivery whose lease lapses is parked by the gateway that handed it
    /// out, without another read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lapsed_last_delivery_is_parked_when_its_lease_ends() {
        let nats = NatsServer::start_temp();
        let dir = tempfile::tempdir().expect("dir");
        let store = open_js(dir.path(), &nats.url()).await;
        append(&store, "job-1", &["x"]).await;
        let mut request = create("g", "job-*", 0);
        request.visibility_timeout_ms = Some(400);
        store.create_persistent(request).await.expect("create");
        let got = read_until(&store, "g", 1).await;
        assert_eq!(got[0].delivery_count, 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.persistent_info("g").expect("info").parked == 0 {
            assert!(std::time::Instant::now() < deadline, "not parked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let parked = store.list_parked("g", 0, 10).expect("parked");
        assert_eq!(parked.len(), 1);
        assert_eq!(
            parked[0].reason,
            "visibility timeout expired without an ack"
        );
        let late = store.ack_persistent("g", &[got[0].receipt.clone()]).await;
        assert_eq!(late.expect("ack")[0].1, ReceiptOutcome::AlreadyDone);
        assert!(store
            .read_persistent("g", 10, None, Duration::from_millis(800))
            .await
            .expect("read")
            .is_empty());
        store.close().expect("close");
    }
}
