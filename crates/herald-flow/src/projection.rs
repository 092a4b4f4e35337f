//! CQRS projections: a [`Projection`] folds events into tables of an SQLite database; the
//! [`ProjectionRunner`] feeds it batches from an [`EventSource`]. (The Postgres twin,
//! same API, is [`crate::pg`].)
//!
//! Invariant: each batch is applied in one SQLite transaction that also moves the
//! projection's checkpoint to the last position of the batch, so after a crash (kill -9
//! included) the read model and the checkpoint agree and no event is applied twice or
//! skipped. A handler error rolls the whole batch back and stops the runner at that event.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, Transaction};

use crate::source::{EventSource, SourcedEvent};
use crate::{consumer, db, FlowError, HandlerError};

/// Batches are at most this many events unless [`ProjectionRunner::with_batch_max`] says so.
pub const BATCH_MAX_DEFAULT: usize = 256;
/// How long [`ProjectionRunner::run`] waits before polling an idle source again.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(50);

/// A read model built from events.
pub trait Projection: Send {
    /// Unique name; it keys the checkpoint, so two projections can share one database.
    fn name(&self) -> &str;

    /// Creates the read-model tables if they are missing (runs at every open).
    fn setup(&self, tx: &Transaction<'_>) -> Result<(), HandlerError>;

    /// Empties the read model (for [`ProjectionRunner::rebuild`]).
    fn reset(&self, tx: &Transaction<'_>) -> Result<(), HandlerError>;

    /// Applies one event. An error stops the runner; nothing of the batch is kept.
    fn apply(&mut self, tx: &Transaction<'_>, event: &SourcedEvent) -> Result<(), HandlerError>;
}

/// How far a projection is behind its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// The source's newest position (`None`: empty source).
    pub head: Option<u64>,
    /// The last position applied (`None`: nothing yet).
    pub checkpoint: Option<u64>,
    /// `head - checkpoint` in positions (events, for `$all` and topic sources).
    pub positions_behind: u64,
}

impl Lag {
    pub(crate) fn new(head: Option<u64>, checkpoint: Option<u64>) -> Self {
        let positions_behind = match (head, checkpoint) {
            (None, _) => 0,
            (Some(h), None) => h + 1,
            (Some(h), Some(c)) => h.saturating_sub(c),
        };
        Lag {
            head,
            checkpoint,
            positions_behind,
        }
    }
}

/// Runs one projection against one source and one SQLite database.
pub struct ProjectionRunner<S, P> {
    source: S,
    projection: P,
    conn: Connection,
    batch_max: usize,
    poll_interval: Duration,
}

impl<S: EventSource, P: Projection> ProjectionRunner<S, P> {
    /// Opens (creating) the database at `path` and the projection's tables.
    pub fn open(path: &Path, source: S, projection: P) -> Result<Self, FlowError> {
        Self::with_connection(db::open(path)?, source, projection)
    }

    /// A runner on a private in-memory database (tests, throwaway views).
    pub fn open_in_memory(source: S, projection: P) -> Result<Self, FlowError> {
        Self::with_connection(db::open_in_memory()?, source, projection)
    }

    fn with_connection(mut conn: Connection, source: S, projection: P) -> Result<Self, FlowError> {
        let tx = conn.transaction()?;
        projection
            .setup(&tx)
            .map_err(|e| handler_error(projection.name(), None, e))?;
        tx.commit()?;
        Ok(Self {
            source,
            projection,
            conn,
            batch_max: BATCH_MAX_DEFAULT,
            poll_interval: POLL_INTERVAL_DEFAULT,
        })
    }

    consumer::pacing_builders!();

    /// The database, to query the read model.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn projection(&self) -> &P {
        &self.projection
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// The last position applied, `None` before the first event.
    pub fn checkpoint(&self) -> Result<Option<u64>, FlowError> {
        db::checkpoint(&self.conn, self.projection.name())
    }

    /// Reads and applies one batch; returns how many events were applied.
    pub async fn step(&mut self) -> Result<usize, FlowError> {
        Ok(self.step_batch().await?.unwrap_or(0))
    }

    /// One batch; `None` when nothing is newer than the checkpoint.
    async fn step_batch(&mut self) -> Result<Option<usize>, FlowError> {
        let name = self.projection.name().to_string();
        let checkpoint = db::checkpoint(&self.conn, &name)?;
        let Some(pending) = consumer::next_batch(checkpoint, &self.source, self.batch_max).await?
        else {
            return Ok(None);
        };
        let projection = &mut self.projection;
        consumer::apply_batch(&mut self.conn, &name, pending.scanned_to, |tx| {
            for event in &pending.batch.events {
                projection
                    .apply(tx, event)
                    .map_err(|e| handler_error(&name, Some(event), e))?;
            }
            Ok(Some(pending.batch.events.len()))
        })
    }

    /// Applies batches until the source has nothing newer; returns the events applied.
    pub async fn catch_up(&mut self) -> Result<u64, FlowError> {
        consumer::drain(async || self.step_batch().await).await
    }

    /// Empties the read model and its checkpoint in one transaction, then catches up
    /// from the beginning of the source. Returns the events applied.
    pub async fn rebuild(&mut self) -> Result<u64, FlowError> {
        let name = self.projection.name().to_string();
        let tx = self.conn.transaction()?;
        self.projection
            .reset(&tx)
            .map_err(|e| handler_error(&name, None, e))?;
        self.projection
            .setup(&tx)
            .map_err(|e| handler_error(&name, None, e))?;
        db::clear_checkpoint(&tx, &name)?;
        tx.commit()?;
        self.catch_up().await
    }

    /// Head of the source minus the checkpoint.
    pub async fn lag(&self) -> Result<Lag, FlowError> {
        let head = self.source.head().await?;
        Ok(Lag::new(head, self.checkpoint()?))
    }

    /// Applies batches until `shutdown` resolves, polling an idle source every poll
    /// interval. Transient failures (server unreachable, busy) are retried with backoff;
    /// any other error (a handler rejecting an event) is returned.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), FlowError> {
        let name = format!("projection:{}", self.projection.name());
        let poll_interval = self.poll_interval;
        consumer::run_until(&name, poll_interval, shutdown, async || self.step().await).await
    }
}

/// A handler's error as the runner reports it: which projection, at which event.
pub(crate) fn handler_error(
    projection: &str,
    event: Option<&SourcedEvent>,
    error: HandlerError,
) -> FlowError {
    FlowError::Handler {
        projection: projection.to_string(),
        position: event.map_or(0, |e| e.position),
        event_id: event.map_or_else(String::new, |e| e.event.id.clone()),
        message: error.0,
    }
}
