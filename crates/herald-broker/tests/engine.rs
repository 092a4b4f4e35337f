//! In-process scenarios of the broker engine (no HTTP): publish/fetch, partitioning,
//! long-poll, consumer groups, restart.

use std::time::{Duration, Instant};

use herald_broker::{Broker, BrokerConfig, BrokerError, JoinOptions, SeekPosition, TopicConfig};
use herald_core::CloudEvent;

fn event(id: usize, key: Option<&str>) -> CloudEvent {
    let e = CloudEvent::new(format!("e-{id}"), "/test", "test.event")
        .with_json_data(&serde_json::json!({"n": id}));
    match key {
        Some(k) => e.with_extension("partitionkey", k),
        None => e,
    }
}

async fn open(dir: &std::path::Path) -> Broker {
    Broker::open(BrokerConfig::new(dir))
        .await
        .expect("open broker")
}

#[tokio::test]
async fn publish_then_fetch_round_trips_with_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    broker
        .create_topic("orders", TopicConfig::with_partitions(1))
        .await
        .expect("create");
    let receipts = broker
        .publish("orders", (0..10).map(|i| event(i, None)).collect(), None)
        .await
        .expect("publish");
    assert_eq!(
        receipts.iter().map(|r| r.offset).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    let page = broker
        .fetch("orders", 0, SeekPosition::Offset(3), 4, Duration::ZERO)
        .await
        .expect("fetch");
    assert_eq!(page.events.len(), 4);
    assert_eq!(page.events[0].event.id, "e-3");
    assert_eq!(page.events[0].event.correlation_id(), Some("e-3"));
    assert_eq!(page.next_offset, 7);
    assert_eq!(page.end_offset, 10);
    broker.shutdown().await;
}

#[tokio::test]
async fn same_key_same_partition_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    broker
        .create_topic("t", TopicConfig::with_partitions(4))
        .await
        .expect("create");
    let receipts = broker
        .publish(
            "t",
            (0..20).map(|i| event(i, Some("customer-1"))).collect(),
            None,
        )
        .await
        .expect("publish");
    let partition = receipts[0].partition;
    assert!(receipts.iter().all(|r| r.partition == partition));
    assert!(receipts.windows(2).all(|w| w[1].offset == w[0].offset + 1));
    let unkeyed = broker
        .publish("t", (100..108).map(|i| event(i, None)).collect(), None)
        .await
        .expect("publish");
    let used: std::collections::BTreeSet<u32> = unkeyed.iter().map(|r| r.partition).collect();
    assert_eq!(used.len(), 4, "round-robin spreads unkeyed events");
}

#[tokio::test]
async fn long_poll_is_woken_by_the_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    broker
        .create_topic("t", TopicConfig::default())
        .await
        .expect("create");
    let waiter = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let page = broker
                .fetch("t", 0, SeekPosition::Offset(0), 10, Duration::from_secs(20))
                .await
                .expect("fetch");
            (page.events.len(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker
        .publish("t", vec![event(1, None)], None)
        .await
        .expect("publish");
    let (count, waited) = waiter.await.expect("join");
    assert_eq!(count, 1);
    assert!(
        waited < Duration::from_secs(10),
        "woken by the append, not the timeout: {waited:?}"
    );
}

#[tokio::test]
async fn bad_requests_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = open(dir.path()).await;
    assert!(matches!(
        broker.create_topic("../x", TopicConfig::default()).await,
        Err(BrokerError::Invalid(_))
    ));
    broker
        .create_topic("t", TopicConfig::with_partitions(2))
        .await
        .expect("create");
    assert!(matches!(
        broker.create_topic("t", TopicConfig::default()).await,
        Err(BrokerError::TopicExists(_))
    ));
    assert!(matches!(
        broker
            .fetch("t", 5, SeekPosition::Earliest, 1, Duration::ZERO)
            .await,
        Err(BrokerError::PartitionNotFound { .. })
    ));
    assert!(matches!(
        broker
            .fetch("t", 0, SeekPosition::Offset(9), 1, Duration::ZERO)
            .await,
        Err(BrokerError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        broker.publish("nope", vec![event(1, None)], None).await,
        Err(BrokerError::TopicNotFound(_))
    ));
    let huge = CloudEvent::new("big", "/s", "t")
        .with_json_data(&serde_json::json!("x".repeat(2 * 1024 * 1024)));
    assert!(matches!(
        broker.publish("t", vec![huge], None).await,
        Err(BrokerError::PayloadTooLarge { .. })
    ));
    let mut invalid = event(1, None);
    invalid.source.clear();
    match broker
        .publish("t", vec![event(0, None), invalid], None)
        .await
    {
        Err(BrokerError::Invalid(v)) => assert_eq!(v.field, "[1].source"),
        other => panic!("expected invalid [1].source, got {other:?}"),
    }
    assert!(dir.path().parent().is_some_and(|p| !p.join("x").exists()));
}

#[tokio::test]
async fn group_members_share_partitions_and_offsets_survive_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let broker = open(dir.path()).await;
        broker
            .create_topic("t", TopicConfig::with_partitions(6))
            .await
            .expect("create");
        broker
            .publish(
                "t",
                (0..60).map(|i| event(i, Some(&format!("k{i}")))).collect(),
                None,
            )
            .await
            .expect("publish");
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(
                broker
                    .join_group("g", JoinOptions::new(vec!["t".into()]))
                    .await
                    .expect("join")
                    .0,
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &members {
            let fetched = broker
                .fetch_for_member("g", m, 1000, Duration::ZERO)
                .await
                .expect("fetch");
            assert_eq!(fetched.assignments.len(), 2);
            for e in fetched.events {
                assert!(
                    seen.insert((e.partition, e.offset)),
                    "no two members get the same event"
                );
            }
            broker.commit_offsets("g", m, None).await.expect("commit");
        }
        assert_eq!(seen.len(), 60);
        broker.leave_group("g", &members[0]).await.expect("leave");
        let d = broker.describe_group("g").expect("describe");
        assert_eq!(d.members.len(), 2);
        assert_eq!(d.offsets.iter().map(|o| o.lag).sum::<u64>(), 0);
        broker.shutdown().await;
    }
    let broker = open(dir.path()).await;
    let d = broker.describe_group("g").expect("group survives restart");
    assert_eq!(d.offsets.len(), 6);
    assert!(d.offsets.iter().all(|o| o.committed == Some(o.end_offset)));
    let (member, _, _) = broker
        .join_group("g", JoinOptions::new(vec!["t".into()]))
        .await
        .expect("join");
    let fetched = broker
        .fetch_for_member("g", &member, 1000, Duration::ZERO)
        .await
        .expect("fetch");
    assert!(
        fetched.events.is_empty(),
        "committed events are not delivered again"
    );
}

#[tokio::test]
async fn second_broker_on_same_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _broker = open(dir.path()).await;
    assert!(matches!(
        Broker::open(BrokerConfig::new(dir.path())).await,
        Err(BrokerError::DataDirLocked { .. })
    ));
}
