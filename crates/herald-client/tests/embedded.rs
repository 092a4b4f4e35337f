//! Embedded mode: the SDK runs the broker in-process on a data directory, with the
//! same API as over HTTP, and what it wrote is there after reopening.

use std::time::Duration;

use herald_client::{CloudEvent, Herald, JoinOptions, SeekPosition, TopicConfig};

fn order(i: u32) -> CloudEvent {
    CloudEvent::new(format!("o-{i}"), "/shop", "order.created")
        .with_extension("partitionkey", format!("cust-{}", i % 3))
        .with_json_data(&serde_json::json!({"n": i}))
}

#[tokio::test]
async fn embedded_round_trip_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let herald = Herald::open(dir.path()).await.expect("open");
        herald
            .create_topic("orders", TopicConfig::with_partitions(3))
            .await
            .expect("create");
        let receipts = herald
            .publish_batch("orders", (0..30).map(order).collect())
            .await
            .expect("publish");
        assert_eq!(receipts.len(), 30);
        let consumer = herald
            .join_group("billing", JoinOptions::new(vec!["orders".into()]))
            .await
            .expect("join");
        let mut seen = 0;
        while seen < 30 {
            let events = consumer
                .poll(100, Duration::from_millis(200))
                .await
                .expect("poll");
            assert!(!events.is_empty(), "all 30 events arrive");
            seen += events.len();
        }
        consumer.commit().await.expect("commit");
        consumer.leave().await.expect("leave");
        herald.close().await;
    }
    let herald = Herald::open(dir.path()).await.expect("reopen");
    let topics = herald.list_topics().await.expect("list");
    assert_eq!(topics.len(), 1);
    assert_eq!(
        topics[0]
            .partition_stats
            .iter()
            .map(|p| p.end_offset)
            .sum::<u64>(),
        30
    );
    let group = herald.describe_group("billing").await.expect("group");
    assert!(group.offsets.iter().all(|o| o.lag == 0), "{group:?}");
    let first = herald
        .fetch("orders", 0, SeekPosition::Earliest, 100, Duration::ZERO)
        .await
        .expect("fetch");
    let keys: std::collections::BTreeSet<_> = first.events.iter().map(|e| e.key_string()).collect();
    assert!(keys.len() <= 3, "each key stays on one partition");
    let err = herald
        .publish("nope", order(1))
        .await
        .expect_err("unknown topic");
    assert_eq!(err.code(), Some("topic_not_found"));
    herald.close().await;
}
