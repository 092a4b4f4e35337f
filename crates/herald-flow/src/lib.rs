//! Herald's flow runtime: the parts of an event-driven system that sit on top of the log.
//!
//! - [`source`]: where events come from ([`EventSource`]): a topic partition, or (with the
//!   event store) `$all` or a stream category; positions are totally ordered per source.
//! - [`projection`]: CQRS projections folding events into an SQLite read model, with the
//!   checkpoint written in the same transaction as the read-model change.
//! - [`pg`]: the same projections with the read model in Postgres (`tokio-postgres`).
//! - [`saga`]: orchestration sagas (process managers): durable state, per-step timeouts,
//!   retries and compensation in reverse order, commands sent through an outbox.
//! - [`reactor`]: at-least-once handlers with side effects (choreography participants,
//!   command handlers), checkpointed in SQLite.
//! - [`aggregate`]: the event-sourced aggregate contract (pure: no I/O).
//! - [`store`]: the event store side: `$all`/category sources, a stream command sink, and
//!   the aggregate repository (expected-version appends).
//! - [`causation`]: correlation/causation ids carried from event to event.
//! - [`clock`]: the time source sagas use, so tests can drive time (see `herald-testkit`).
//! - `consumer`: the checkpointed batch loop projections, reactors and sagas share.
//!
//! Not owned here: storage of events (the broker and the event store), delivery to
//! services (the SDK). Every durable write here goes to SQLite with `synchronous=FULL`,
//! or to Postgres with its commit durability (`fsync`, `synchronous_commit` on by default).

pub mod aggregate;
pub mod causation;
pub mod clock;
mod consumer;
mod db;
mod error;
pub mod pg;
pub mod projection;
pub mod reactor;
pub mod saga;
pub mod source;
pub mod store;

pub use aggregate::Aggregate;
pub use causation::follow;
pub use clock::{Clock, SystemClock};
pub use error::{FlowError, HandlerError};
pub use pg::{PgProjection, PgProjectionRunner};
pub use projection::{Lag, Projection, ProjectionRunner};
pub use reactor::{Reactor, ReactorRunner};
pub use saga::{
    CommandSink, CompensationDefinition, SagaDefinition, SagaInstance, SagaRunner, SagaStatus,
    StepDefinition, TopicSink,
};
pub use source::{Batch, EventSource, SourcedEvent, TopicSource};
pub use store::{
    ExecuteError, Loaded, Repository, StoreSource, StoreSubscriptionSource, StreamSink,
};
