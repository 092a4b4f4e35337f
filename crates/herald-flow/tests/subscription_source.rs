//! The catch-up-subscription event source (embedded event store): history then live
//! events with no polling, the category filter, and a resubscribe when a reader asks
//! for another position (a restart or rebuild).

use std::time::Duration;

use herald_client::{CloudEvent, ExpectedVersion, Herald};
use herald_flow::{EventSource, StoreSubscriptionSource};

fn event(id: &str) -> CloudEvent {
    CloudEvent::new(id, "/test", "test.happened")
}

async fn append(herald: &Herald, stream: &str, id: &str) {
    herald
        .append_to_stream(stream, ExpectedVersion::Any, vec![event(id)])
        .await
        .expect("append");
}

fn ids(batch: &herald_flow::Batch) -> Vec<&str> {
    batch.events.iter().map(|e| e.event.id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_category_without_polling() {
    let dir = tempfile::tempdir().expect("temp dir");
    let herald = Herald::open(dir.path().join("data")).await.expect("open");
    append(&herald, "order-1", "a").await;
    append(&herald, "user-1", "u").await;
    append(&herald, "order-2", "b").await;
    let source = StoreSubscriptionSource::category(herald.clone(), "order-")
        .with_wait(Duration::from_secs(20));
    let first = source.read_after(None, 10).await.expect("read");
    assert_eq!(ids(&first), ["a", "b"]);
    assert_eq!(first.scanned_to, Some(2));
    // Caught up: the next read waits for the next order event.
    let writer = {
        let herald = herald.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            append(&herald, "user-2", "v").await;
            append(&herald, "order-1", "c").await;
        })
    };
    let live = source.read_after(first.scanned_to, 10).await.expect("read");
    writer.await.expect("writer");
    assert_eq!(ids(&live), ["c"]);
    assert_eq!(live.scanned_to, Some(4));
    // Another position (e.g. a checkpoint from before a crash): resubscribes from it.
    let again = source.read_after(Some(0), 1).await.expect("read");
    assert_eq!(ids(&again), ["b"]);
    // Nothing new within the wait: an empty batch at the same position.
    let idle = StoreSubscriptionSource::all(herald.clone()).with_wait(Duration::from_millis(20));
    let all = idle.read_after(None, 100).await.expect("read");
    assert_eq!(all.events.len(), 5);
    let none = idle.read_after(all.scanned_to, 100).await.expect("read");
    assert!(none.events.is_empty());
    assert_eq!(none.scanned_to, all.scanned_to);
}
