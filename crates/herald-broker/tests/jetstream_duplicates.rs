//! Two brokers on one JetStream appending the same store ids (as every gateway does when
//! it dispatches a bus copy): JetStream keeps one copy, the second append is answered as a
//! duplicate at the first one's offset, and only the gateway that stored it counts the
//! event in its topic activity.

mod common;

use common::gateway;
use herald_broker::{Broker, TopicConfig};
use herald_core::CloudEvent;
use herald_testkit::NatsServer;

fn events_total(broker: &Broker, topic: &str) -> u64 {
    broker
        .activity()
        .snapshot(&[topic.to_string()], i64::MAX / 2)
        .get(topic)
        .map_or(0, |a| a.events_total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_stored_by_another_gateway_is_a_duplicate_and_not_counted_again() {
    let nats = NatsServer::start_temp();
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let one = gateway(&nats, dirs[0].path()).await;
    let two = gateway(&nats, dirs[1].path()).await;
    let mut config = TopicConfig::with_partitions(1);
    config.dedup_window_ms = 0;
    one.create_topic("copies", config).await.expect("create");
    two.wait_for_topic("copies", std::time::Duration::from_secs(10))
        .await
        .expect("the topic reaches the second gateway");

    let batch = || {
        (0..3)
            .map(|i| {
                (
                    None,
                    CloudEvent::new(format!("e-{i}"), "/dup-test", "test.copy"),
                )
            })
            .collect::<Vec<_>>()
    };
    let ids = || Some((0..3).map(|i| format!("src/{i}")).collect::<Vec<_>>());
    let first = one
        .publish_keyed_with_ids("copies", batch(), Some(0), ids())
        .await
        .expect("first append");
    let second = two
        .publish_keyed_with_ids("copies", batch(), Some(0), ids())
        .await
        .expect("second append");
    assert!(first.iter().all(|r| !r.duplicate), "{first:?}");
    assert!(second.iter().all(|r| r.duplicate), "{second:?}");
    let offsets = |receipts: &[herald_broker::PublishReceipt]| {
        receipts.iter().map(|r| r.offset).collect::<Vec<_>>()
    };
    assert_eq!(
        offsets(&first),
        offsets(&second),
        "the stored copy's offsets"
    );
    assert_eq!(events_total(&one, "copies"), 3);
    assert_eq!(
        events_total(&two, "copies"),
        0,
        "duplicates are not activity"
    );
}
