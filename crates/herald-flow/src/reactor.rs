//! Reactors: handlers with side effects outside SQLite (appending to Herald, calling a
//! service), fed from an [`EventSource`] with a durable checkpoint. This is the runtime of a
//! choreography participant or of a service answering commands.
//!
//! Delivery is at least once: the checkpoint moves after the handler succeeded for a
//! batch, so a crash before it replays (part of) that batch. Handlers must therefore be
//! idempotent (e.g. decide against event-sourced state and append with an expected
//! version, as the example shop does).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::source::{EventSource, SourcedEvent};
use crate::{consumer, db, FlowError};

/// How long [`ReactorRunner::run`] waits before polling an idle source again.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);

/// An event handler with side effects.
pub trait Reactor: Send {
    /// Unique name; keys the checkpoint.
    fn name(&self) -> &str;

    /// Handles one event. A transient error ([`FlowError::is_transient`]) is retried by
    /// [`ReactorRunner::run`]; any other error stops the runner before this event.
    fn react(&mut self, event: &SourcedEvent)
        -> impl Future<Output = Result<(), FlowError>> + Send;
}

/// Feeds one reactor from one source, checkpointing in SQLite.
pub struct ReactorRunner<S, R> {
    source: S,
    reactor: R,
    conn: Connection,
    batch_max: usize,
    poll_interval: Duration,
}

impl<S: EventSource, R: Reactor> ReactorRunner<S, R> {
    /// Opens (creating) the checkpoint database at `path`.
    pub fn open(path: &Path, source: S, reactor: R) -> Result<Self, FlowError> {
        Ok(Self::with_connection(db::open(path)?, source, reactor))
    }

    pub fn open_in_memory(source: S, reactor: R) -> Result<Self, FlowError> {
        Ok(Self::with_connection(
            db::open_in_memory()?,
            source,
            reactor,
        ))
    }

    fn with_connection(conn: Connection, source: S, reactor: R) -> Self {
        Self {
            source,
            reactor,
            conn,
            batch_max: 128,
            poll_interval: POLL_INTERVAL_DEFAULT,
        }
    }

    consumer::pacing_builders!();

    pub fn reactor(&self) -> &R {
        &self.reactor
    }

    pub fn checkpoint(&self) -> Result<Option<u64>, FlowError> {
        db::checkpoint(&self.conn, self.reactor.name())
    }

    /// Handles one batch and then checkpoints it (one fsync per batch, not per event); a
    /// failing event checkpoints the events before it. Returns the events handled.
    pub async fn step(&mut self) -> Result<usize, FlowError> {
        let name = self.reactor.name().to_string();
        let Some(pending) = consumer::next_batch(
            db::checkpoint(&self.conn, &name)?,
            &self.source,
            self.batch_max,
        )
        .await?
        else {
            return Ok(0);
        };
        let (checkpoint, batch, scanned_to) =
            (pending.checkpoint, pending.batch, pending.scanned_to);
        let mut handled_to = checkpoint;
        for event in &batch.events {
            if let Err(error) = self.reactor.react(event).await {
                // Keep what succeeded; the failed event is the next one delivered.
                if handled_to != checkpoint {
                    if let Some(position) = handled_to {
                        self.save_checkpoint(&name, position)?;
                    }
                }
                return Err(error);
            }
            handled_to = Some(event.position);
        }
        self.save_checkpoint(&name, scanned_to)?;
        Ok(batch.events.len())
    }

    fn save_checkpoint(&mut self, name: &str, position: u64) -> Result<(), FlowError> {
        consumer::apply_batch(&mut self.conn, name, position, |_| Ok(()))
    }

    /// Handles batches until `shutdown` resolves; transient failures are retried with
    /// backoff, others returned.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), FlowError> {
        let name = format!("reactor:{}", self.reactor.name());
        let poll_interval = self.poll_interval;
        consumer::run_until(&name, poll_interval, shutdown, async || self.step().await).await
    }
}
