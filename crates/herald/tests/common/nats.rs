//! JetStream test servers for the black-box suite: [`NatsServer`] lives in herald-testkit
//! (the event store's own JetStream tests use it too); this module keeps the suite's path
//! and starts Herald gateways on a nats-server (no Kafka listener unless asked for).

pub use herald_testkit::nats::*;

use super::Server;

/// A gateway on the JetStream at `nats_url` (one URL or several, comma-separated), with
/// `extra` arguments after the storage ones.
pub fn gateway(nats_url: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--storage",
        "jetstream",
        "--nats-url",
        nats_url,
        "--no-kafka",
    ];
    args.extend_from_slice(extra);
    Server::start_with_args(&args)
}

/// A fresh nats-server and two gateways on it.
pub fn two_gateways() -> (NatsServer, Server, Server) {
    let nats = NatsServer::start_temp();
    let one = gateway(&nats.url(), &[]);
    let two = gateway(&nats.url(), &[]);
    (nats, one, two)
}
