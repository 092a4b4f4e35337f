//! The SDK's event-store API in embedded mode: append with expected versions, typed
//! conflict errors, reads, snapshots, a catch-up subscription, and reopen.

use std::time::Duration;

use herald_client::{
    ClientError, CloudEvent, Direction, ExpectedVersion, Herald, SubscriptionTarget,
};
use serde_json::json;

fn event(id: &str) -> CloudEvent {
    CloudEvent::new(id, "/shop", "order.placed").with_json_data(&json!({"id": id}))
}

#[tokio::test]
async fn embedded_event_store_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let herald = Herald::open(dir.path()).await.expect("open");
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
            Err(ClientError::WrongExpectedVersion { current, .. }) => assert_eq!(current, Some(1)),
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
        let mut subscription = herald
            .subscribe_from(SubscriptionTarget::Category("order".into()), None)
            .await
            .expect("subscribe");
        herald
            .append_to_stream("order-2", ExpectedVersion::Any, vec![event("z")])
            .await
            .expect("append");
        let mut ids = Vec::new();
        for _ in 0..3 {
            let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
                .await
                .expect("in time")
                .expect("next");
            ids.push(next.event.id);
        }
        assert_eq!(ids, ["a", "b", "z"]);
        herald.close().await;
    }
    let herald = Herald::open(dir.path()).await.expect("reopen");
    let events = herald
        .read_stream("order-1", 0, 10, Direction::Forwards)
        .await
        .expect("read");
    assert_eq!(events.len(), 2);
    let snapshot = herald
        .load_snapshot("order-1")
        .await
        .expect("load")
        .expect("snapshot kept");
    assert_eq!(snapshot.version, 1);
    let all = herald
        .read_all(u64::MAX, 10, Direction::Backwards)
        .await
        .expect("all");
    assert_eq!(all.first().map(|e| e.event.id.as_str()), Some("z"));
    let streams = herald.list_streams().await.expect("list");
    assert_eq!(streams.len(), 2);
}
