//! JetStream test servers for the black-box suite: [`NatsServer`] lives in herald-testkit
//! (the event store's own JetStream tests use it too); this module keeps the suite's path.

pub use herald_testkit::nats::*;
