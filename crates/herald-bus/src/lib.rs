//! Herald's event bus on top of the broker's log: subscriptions that route events by
//! topic pattern and content filter to queues (pull, with leases, acks and dead
//! letters), webhooks (push with retries and signatures), other topics (forward) and
//! live push streams (SSE / WebSocket).
//!
//! - [`bus`]: the [`Bus`] handle: admin, queue operations, dead letters, streams.
//! - [`spec`]: what a subscription is and its validation; [`store`]: its durable form.
//! - [`matching`]: topic patterns and the filter language (from `herald_core`).
//! - [`routing`]: the per-topic routing table (indexed filters).
//! - [`dispatcher`]: readers that follow source partitions and route each event once.
//! - [`queue`]: a subscription's durable queue: state machine, journal, dead letters.
//! - [`webhook`]: the push deliverer; [`signature`]: HMAC signatures receivers check.
//! - [`stream`]: bounded fan-out to live connections.
//!
//! It is not a broker: it stores nothing outside the broker's topics except
//! subscription definitions, queue state journals and the dispatcher's checkpoint
//! (`<data_dir>/subscriptions/`, `<data_dir>/bus/`). Internal topics start with `__`
//! and are never matched by a subscription pattern.
//!
//! Invariants: each event appended to a source topic is routed to each matching
//! subscription at most once per queue (crash included) and at least once; an
//! acknowledged queue message is never delivered again once the ack returned.

#![deny(clippy::unwrap_used, clippy::panic)]
#![warn(clippy::expect_used)]
#![cfg_attr(test, allow(clippy::expect_used, clippy::unwrap_used, clippy::panic))]

pub mod allowlist;
pub mod bus;
pub mod dispatcher;
pub mod error;
pub mod matching;
pub mod queue;
pub mod routing;
pub mod signature;
pub mod spec;
pub mod store;
pub mod stream;
pub mod subscription;
pub mod webhook;

pub use bus::{test_filter, Bus, BusConfig, RedriveSelection};
pub use error::BusError;
pub use queue::state::ReceiptOutcome;
pub use queue::Message;
pub use stream::StreamReceiver;
