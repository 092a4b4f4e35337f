//! Herald's event store: streams per aggregate with optimistic concurrency, one global
//! `$all` order, snapshots and catch-up subscriptions, on a single herald-log log, or on
//! NATS JetStream shared by several gateways (each keeping that log as a local mirror).
//!
//! - [`store`]: [`EventStore`], the API (append, read, metadata, delete, snapshots).
//! - [`index`]: the in-memory per-stream index rebuilt from the log on open;
//!   `index_checkpoint`: its durable checkpoint, so an open scans only the log after it.
//! - [`record`]: the binary form of a log record (event or control record).
//! - [`batch`]: the records of one write as one JetStream message.
//! - `jetstream`: the store on JetStream ([`EventStore::open_jetstream`]): publishing with
//!   the expected last subject sequence, and the mirror applying the stream locally.
//! - [`subscription`]: [`CatchUpSubscription`] (history, then live, one cursor).
//! - [`persistent`]: persistent subscriptions (server-side checkpoint, competing
//!   consumers, parked events), on herald-bus's queue state machine and journal.
//! - `snapshot`: durable snapshot files (a JetStream KV bucket on JetStream).
//! - [`types`], [`error`]: the values and errors of the API.
//!
//! On disk, `<dir>/log/` is a herald-log partition whose offsets are the `$all`
//! positions; `<dir>/snapshots/<stream>.json` hold snapshots; `<dir>/persistent/<group>/`
//! hold persistent subscriptions; `<dir>/index.checkpoint` is the index checkpoint;
//! `<dir>/.lock` keeps a second process out. On JetStream, `<dir>/mirror/` replaces
//! `<dir>/log/` (rebuilt from JetStream at every open) and snapshots live in KV.
//!
//! Invariants: a stream's versions are dense from 0 and increase with the position;
//! an append is one log batch (atomic across a crash) and is acknowledged only once
//! durable (fsync `always` by default; on JetStream: one message, acknowledged by
//! JetStream and applied to the local mirror). It is not a projection or saga runtime: those
//! sit above it in the SDK.

#![deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
#![warn(clippy::expect_used)]
#![cfg_attr(
    test,
    allow(
        clippy::expect_used,
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod batch;
pub mod error;
pub mod index;
mod index_checkpoint;
mod jetstream;
pub mod persistent;
pub mod record;
mod snapshot;
pub mod store;
pub mod subscription;
pub mod types;

#[cfg(test)]
mod tests;

pub use error::EventStoreError;
pub use persistent::{
    CreatePersistent, NackAction, ParkedEvent, PersistentEvent, PersistentInfo, PersistentSettings,
    ReceiptOutcome, StartFrom,
};
pub use store::{validate_stream_name, EventStore, EventStoreConfig, ALL_STREAM};
pub use subscription::CatchUpSubscription;
pub use types::{
    AppendResult, Direction, ExpectedVersion, RecordedEvent, Snapshot, StreamDescription,
    StreamInfo, StreamMetadata, SubscriptionTarget,
};
