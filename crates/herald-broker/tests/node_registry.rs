//! Kafka node registry on a real nats-server: two gateways claim distinct ids, see each
//! other live and agree on every key's owner; one that leaves is dropped at once, one that
//! stops renewing (a killed gateway) is dropped after the node timeout, and its id is
//! claimed by the next gateway only once its key is gone, except by the same gateway
//! restarted at its old address, which takes its old id back (never a live gateway's id,
//! whatever address it advertises).

use std::time::{Duration, Instant};

use herald_broker::storage::node_registry::NODE_TIMEOUT;
use herald_broker::storage::{JetStreamBackend, JetStreamConfig, NodeRegistry};
use herald_testkit::NatsServer;

async fn join(nats: &NatsServer, port: u16) -> std::sync::Arc<NodeRegistry> {
    let backend = JetStreamBackend::connect(JetStreamConfig::new(nats.url()))
        .await
        .expect("connect to JetStream");
    NodeRegistry::join(&backend, "127.0.0.1".into(), port)
        .await
        .expect("join the Kafka nodes")
}

async fn wait_until(what: &str, limit: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(registry: &NodeRegistry) -> Vec<i32> {
    registry.live().iter().map(|n| n.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_agree_on_owners_and_drop_nodes_that_leave_or_die() {
    let nats = NatsServer::start_temp();
    let one = join(&nats, 9001).await;
    let two = join(&nats, 9002).await;
    let three = join(&nats, 9003).await;
    let (a, b, c) = (one.me().id, two.me().id, three.me().id);
    assert!(a != b && b != c && a != c, "distinct ids {a} {b} {c}");
    let all = {
        let mut v = vec![a, b, c];
        v.sort();
        v
    };
    for registry in [&one, &two, &three] {
        wait_until(
            "every node live everywhere",
            Duration::from_secs(10),
            || ids(registry) == all,
        )
        .await;
    }
    for i in 0..200 {
        let key = format!("group/g-{i}");
        let owner = one.owner(&key).expect("an owner");
        assert_eq!(two.owner(&key), Some(owner.clone()), "{key}");
        assert_eq!(three.owner(&key), Some(owner), "{key}");
    }

    // A clean leave is seen at once (well inside the node timeout).
    three.leave().await;
    drop(three);
    let without_c: Vec<i32> = all.iter().copied().filter(|&id| id != c).collect();
    wait_until("a node that left dropped", NODE_TIMEOUT / 2, || {
        ids(&one) == without_c && ids(&two) == without_c
    })
    .await;

    // A gateway that stops renewing is dropped after the node timeout, not before.
    let stopped = Instant::now();
    drop(two);
    wait_until("a silent node dropped", NODE_TIMEOUT * 3, || {
        ids(&one) == vec![a]
    })
    .await;
    assert!(
        stopped.elapsed() >= NODE_TIMEOUT - Duration::from_secs(2),
        "dropped after {:?}",
        stopped.elapsed()
    );
    assert_eq!(one.owner("group/any").map(|n| n.id), Some(a));

    // The id that left is free again; the silent one's key still exists (it expires later).
    let four = join(&nats, 9004).await;
    assert_ne!(
        four.me().id,
        b,
        "a silent node's id is not reused while its key exists"
    );
    assert!(
        four.me().id == c || four.me().id > b.max(c),
        "got {}",
        four.me().id
    );

    // A gateway restarted at its old address (killed, so its key is still there) takes
    // its old id back at once.
    let again = join(&nats, 9002).await;
    assert_eq!(again.me().id, b, "same address, same node id");

    // A live gateway's id is never taken by another that advertises the same address.
    let twin = join(&nats, 9001).await;
    assert_ne!(twin.me().id, a, "a live node keeps its id");
    assert_eq!(one.me().id, a);
    wait_until(
        "the restarted node live again",
        Duration::from_secs(10),
        || ids(&one).contains(&b),
    )
    .await;
}
