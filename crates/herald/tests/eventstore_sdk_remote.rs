//! The SDK's event-store API over HTTP against the real binary: typed conflict and
//! not-found errors, snapshots, metadata, deletes, and a remote catch-up subscription
//! that switches from history to live events (the same calls the embedded test makes).

mod common;

use std::time::Duration;

use common::Server;
use herald_client::{
    ClientError, CloudEvent, Direction, ExpectedVersion, Herald, StreamMetadata, SubscriptionTarget,
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
    runtime.block_on(round_trip(&server.url()));
}

async fn round_trip(url: &str) {
    let herald = Herald::connect(url).expect("connect");

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
