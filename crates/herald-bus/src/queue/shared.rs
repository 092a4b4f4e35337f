//! [`SharedLeases`]: a queue's leases when its log lives in JetStream: a durable
//! consumer ([`WorkQueue`]) holds them for every gateway, fenced by the shared lease table,
//! so a message pulled through one gateway can be acked, nacked or extended through any
//! other, and a dead gateway's leases simply lapse after the visibility timeout.
//!
//! Invariants: the consumer's ack wait is the subscription's visibility timeout; a
//! longer lease (a pull or extend asking for more) is kept alive by this gateway with
//! progress signals until its end or an ack/nack through this gateway; a message is
//! dead-lettered (its lease taken first, then published to the dead-letter topic, then
//! terminated) when a nack finds its deliveries spent, or when JetStream hands it out
//! once more than allowed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald_broker::storage::{LeaseOutcome, LeasedRecord, WorkQueue, WorkQueueCounts};
use parking_lot::Mutex;

use crate::error::BusError;
use crate::queue::state::{QueueCounts, ReceiptOutcome};

/// How often a gateway deletes a queue's finished records (every gateway does; deleting
/// below a floor is idempotent).
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// Finished records younger than this stay (the console's event chains show queued
/// copies).
const TRIM_MIN_AGE: Duration = Duration::from_secs(30);

/// One lease this gateway keeps alive past the ack wait.
#[derive(Debug, Clone, Copy)]
struct Kept {
    until_ms: i64,
    last_progress_ms: i64,
    /// Attempts counted in place (ordered webhooks) on top of JetStream's count.
    extra_attempts: u32,
}

/// A lease on a message's last allowed delivery, handed out through this gateway: when it
/// lapses, this gateway dead-letters the message (as the embedded queue does at expiry).
#[derive(Debug, Clone, Copy)]
pub struct LastLease {
    pub offset: u64,
    pub delivery_count: u32,
    pub expires_ms: i64,
}

pub struct SharedLeases {
    pub(super) queue: WorkQueue,
    ack_wait_ms: u64,
    counts: Mutex<WorkQueueCounts>,
    kept: Mutex<HashMap<String, Kept>>,
    last: Mutex<HashMap<String, LastLease>>,
    /// Whether maintenance deletes finished records ([`SharedLeases::trimming`]).
    trims: bool,
    last_trim: Mutex<Option<Instant>>,
}

/// The receipt outcome of a lease that was not (any more) the receipt's.
fn not_held(outcome: LeaseOutcome, held: ReceiptOutcome) -> ReceiptOutcome {
    match outcome {
        LeaseOutcome::Done => held,
        LeaseOutcome::LeaseLost => ReceiptOutcome::LeaseLost,
        LeaseOutcome::AlreadyDone => ReceiptOutcome::AlreadyDone,
    }
}

impl SharedLeases {
    pub fn new(queue: WorkQueue, ack_wait_ms: u64) -> Self {
        Self {
            queue,
            ack_wait_ms,
            counts: Mutex::new(WorkQueueCounts::default()),
            kept: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
            trims: false,
            last_trim: Mutex::new(None),
        }
    }

    /// Maintenance also deletes the queue's finished records (for an owner that never
    /// reads a record outside a lease).
    pub fn trimming(mut self) -> Self {
        self.trims = true;
        self
    }

    /// Dead-letters `receipt`'s message if this lease lapses (its last allowed delivery).
    pub fn watch_last(&self, receipt: &str, lease: LastLease) {
        self.last.lock().insert(receipt.to_string(), lease);
    }

    /// The last-delivery leases that lapsed by `now_ms` (no longer watched).
    pub fn lapsed_last(&self, now_ms: i64) -> Vec<(String, LastLease)> {
        let mut last = self.last.lock();
        let due: Vec<String> = last
            .iter()
            .filter(|(_, l)| l.expires_ms <= now_ms)
            .map(|(r, _)| r.clone())
            .collect();
        due.into_iter()
            .filter_map(|r| last.remove(&r).map(|l| (r, l)))
            .collect()
    }

    /// Up to `max` ready messages, leased now (never waits).
    pub async fn fetch(&self, max: usize) -> Result<Vec<LeasedRecord>, BusError> {
        Ok(self.queue.fetch(max).await?)
    }

    /// Keeps `receipt` leased until `now + visibility_ms` if that is past the ack wait.
    /// (A lease just granted or renewed lasts the ack wait at least.)
    pub fn keep(&self, receipt: &str, visibility_ms: u64, now_ms: i64) {
        let lasts_ms = visibility_ms.max(self.ack_wait_ms);
        let until_ms = now_ms.saturating_add(i64::try_from(lasts_ms).unwrap_or(i64::MAX));
        if let Some(last) = self.last.lock().get_mut(receipt) {
            last.expires_ms = until_ms;
        }
        if visibility_ms <= self.ack_wait_ms {
            return;
        }
        let mut kept = self.kept.lock();
        let entry = kept.entry(receipt.to_string()).or_insert(Kept {
            until_ms,
            last_progress_ms: now_ms,
            extra_attempts: 0,
        });
        entry.until_ms = until_ms;
    }

    pub fn forget(&self, receipt: &str) {
        self.kept.lock().remove(receipt);
        self.last.lock().remove(receipt);
    }

    /// The offset and delivery count (counting in-place attempts) of a receipt of this
    /// queue; `None` if it is not one.
    pub fn parse(&self, receipt: &str) -> Option<(u64, u32)> {
        let info = self.queue.parse_receipt(receipt)?;
        let extra = self
            .kept
            .lock()
            .get(receipt)
            .map_or(0, |k| k.extra_attempts);
        Some((info.offset, info.delivery_count.saturating_add(extra)))
    }

    pub async fn ack(&self, receipt: &str) -> Result<ReceiptOutcome, BusError> {
        if self.queue.parse_receipt(receipt).is_none() {
            return Ok(ReceiptOutcome::Invalid);
        }
        let outcome = self.queue.ack(receipt).await?;
        self.forget(receipt);
        Ok(not_held(outcome, ReceiptOutcome::Acked))
    }

    /// Hands a message back (the receipt was parsed by the caller).
    pub async fn release(&self, receipt: &str, delay_ms: u64) -> Result<ReceiptOutcome, BusError> {
        let outcome = self
            .queue
            .nak(receipt, Some(Duration::from_millis(delay_ms)))
            .await?;
        self.forget(receipt);
        let released = if delay_ms > 0 {
            ReceiptOutcome::Delayed
        } else {
            ReceiptOutcome::Released
        };
        Ok(not_held(outcome, released))
    }

    pub async fn extend(
        &self,
        receipt: &str,
        visibility_ms: u64,
        now_ms: i64,
    ) -> Result<ReceiptOutcome, BusError> {
        if self.queue.parse_receipt(receipt).is_none() {
            return Ok(ReceiptOutcome::Invalid);
        }
        let outcome = self.queue.progress(receipt).await?;
        if outcome == LeaseOutcome::Done {
            // The new end replaces the old one (a watched last delivery keeps its watch).
            self.kept.lock().remove(receipt);
            self.keep(receipt, visibility_ms, now_ms);
        } else {
            self.forget(receipt);
        }
        Ok(not_held(outcome, ReceiptOutcome::Extended))
    }

    /// Counts one more attempt of a message kept leased here; the new count, or `None`
    /// if the receipt no longer holds it.
    pub async fn redeliver_in_place(
        &self,
        receipt: &str,
        visibility_ms: u64,
        now_ms: i64,
    ) -> Result<Option<u32>, BusError> {
        let Some((_, count)) = self.parse(receipt) else {
            return Ok(None);
        };
        if self.queue.progress(receipt).await? != LeaseOutcome::Done {
            self.forget(receipt);
            return Ok(None);
        }
        self.keep(receipt, visibility_ms.max(self.ack_wait_ms + 1), now_ms);
        if let Some(kept) = self.kept.lock().get_mut(receipt) {
            kept.extra_attempts += 1;
        }
        Ok(Some(count.saturating_add(1)))
    }

    /// Takes the message `receipt` holds for dead-lettering (see [`WorkQueue::take`]);
    /// `lapsed`: its lease may have run out, as long as nobody else was given it.
    pub async fn take(&self, receipt: &str, lapsed: bool) -> Result<LeaseOutcome, BusError> {
        let outcome = if lapsed {
            self.queue.take_lapsed(receipt).await?
        } else {
            self.queue.take(receipt).await?
        };
        self.forget(receipt);
        Ok(outcome)
    }

    /// Never delivers a taken message again (after it was dead-lettered).
    pub async fn terminate_taken(&self, receipt: &str) -> Result<(), BusError> {
        Ok(self.queue.term_taken(receipt).await?)
    }

    /// Renews the leases kept past the ack wait, refreshes the counts and, if
    /// [`SharedLeases::trimming`], every [`TRIM_EVERY`] deletes the records every lease
    /// is done with.
    pub async fn maintain(&self, now_ms: i64) {
        let due: Vec<String> = {
            let mut kept = self.kept.lock();
            kept.retain(|_, k| k.until_ms > now_ms);
            let half = i64::try_from(self.ack_wait_ms / 2).unwrap_or(i64::MAX);
            kept.iter_mut()
                .filter(|(_, k)| now_ms - k.last_progress_ms >= half)
                .map(|(receipt, k)| {
                    k.last_progress_ms = now_ms;
                    receipt.clone()
                })
                .collect()
        };
        for receipt in due {
            match self.queue.progress(&receipt).await {
                Ok(LeaseOutcome::Done) => {}
                Ok(_) => self.forget(&receipt),
                Err(e) => tracing::warn!(error = %e, "renewing a lease failed; it may lapse"),
            }
        }
        let counts = match self.queue.counts().await {
            Ok(counts) => {
                *self.counts.lock() = counts;
                counts
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading work-queue counts failed");
                return;
            }
        };
        let due = {
            let mut last = self.last_trim.lock();
            let due = self.trims
                && counts.ack_floor > self.queue.partition().start_offset()
                && last.is_none_or(|at| at.elapsed() >= TRIM_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            match self.queue.trim(TRIM_MIN_AGE).await {
                // More to delete: go on at the next round.
                Ok((_, true)) => *self.last_trim.lock() = None,
                Ok((_, false)) => {}
                Err(e) => tracing::warn!(error = %e, "deleting a queue's finished records failed"),
            }
        }
    }

    /// The longest pause before this gateway has renewals or lapsed last leases to see to.
    pub fn next_wakeup(&self, now_ms: i64) -> Option<Duration> {
        let renew = (!self.kept.lock().is_empty())
            .then(|| Duration::from_millis((self.ack_wait_ms / 4).max(5)));
        let lapse = self
            .last
            .lock()
            .values()
            .map(|l| l.expires_ms)
            .min()
            .map(|at| {
                Duration::from_millis(u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0).max(5))
            });
        match (renew, lapse) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Counts for describe/metrics, as of the last maintenance round.
    pub fn counts(&self) -> QueueCounts {
        let c = *self.counts.lock();
        QueueCounts {
            ack_floor: c.ack_floor,
            scanned: c.delivered,
            ready: usize::try_from(c.pending).unwrap_or(usize::MAX),
            delayed: 0,
            leased: usize::try_from(c.leased).unwrap_or(usize::MAX),
            dead_pending: 0,
        }
    }

    /// Messages not acknowledged: the log's records past the last delivered one (as of
    /// the last maintenance round) plus the leased ones (including those waiting to be
    /// handed out again).
    pub fn backlog(&self, end_offset: u64) -> u64 {
        let c = *self.counts.lock();
        end_offset.saturating_sub(c.delivered) + c.leased
    }
}
