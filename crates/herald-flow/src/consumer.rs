//! The checkpointed-consumer loop shared by projections, reactors and sagas.
//!
//! Owns: reading the batch after a checkpoint ([`next_batch`], any store), applying a
//! batch in the SQLite transaction that moves the checkpoint ([`apply_batch`]; Postgres
//! has its own in `pg`), catching up ([`drain`]) and the run loop ([`run_until`]: poll an
//! idle source, back off on transient failures, stop at shutdown). Invariant: a
//! checkpoint only moves forward, and only in the transaction that applied what it covers
//! (or, for reactors, after the side effects succeeded).

use std::future::Future;
use std::time::Duration;

use rusqlite::{Connection, Transaction};

use crate::source::{Batch, EventSource};
use crate::{db, FlowError};

/// The longest pause between retries of a transient failure.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The pacing builders of every runner (which has `batch_max` and `poll_interval`
/// fields); invoke inside the runner's `impl`.
macro_rules! pacing_builders {
    () => {
        /// Sets the largest batch (one transaction); at least 1.
        pub fn with_batch_max(mut self, batch_max: usize) -> Self {
            self.batch_max = batch_max.max(1);
            self
        }

        /// Sets how long `run` waits before polling an idle source again.
        pub fn with_poll_interval(mut self, poll_interval: std::time::Duration) -> Self {
            self.poll_interval = poll_interval;
            self
        }
    };
}
pub(crate) use pacing_builders;

/// A batch newer than the checkpoint.
pub(crate) struct Pending {
    /// The checkpoint the batch was read after.
    pub checkpoint: Option<u64>,
    pub batch: Batch,
    /// The last position the batch covers (events or not): the next checkpoint.
    pub scanned_to: u64,
}

/// Reads up to `max` events after `checkpoint`; `None` when nothing is newer.
pub(crate) async fn next_batch<S: EventSource>(
    checkpoint: Option<u64>,
    source: &S,
    max: usize,
) -> Result<Option<Pending>, FlowError> {
    let batch = source.read_after(checkpoint, max).await?;
    let Some(scanned_to) = batch.scanned_to else {
        return Ok(None);
    };
    if checkpoint.is_some_and(|c| scanned_to <= c) {
        return Ok(None);
    }
    Ok(Some(Pending {
        checkpoint,
        batch,
        scanned_to,
    }))
}

/// Runs `apply` and moves checkpoint `name` to `position` in one transaction.
pub(crate) fn apply_batch<T>(
    conn: &mut Connection,
    name: &str,
    position: u64,
    apply: impl FnOnce(&Transaction<'_>) -> Result<T, FlowError>,
) -> Result<T, FlowError> {
    let tx = conn.transaction()?;
    let out = apply(&tx)?;
    db::set_checkpoint(&tx, name, position)?;
    tx.commit()?;
    Ok(out)
}

/// Calls `step` until it reports that nothing is newer than the checkpoint (`None`; a
/// step that only scanned past filtered-out events is `Some(0)`); returns the events
/// applied.
pub(crate) async fn drain(
    mut step: impl AsyncFnMut() -> Result<Option<usize>, FlowError>,
) -> Result<u64, FlowError> {
    let mut applied = 0u64;
    while let Some(count) = step().await? {
        applied += count as u64;
    }
    Ok(applied)
}

/// Calls `tick` until `shutdown` resolves: again at once after work, after
/// `poll_interval` when idle, with doubling backoff after a transient failure. Any
/// other error is returned.
pub(crate) async fn run_until(
    name: &str,
    poll_interval: Duration,
    shutdown: impl Future<Output = ()>,
    mut tick: impl AsyncFnMut() -> Result<usize, FlowError>,
) -> Result<(), FlowError> {
    tokio::pin!(shutdown);
    let mut backoff = poll_interval;
    loop {
        let pause = match tick().await {
            Ok(work) => {
                backoff = poll_interval;
                if work > 0 {
                    Duration::ZERO
                } else {
                    poll_interval
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(consumer = name, error = %e, "retrying");
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
