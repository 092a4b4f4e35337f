//! What the broker's JetStream tests share: a broker ("gateway") on a test nats-server.

use herald_broker::config::StorageBackend;
use herald_broker::{Broker, BrokerConfig, JetStreamConfig};
use herald_testkit::NatsServer;

/// A broker on `nats` with its local data in `dir`.
pub async fn gateway(nats: &NatsServer, dir: &std::path::Path) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.storage = StorageBackend::JetStream(JetStreamConfig::new(nats.url()));
    Broker::open(config)
        .await
        .expect("open a broker on JetStream")
}
