//! The registries' followers on a real nats-server: a watch started on a bucket sees a
//! write made right after it started even when another key is removed at once. With KV
//! purges (subject rollups) nats-server 2.9.10 moved the watch past the write (about 4 in
//! 5 rounds here; a persistent subscription created on one gateway never opened on the
//! other); the registries remove keys with KV deletes, which do not.

use std::time::Duration;

use futures::StreamExt;
use herald_broker::storage::{
    DefinitionChange, JetStreamBackend, JetStreamConfig, SharedDefinitions,
};
use herald_testkit::NatsServer;

const ROUNDS: usize = 100;

async fn definitions(nats: &NatsServer, prefix: &str) -> SharedDefinitions {
    let config = JetStreamConfig {
        prefix: prefix.to_string(),
        ..JetStreamConfig::new(nats.url())
    };
    let backend = JetStreamBackend::connect(config)
        .await
        .expect("connect to JetStream");
    SharedDefinitions::open(&backend, "subscriptions")
        .await
        .expect("open the bucket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_a_write_followed_at_once_by_a_removal() {
    let nats = NatsServer::start_temp();
    for round in 0..ROUNDS {
        // A fresh bucket per round, written through another connection.
        let prefix = format!("R{round}");
        let follower = definitions(&nats, &prefix).await;
        let writer = definitions(&nats, &prefix).await;
        let (_, revision) = follower.load().await.expect("load");
        let mut changes = Box::pin(follower.watch(revision).await.expect("watch"));
        // Sent back to back on one connection: the removal lands before the watch can
        // have delivered the write.
        let (created, removed) = tokio::join!(writer.create("a", "x".into()), writer.remove("b"));
        assert!(created.expect("create"));
        removed.expect("remove");
        let seen = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(DefinitionChange { name, value }) = changes.next().await {
                if name == "a" && value.is_some() {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(seen, Ok(true), "round {round}: the watch missed the write");
    }
}
