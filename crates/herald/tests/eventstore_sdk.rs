//! The SDK's event-store API, one scenario run against both transports: embedded
//! (`Herald::open`, in-process store) and remote (`Herald::connect` to the real binary).
//! Typed conflict and not-found errors, snapshots, metadata, deletes, a catch-up
//! subscription that switches from history to live events, and persistent
//! subscriptions (read/ack/nack/park/replay). Embedded, the store is reopened after.

mod common;

use std::time::Duration;

use common::Server;
use herald_client::{
    ClientError, CloudEvent, CreatePersistent, Direction, ExpectedVersion, Herald, NackAction,
    PersistentOutcome, StartFrom, StreamMetadata, SubscriptionTarget,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

fn event(id: &str) -> CloudEvent {
    CloudEvent::new(id, "/shop", "order.placed").with_json_data(&json!({"id": id}))
}

#[test]
fn remote_sdk_event_store_round_trip() {
    // The harness's blocking HTTP client must be built outside the async runtime.
    let server = Server::start_with_args(&["--no-kafka"]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let herald = Herald::connect(&server.url()).expect("connect");
        round_trip(&herald).await;
        persistent_round_trip(&herald).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sdk_event_store_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let herald = Herald::open(dir.path()).await.expect("open");
        round_trip(&herald).await;
        persistent_round_trip(&herald).await;
        herald.close().await;
    }
    // Everything is still there after a reopen.
    let herald = Herald::open(dir.path()).await.expect("reopen");
    let events = herald
        .read_stream("order-1", 0, 10, Direction::Forwards)
        .await
        .expect("read");
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), [2]);
    let snapshot = herald.load_snapshot("order-1").await.expect("load");
    assert_eq!(snapshot.map(|s| s.version), Some(1));
    let streams = herald.list_streams().await.expect("list");
    assert_eq!(streams.len(), 3);
    let info = herald.persistent_info("orders").await.expect("info");
    assert_eq!(info.parked, 0);
}

async fn round_trip(herald: &Herald) {
    let first = herald
        .append_to_stream(
            "order-1",
            ExpectedVersion::NoStream,
            vec![event("a"), event("b")],
        )
        .await
        .expect("append");
    assert_eq!(first.next_expected_version, 1);
    match herald
        .append_to_stream("order-1", ExpectedVersion::Exact(0), vec![event("c")])
        .await
    {
        Err(ClientError::WrongExpectedVersion {
            stream,
            expected,
            current,
        }) => {
            assert_eq!(stream, "order-1");
            assert_eq!(expected, ExpectedVersion::Exact(0));
            assert_eq!(current, Some(1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(matches!(
        herald.read_stream("nope", 0, 10, Direction::Forwards).await,
        Err(ClientError::StreamNotFound { .. })
    ));

    herald
        .save_snapshot("order-1", 1, json!({"items": 2}))
        .await
        .expect("snapshot");
    let snapshot = herald
        .load_snapshot("order-1")
        .await
        .expect("load")
        .expect("some");
    assert_eq!((snapshot.version, snapshot.data), (1, json!({"items": 2})));
    assert_eq!(herald.load_snapshot("order-9").await.expect("load"), None);

    let mut subscription = herald
        .subscribe_from(SubscriptionTarget::Category("order".into()), None)
        .await
        .expect("subscribe");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let next = tokio::time::timeout(TIMEOUT, subscription.next())
            .await
            .expect("in time");
        ids.push(next.expect("history").event.id);
    }
    herald
        .append_to_stream("order-2", ExpectedVersion::Any, vec![event("z")])
        .await
        .expect("append");
    herald
        .append_to_stream("user-1", ExpectedVersion::Any, vec![event("not-an-order")])
        .await
        .expect("append");
    herald
        .append_to_stream("order-1", ExpectedVersion::Exact(1), vec![event("c")])
        .await
        .expect("append");
    for _ in 0..2 {
        let next = tokio::time::timeout(TIMEOUT, subscription.next())
            .await
            .expect("in time");
        ids.push(next.expect("live").event.id);
    }
    assert_eq!(ids, ["a", "b", "z", "c"]);
    assert_eq!(subscription.last_position(), Some(4));

    let description = herald
        .set_stream_metadata(
            "order-1",
            StreamMetadata {
                max_count: Some(1),
                max_age_ms: None,
            },
        )
        .await
        .expect("metadata");
    assert_eq!(description.last_version, Some(2));
    let visible = herald
        .read_stream("order-1", 0, 10, Direction::Forwards)
        .await
        .expect("read");
    assert_eq!(
        visible.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2]
    );

    let backwards = herald
        .read_all(u64::MAX, 2, Direction::Backwards)
        .await
        .expect("read all");
    assert_eq!(
        backwards
            .iter()
            .map(|e| e.event.id.as_str())
            .collect::<Vec<_>>(),
        vec!["c", "not-an-order"]
    );
    let streams = herald.list_streams().await.expect("list");
    assert_eq!(
        streams
            .iter()
            .map(|s| s.stream.as_str())
            .collect::<Vec<_>>(),
        vec!["order-1", "order-2", "user-1"]
    );

    herald
        .delete_stream("order-2", ExpectedVersion::Exact(0), true)
        .await
        .expect("tombstone");
    assert!(matches!(
        herald
            .append_to_stream("order-2", ExpectedVersion::Any, vec![event("x")])
            .await,
        Err(ClientError::StreamDeleted { .. })
    ));
}

/// Persistent subscriptions through the SDK (the streams of [`round_trip`] exist).
async fn persistent_round_trip(herald: &Herald) {
    let create = |group: &str| CreatePersistent {
        group: group.into(),
        target: SubscriptionTarget::from_name("order-*").expect("target"),
        start: StartFrom::Start,
        visibility_timeout_ms: Some(60_000),
        max_retries: Some(0),
    };
    let info = herald
        .create_persistent(create("orders"))
        .await
        .expect("create");
    assert_eq!(info.settings.group, "orders");
    let duplicate = herald.create_persistent(create("orders")).await;
    assert_eq!(
        duplicate.as_ref().err().and_then(ClientError::code),
        Some("subscription_exists")
    );
    let missing = herald.persistent_info("nope").await;
    assert_eq!(
        missing.as_ref().err().and_then(ClientError::code),
        Some("subscription_not_found")
    );
    // order-1 holds a, b, c (a and b hidden by max_count 1); order-2 is tombstoned.
    let events = herald
        .read_persistent("orders", 10, None, Duration::ZERO)
        .await
        .expect("read");
    let ids: Vec<&str> = events.iter().map(|e| e.event.event.id.as_str()).collect();
    assert_eq!(ids, ["c"]);
    // max_retries 0: a retry nack parks it at once.
    let receipt = vec![events[0].receipt.clone()];
    let outcome = herald
        .nack_persistent(
            "orders",
            &receipt,
            NackAction::Retry { delay_ms: 0 },
            Some("bad"),
        )
        .await
        .expect("nack");
    assert_eq!(outcome[0].1, PersistentOutcome::Parked);
    let parked = herald.list_parked("orders", 0, 10).await.expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].reason, "bad");
    assert_eq!(herald.replay_parked("orders").await.expect("replay"), 1);
    let again = herald
        .read_persistent("orders", 10, Some(5_000), Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(again.len(), 1);
    let acked = herald
        .ack_persistent("orders", &[again[0].receipt.clone()])
        .await
        .expect("ack");
    assert_eq!(acked[0].1, PersistentOutcome::Acked);
    // A live event reaches a waiting reader.
    let reader = {
        let herald = herald.clone();
        tokio::spawn(async move {
            herald
                .read_persistent("orders", 10, None, TIMEOUT)
                .await
                .expect("read")
        })
    };
    herald
        .append_to_stream("order-3", ExpectedVersion::Any, vec![event("live")])
        .await
        .expect("append");
    let live = reader.await.expect("join");
    assert_eq!(live[0].event.event.id, "live");
    herald
        .ack_persistent("orders", &[live[0].receipt.clone()])
        .await
        .expect("ack");
    let info = herald.persistent_info("orders").await.expect("info");
    assert_eq!((info.in_flight, info.pending, info.parked), (0, 0, 0));
    assert_eq!(info.checkpoint, Some(live[0].event.position));
    let listed = herald.list_persistent().await.expect("list");
    assert_eq!(listed.len(), 1);
    herald
        .create_persistent(create("gone"))
        .await
        .expect("create");
    herald.delete_persistent("gone").await.expect("delete");
    assert_eq!(
        herald
            .delete_persistent("gone")
            .await
            .err()
            .as_ref()
            .and_then(ClientError::code),
        Some("subscription_not_found")
    );
}
