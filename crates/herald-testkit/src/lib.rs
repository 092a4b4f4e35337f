//! Herald's test kit: test event-driven code without a server and without sleeping.
//!
//! - [`InMemoryBus`]: an ordered in-memory event log; it is an [`EventSource`] (for
//!   projections and sagas) and a [`CommandSink`] (for saga commands).
//! - [`VirtualClock`]: a [`Clock`] that moves only when the test advances it, so saga
//!   timeouts fire deterministically.
//! - [`given`]: `given(events).when(command).then(events)` / `.then_error(..)` for
//!   [`Aggregate`]s.
//! - [`expect_chain`]: assertions on the events sharing a correlation id (order, count,
//!   causation links).
//! - [`PgServer`]: a private throwaway Postgres cluster (for Postgres projections).
//! - [`nats::NatsServer`]: private `nats-server` processes with JetStream (one, or a
//!   cluster of three).
//!
//! Everything here panics with a readable message on a failed expectation, as test
//! assertions do; nothing here is meant for production paths.

mod bus;
mod chain;
mod given;
pub mod nats;
mod postgres;

pub use bus::{InMemoryBus, VirtualClock};
pub use chain::{expect_chain, Chain};
pub use given::{given, Given, When};
pub use herald_flow::{Aggregate, Clock, CommandSink, EventSource};
pub use nats::NatsServer;
pub use postgres::{PgServer, PG_USER};
