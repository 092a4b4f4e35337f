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
use crate::{db, FlowError};

/// How long [`ReactorRunner::run`] waits before polling an idle source again.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

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

    pub fn with_batch_max(mut self, batch_max: usize) -> Self {
        self.batch_max = batch_max.max(1);
        self
    }

    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    pub fn reactor(&self) -> &R {
        &self.reactor
    }

    pub fn checkpoint(&self) -> Result<Option<u64>, FlowError> {
        db::checkpoint(&self.conn, self.reactor.name())
    }

    /// Handles one batch and then checkpoints it (one fsync per batch, not per event); a
    /// failing event checkpoints the events before it. Returns the events handled.
    pub async fn step(&mut self) -> Result<usize, FlowError> {
        let checkpoint = self.checkpoint()?;
        let batch = self.source.read_after(checkpoint, self.batch_max).await?;
        let Some(scanned_to) = batch.scanned_to else {
            return Ok(0);
        };
        if checkpoint.is_some_and(|c| scanned_to <= c) {
            return Ok(0);
        }
        let name = self.reactor.name().to_string();
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
        let tx = self.conn.transaction()?;
        db::set_checkpoint(&tx, name, position)?;
        tx.commit()?;
        Ok(())
    }

    /// Handles batches until `shutdown` resolves; transient failures are retried with
    /// backoff, others returned.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), FlowError> {
        tokio::pin!(shutdown);
        let mut backoff = self.poll_interval;
        loop {
            let pause = match self.step().await {
                Ok(count) => {
                    backoff = self.poll_interval;
                    if count > 0 {
                        Duration::ZERO
                    } else {
                        self.poll_interval
                    }
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(reactor = self.reactor.name(), error = %e, "retrying");
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), BACKOFF_MAX);
                    backoff
                }
                Err(e) => return Err(e),
            };
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}
