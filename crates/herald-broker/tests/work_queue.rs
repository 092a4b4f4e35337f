//! Work-queue leases on a real nats-server, shared by two brokers ("gateways"): a message
//! is leased to one of them at a time, a receipt works through either, only the current
//! delivery's receipt acknowledges (a stale one is `LeaseLost`, a finished one
//! `AlreadyDone`), an ack too close to the lease's end is refused and the message comes
//! back, a receipt of another queue is rejected, finished leases leave no entry, and
//! the trim deletes finished records but never one handed back by a nack.

mod common;

use std::time::Duration;

use futures::StreamExt;

use common::gateway;
use herald_broker::storage::{JetStreamBackend, LeaseOutcome, WorkQueue, WorkQueueConfig};
use herald_broker::{Broker, JetStreamConfig, PartitionStore, TopicConfig};
use herald_core::CloudEvent;
use herald_testkit::NatsServer;

const ACK_WAIT: Duration = Duration::from_millis(400);

async fn queue(broker: &Broker, topic: &str) -> WorkQueue {
    let partition = broker
        .topic(topic)
        .expect("topic")
        .partition(0)
        .expect("partition")
        .clone();
    let PartitionStore::JetStream(partition) = partition else {
        panic!("a JetStream partition");
    };
    partition
        .work_queue(WorkQueueConfig {
            consumer: "workers".into(),
            ack_wait: ACK_WAIT,
            max_ack_pending: 1000,
            leases: broker.lease_table().expect("lease table"),
        })
        .await
        .expect("work queue")
}

async fn wait_for_topic(broker: &Broker, topic: &str) {
    for _ in 0..500 {
        if broker.topic(topic).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("topic {topic} never appeared");
}

fn event(id: &str) -> CloudEvent {
    CloudEvent::new(id, "/work-queue-test", "test.job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_shared_and_only_the_current_delivery_acknowledges() {
    let nats = NatsServer::start_temp();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = gateway(&nats, dir_a.path()).await;
    let b = gateway(&nats, dir_b.path()).await;
    a.create_topic("jobs", TopicConfig::with_partitions(1))
        .await
        .expect("create");
    wait_for_topic(&b, "jobs").await;
    a.publish_keyed(
        "jobs",
        vec![
            (None, event("j0")),
            (None, event("j1")),
            (None, event("j2")),
        ],
        Some(0),
    )
    .await
    .expect("publish");
    let (qa, qb) = (queue(&a, "jobs").await, queue(&b, "jobs").await);

    // Leases are exclusive across gateways.
    let first = qa.fetch(2).await.expect("fetch on a");
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|l| l.delivery_count == 1));
    let rest = qb.fetch(10).await.expect("fetch on b");
    assert_eq!(rest.len(), 1, "only the message a does not hold");
    assert_eq!(rest[0].record.offset, 2);

    // A receipt works through the other gateway, once.
    assert_eq!(qb.ack(&first[0].receipt).await.unwrap(), LeaseOutcome::Done);
    assert_eq!(
        qa.ack(&first[0].receipt).await.unwrap(),
        LeaseOutcome::AlreadyDone
    );

    // A lease that lapsed is handed out again; the earlier receipt no longer counts.
    tokio::time::sleep(ACK_WAIT + Duration::from_millis(200)).await;
    let again = qb.fetch(10).await.expect("fetch again");
    let offsets: Vec<u64> = again.iter().map(|l| l.record.offset).collect();
    assert_eq!(
        offsets,
        vec![1, 2],
        "both unacknowledged messages come back"
    );
    assert!(again.iter().all(|l| l.delivery_count == 2));
    assert_eq!(
        qa.ack(&first[1].receipt).await.unwrap(),
        LeaseOutcome::LeaseLost
    );
    assert_eq!(
        qa.nak(&rest[0].receipt, None).await.unwrap(),
        LeaseOutcome::LeaseLost
    );
    for leased in &again {
        assert_eq!(qa.ack(&leased.receipt).await.unwrap(), LeaseOutcome::Done);
    }
    assert!(qb.fetch(10).await.unwrap().is_empty(), "nothing left");
    // Finished leases leave nothing in the lease table (no tombstone per message).
    let backend = JetStreamBackend::connect(JetStreamConfig::new(nats.url()))
        .await
        .expect("connect");
    let mut bucket = backend
        .context()
        .get_stream("KV_HERALD_leases")
        .await
        .expect("the lease table's stream");
    let state = bucket.info().await.expect("stream info").state.clone();
    assert_eq!(
        state.messages, 0,
        "entries left in the lease table: {state:?}"
    );

    // A receipt of another queue is not one of this queue's.
    a.create_topic("other", TopicConfig::with_partitions(1))
        .await
        .expect("create");
    let other = queue(&a, "other").await;
    assert!(other.parse_receipt(&again[0].receipt).is_none());
    assert!(other.ack(&again[0].receipt).await.is_err());
    assert!(qa.parse_receipt("garbage").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_at_the_end_of_its_lease_is_refused_and_the_message_returns() {
    let nats = NatsServer::start_temp();
    let dir = tempfile::tempdir().unwrap();
    let broker = gateway(&nats, dir.path()).await;
    broker
        .create_topic("late", TopicConfig::with_partitions(1))
        .await
        .expect("create");
    broker
        .publish_keyed("late", vec![(None, event("l0"))], Some(0))
        .await
        .expect("publish");
    let q = queue(&broker, "late").await;
    let leased = q.fetch(1).await.expect("fetch");
    assert_eq!(leased.len(), 1);
    // Progress restarts the lease: still held after more than one ack wait in total.
    tokio::time::sleep(ACK_WAIT / 2).await;
    assert_eq!(
        q.progress(&leased[0].receipt).await.unwrap(),
        LeaseOutcome::Done
    );
    tokio::time::sleep(ACK_WAIT / 2 + Duration::from_millis(50)).await;
    assert!(q.fetch(1).await.unwrap().is_empty(), "still leased");
    // Within the margin before its end the lease no longer acknowledges.
    tokio::time::sleep(ACK_WAIT / 2 - Duration::from_millis(60)).await;
    assert_eq!(
        q.ack(&leased[0].receipt).await.unwrap(),
        LeaseOutcome::LeaseLost
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let back = q.fetch(1).await.expect("fetch again");
    assert_eq!(back.len(), 1, "the unacknowledged message returns");
    assert_eq!(back[0].delivery_count, 2);
    assert_eq!(q.ack(&back[0].receipt).await.unwrap(), LeaseOutcome::Done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_table_made_by_an_earlier_version_still_fences_with_tombstones() {
    let nats = NatsServer::start_temp();
    let backend = JetStreamBackend::connect(JetStreamConfig::new(nats.url()))
        .await
        .expect("connect");
    // Earlier versions made the bucket like every other one: no single-message deletes.
    backend
        .key_value_expiring("HERALD_leases", "old", Duration::from_secs(3 * 24 * 3600))
        .await
        .expect("old bucket");
    let dir = tempfile::tempdir().unwrap();
    let broker = gateway(&nats, dir.path()).await;
    broker
        .create_topic("old", TopicConfig::with_partitions(1))
        .await
        .expect("create");
    broker
        .publish_keyed("old", vec![(None, event("o0"))], Some(0))
        .await
        .expect("publish");
    let q = queue(&broker, "old").await;
    let leased = q.fetch(1).await.expect("fetch");
    assert_eq!(q.ack(&leased[0].receipt).await.unwrap(), LeaseOutcome::Done);
    let mut bucket = backend
        .context()
        .get_stream("KV_HERALD_leases")
        .await
        .expect("the lease table's stream");
    let info = bucket.info().await.expect("stream info").clone();
    assert!(info.config.deny_delete, "JetStream cannot lift it");
    assert_eq!(info.state.messages, 1, "one tombstone, as before");
    // Stale and finished receipts answer as on a new table.
    assert_eq!(
        q.ack(&leased[0].receipt).await.unwrap(),
        LeaseOutcome::AlreadyDone
    );
}

/// The sequences the lease table holds keys for (every queue).
async fn lease_keys(nats: &NatsServer) -> Vec<u64> {
    let backend = JetStreamBackend::connect(JetStreamConfig::new(nats.url()))
        .await
        .expect("connect");
    let kv = backend
        .context()
        .get_key_value("HERALD_leases")
        .await
        .expect("the lease table");
    let mut keys: Vec<u64> = kv
        .keys()
        .await
        .expect("keys")
        .filter_map(|k| async move { k.ok()?.rsplit('.').next()?.parse::<u64>().ok() })
        .collect()
        .await;
    keys.sort_unstable();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_records_are_deleted_and_a_nacked_one_never_is() {
    let nats = NatsServer::start_temp();
    let dir = tempfile::tempdir().unwrap();
    let broker = gateway(&nats, dir.path()).await;
    broker
        .create_topic("trim", TopicConfig::with_partitions(1))
        .await
        .expect("create");
    let events = (0..20).map(|i| (None, event(&format!("t{i}")))).collect();
    broker
        .publish_keyed("trim", events, Some(0))
        .await
        .expect("publish");
    let q = queue(&broker, "trim").await;
    let leased = q.fetch(20).await.expect("fetch");
    assert_eq!(leased.len(), 20);
    assert_eq!(q.done_below().await.unwrap(), 0, "nothing finished yet");

    // Offsets 2 and 5 are handed back for later, 7 is taken (as for dead-lettering),
    // everything else acknowledged. NATS 2.9 may move its ack floor past the nacked
    // ones; their waiting markers hold the trim back.
    let delay = Some(Duration::from_millis(1500));
    for l in &leased {
        let outcome = match l.record.offset {
            2 | 5 => q.nak(&l.receipt, delay).await.unwrap(),
            7 => q.take(&l.receipt).await.unwrap(),
            _ => q.ack(&l.receipt).await.unwrap(),
        };
        assert_eq!(outcome, LeaseOutcome::Done, "offset {}", l.record.offset);
    }
    assert_eq!(lease_keys(&nats).await, [3, 6, 8], "markers of 2, 5 and 7");
    // A nacked receipt is finished: it neither acks nor nacks again.
    assert_eq!(
        q.ack(&leased[2].receipt).await.unwrap(),
        LeaseOutcome::AlreadyDone
    );
    assert_eq!(q.trim(Duration::ZERO).await.unwrap(), (2, false));
    let partition = q.partition();
    assert_eq!(partition.start_offset(), 2, "records 0 and 1 deleted");
    // The taken one is terminated: its marker goes, the floor still waits for offset 2.
    q.term_taken(&leased[7].receipt).await.unwrap();
    assert_eq!(lease_keys(&nats).await, [3, 6]);
    assert_eq!(q.trim(Duration::ZERO).await.unwrap(), (2, false));

    // Both come back after their delay and are acknowledged: everything goes.
    let mut back = Vec::new();
    for _ in 0..100 {
        back.extend(q.fetch(10).await.expect("fetch"));
        if back.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let offsets: Vec<u64> = back.iter().map(|l| l.record.offset).collect();
    assert_eq!(offsets, [2, 5], "the nacked records were not deleted");
    assert!(back.iter().all(|l| l.delivery_count == 2));
    for l in &back {
        assert_eq!(q.ack(&l.receipt).await.unwrap(), LeaseOutcome::Done);
    }
    assert!(lease_keys(&nats).await.is_empty());
    assert_eq!(q.trim(Duration::ZERO).await.unwrap(), (20, false));
    assert_eq!(partition.start_offset(), 20, "every record deleted");
    assert_eq!(partition.next_offset(), 20);
}
