//! [`Queue`]: a subscription's durable work queue: pull with leases, ack, nack,
//! extend, redelivery, dead-lettering.
//!
//! Owns: the queue log (`__sub.<name>`, one partition, written by the dispatcher and
//! by redrives), the in-memory [`state::QueueState`] and its [`journal::Journal`].
//! Messages are the offsets of the queue log; each record's key is the source
//! position `<topic>/<partition>/<offset>` of the event it copies.
//!
//! Durability: every state change that must survive (delivery counts, acks,
//! dead-lettering, nack delays) is in the journal before the call returns; leases are
//! in memory. After a crash every message that was not acknowledged is visible again
//! (its delivery count kept); an acknowledged message is never delivered again once
//! its ack returned. Dead-lettering publishes to the dead-letter topic first and then
//! journals the message as done, so a crash in between may leave a duplicate in the
//! dead-letter topic, never a loss.
//!
//! Lock: `state` is a leaf lock (nothing else is locked while it is held, except the
//! journal's `current` during compaction); it is never held across an `.await`.

pub mod journal;
pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_broker::PartitionStore;
use herald_broker::{Broker, BrokerError, TopicConfig};
use herald_core::codec::decode_event;
use herald_core::{CloudEvent, ExtensionValue};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use crate::error::BusError;
use journal::Journal;
use state::{JournalEntry, Leased, QueueCounts, QueueState, Receipt, ReceiptOutcome};

/// Longest a pull may wait for messages.
pub const PULL_WAIT_MAX: Duration = Duration::from_secs(60);
/// Most messages one pull returns.
pub const PULL_MESSAGES_MAX: usize = 1000;
/// Messages moved to the dead-letter topic per publish.
const DEAD_LETTER_BATCH: usize = 256;

/// Extension attributes Herald adds to dead-lettered events (removed by redrive).
pub mod ext {
    pub const REASON: &str = "heralddlqreason";
    pub const DELIVERY_COUNT: &str = "heralddeliverycount";
    pub const SUBSCRIPTION: &str = "heraldsubscription";
    pub const SOURCE_TOPIC: &str = "heraldsourcetopic";
    pub const SOURCE_PARTITION: &str = "heraldsourcepartition";
    pub const SOURCE_OFFSET: &str = "heraldsourceoffset";
    pub const DEAD_AT: &str = "heralddeadat";
    pub const ALL: [&str; 7] = [
        REASON,
        DELIVERY_COUNT,
        SUBSCRIPTION,
        SOURCE_TOPIC,
        SOURCE_PARTITION,
        SOURCE_OFFSET,
        DEAD_AT,
    ];
}

/// Where a queued copy came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourcePosition {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

impl SourcePosition {
    /// The queue record key.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    pub fn parse(key: &[u8]) -> Option<SourcePosition> {
        let text = std::str::from_utf8(key).ok()?;
        let mut parts = text.rsplitn(3, '/');
        let offset = parts.next()?.parse().ok()?;
        let partition = parts.next()?.parse().ok()?;
        let topic = parts.next()?.to_string();
        Some(SourcePosition {
            topic,
            partition,
            offset,
        })
    }
}

/// One pulled message.
#[derive(Debug, Clone)]
pub struct Message {
    pub receipt: String,
    pub delivery_count: u32,
    pub queue_offset: u64,
    pub source: Option<SourcePosition>,
    pub event: CloudEvent,
}

impl Message {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "receipt": self.receipt,
            "delivery_count": self.delivery_count,
            "queue_offset": self.queue_offset,
            "source": self.source,
            "event": self.event.to_json_value(),
        })
    }
}

/// Settings of one queue (from its subscription).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub subscription: String,
    pub topic: String,
    pub dead_letter_topic: String,
    pub visibility_timeout_ms: u64,
    pub max_deliveries: u32,
    pub tracked_max: usize,
}

pub struct Queue {
    config: QueueConfig,
    broker: Broker,
    log: PartitionStore,
    state: Mutex<QueueState>,
    journal: Journal,
    /// Woken when messages may have become ready (nack, expiry, redrive).
    changed: Notify,
    /// Woken when there is maintenance to do (dead letters).
    maintenance: Notify,
    compacting: std::sync::atomic::AtomicBool,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Creates `name` (one partition, fsync always, no dedup window: a redriven or
/// re-dead-lettered event keeps its id and must be appended again) unless it exists.
pub(crate) async fn ensure_topic(broker: &Broker, name: &str) -> Result<(), BusError> {
    let config = TopicConfig {
        dedup_window_ms: 0,
        ..TopicConfig::default()
    };
    match broker.create_topic(name, config).await {
        Ok(_) | Err(BrokerError::TopicExists(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Queue {
    /// Opens the queue: creates its log topic if needed, recovers its state from
    /// `state_dir` (snapshot + journal replay).
    pub async fn open(
        broker: Broker,
        config: QueueConfig,
        state_dir: std::path::PathBuf,
    ) -> Result<Arc<Queue>, BusError> {
        ensure_topic(&broker, &config.topic).await?;
        let log = broker.topic(&config.topic)?.partition(0)?.clone();
        let (max_deliveries, tracked_max) = (config.max_deliveries, config.tracked_max);
        let (journal, state) = tokio::task::spawn_blocking(move || {
            let mut entries = Vec::new();
            let (journal, durable) = Journal::open(&state_dir, |e| entries.push(e))?;
            let mut state = QueueState::new(durable, max_deliveries, tracked_max);
            for entry in entries {
                state.apply(entry);
            }
            Ok::<_, BusError>((journal, state))
        })
        .await
        .map_err(|e| BusError::io(std::path::Path::new("."), std::io::Error::other(e)))??;
        tracing::info!(
            subscription = %config.subscription,
            ack_floor = state.floor(),
            end = log.next_offset(),
            "queue recovered"
        );
        Ok(Arc::new(Queue {
            config,
            broker,
            log,
            state: Mutex::new(state),
            journal,
            changed: Notify::new(),
            maintenance: Notify::new(),
            compacting: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    pub fn log(&self) -> &PartitionStore {
        &self.log
    }

    pub fn counts(&self) -> QueueCounts {
        self.state.lock().counts()
    }

    /// Messages not yet acknowledged or dead-lettered (tracked or not).
    pub fn backlog(&self) -> u64 {
        let end = self.log.next_offset();
        let state = self.state.lock();
        end.saturating_sub(state.floor())
    }

    /// Leases up to `max` messages for `visibility_ms` (default: the subscription's),
    /// waiting up to `wait` for one to be available.
    pub async fn pull(
        &self,
        max: usize,
        visibility_ms: Option<u64>,
        wait: Duration,
    ) -> Result<Vec<Message>, BusError> {
        let max = max.clamp(1, PULL_MESSAGES_MAX);
        let visibility = visibility_ms.unwrap_or(self.config.visibility_timeout_ms);
        let deadline = Instant::now() + wait.min(PULL_WAIT_MAX);
        loop {
            let mut watch = self.log.watch();
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (leased, wake_ms, dead) = {
                let mut state = self.state.lock();
                let now = now_ms();
                state.release_due(now);
                state.fill(self.log.next_offset(), now);
                let leased = state.lease(now, max, visibility, rand::random::<u64>);
                (leased, state.next_wakeup_ms(), state.has_dead_pending())
            };
            if dead {
                self.maintenance.notify_one();
            }
            if !leased.is_empty() {
                let entries: Vec<JournalEntry> = leased
                    .iter()
                    .map(|l| JournalEntry::Delivered {
                        offset: l.receipt.offset,
                        count: l.delivery_count,
                    })
                    .collect();
                self.journal.append(&entries).await?;
                return self.read_messages(&leased).await;
            }
            let now = Instant::now();
            if now >= deadline || self.broker.is_shutting_down() {
                return Ok(Vec::new());
            }
            let mut pause = deadline - now;
            if let Some(wake) = wake_ms {
                let until = u64::try_from(wake.saturating_sub(now_ms())).unwrap_or(0);
                pause = pause.min(Duration::from_millis(until.max(1)));
            }
            tokio::select! {
                changed = watch.changed() => {
                    if changed.is_err() {
                        return Err(BusError::ShuttingDown);
                    }
                }
                _ = notified => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Reads the events of leased messages (ascending offsets), run by run.
    async fn read_messages(&self, leased: &[Leased]) -> Result<Vec<Message>, BusError> {
        let mut out = Vec::with_capacity(leased.len());
        let mut i = 0;
        while let Some(first) = leased.get(i) {
            let start = first.receipt.offset;
            let mut run = 1;
            while leased
                .get(i + run)
                .is_some_and(|l| l.receipt.offset == start + run as u64)
            {
                run += 1;
            }
            let mut records = Vec::with_capacity(run);
            while records.len() < run {
                let from = start + records.len() as u64;
                let got = self
                    .log
                    .read(from, run - records.len(), 64 * 1024 * 1024)
                    .await?;
                if got.is_empty() {
                    break;
                }
                records.extend(got);
            }
            for (lease, record) in leased.iter().skip(i).zip(records) {
                let event = decode_event(&record.value).map_err(|e| {
                    BusError::Storage(herald_log::LogError::Corrupt {
                        path: self.log.location(),
                        position: record.offset,
                        reason: format!("queued event does not decode: {e}"),
                    })
                })?;
                out.push(Message {
                    receipt: lease.receipt.encode(),
                    delivery_count: lease.delivery_count,
                    queue_offset: record.offset,
                    source: record.key.as_deref().and_then(SourcePosition::parse),
                    event,
                });
            }
            i += run;
        }
        Ok(out)
    }

    /// Applies `op` to each receipt under the state lock, then journals what it
    /// returned. Unparseable receipts are `Invalid`.
    async fn per_receipt(
        &self,
        receipts: &[String],
        op: impl FnMut(&mut QueueState, Receipt, i64) -> (ReceiptOutcome, Option<JournalEntry>),
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError> {
        let (outcomes, entries) =
            self.state
                .lock()
                .apply_receipts(receipts, now_ms(), ReceiptOutcome::Invalid, op);
        self.journal.append(&entries).await?;
        Ok(outcomes)
    }

    pub async fn ack(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError> {
        self.per_receipt(receipts, |state, receipt, _| {
            let outcome = state.ack(receipt);
            let entry = (outcome == ReceiptOutcome::Acked).then_some(JournalEntry::Done {
                offset: receipt.offset,
            });
            (outcome, entry)
        })
        .await
    }

    pub async fn nack(
        &self,
        receipts: &[String],
        delay_ms: u64,
        reason: Option<&str>,
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError> {
        let outcomes = self
            .per_receipt(receipts, |state, receipt, now| {
                let outcome = state.nack(receipt, delay_ms, now, reason);
                let entry = (outcome == ReceiptOutcome::Delayed).then(|| JournalEntry::Delay {
                    offset: receipt.offset,
                    until_ms: now.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
                });
                (outcome, entry)
            })
            .await?;
        self.changed.notify_waiters();
        if outcomes
            .iter()
            .any(|(_, o)| *o == ReceiptOutcome::DeadLettered)
        {
            self.maintenance.notify_one();
        }
        Ok(outcomes)
    }

    pub async fn extend(
        &self,
        receipts: &[String],
        visibility_ms: u64,
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError> {
        self.per_receipt(receipts, |state, receipt, now| {
            (state.extend(receipt, visibility_ms, now), None)
        })
        .await
    }

    /// Counts another attempt of a message the caller keeps leased; the new delivery
    /// count, or `None` if the receipt lost the message.
    pub async fn redeliver_in_place(
        &self,
        receipt: &str,
        visibility_ms: u64,
    ) -> Result<Option<u32>, BusError> {
        let Some(receipt) = Receipt::parse(receipt) else {
            return Ok(None);
        };
        let count = self
            .state
            .lock()
            .redeliver_in_place(receipt, visibility_ms, now_ms());
        if let Some(count) = count {
            self.journal
                .append(&[JournalEntry::Delivered {
                    offset: receipt.offset,
                    count,
                }])
                .await?;
        }
        Ok(count)
    }

    /// Dead-letters a leased message now (a push deliverer exhausted its retries).
    pub async fn give_up(&self, receipt: &str, reason: &str) -> Result<ReceiptOutcome, BusError> {
        let outcome = match Receipt::parse(receipt) {
            None => ReceiptOutcome::Invalid,
            Some(r) => self.state.lock().give_up(r, reason),
        };
        if outcome == ReceiptOutcome::DeadLettered {
            self.move_dead_letters().await?;
        }
        Ok(outcome)
    }

    /// Appends events (with their keys) to the queue log, e.g. for a redrive.
    pub async fn append(&self, entries: Vec<(Option<Bytes>, CloudEvent)>) -> Result<(), BusError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.broker
            .publish_keyed(&self.config.topic, entries, Some(0))
            .await?;
        self.changed.notify_waiters();
        Ok(())
    }

    /// Moves every message waiting for it to the dead-letter topic, then journals it
    /// done. On failure the messages stay pending and the error is returned.
    pub async fn move_dead_letters(&self) -> Result<usize, BusError> {
        let mut moved = 0;
        loop {
            let batch = self.state.lock().take_dead(DEAD_LETTER_BATCH);
            if batch.is_empty() {
                return Ok(moved);
            }
            match self.dead_letter_batch(&batch).await {
                Ok(()) => {
                    let mut state = self.state.lock();
                    for (offset, _, _) in &batch {
                        state.mark_done(*offset);
                    }
                    moved += batch.len();
                }
                Err(e) => {
                    let mut state = self.state.lock();
                    for (offset, _, _) in &batch {
                        state.return_dead(*offset);
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn dead_letter_batch(&self, batch: &[(u64, u32, String)]) -> Result<(), BusError> {
        let dead_at = herald_broker::record::format_time_ms(now_ms());
        let mut entries = Vec::with_capacity(batch.len());
        for (offset, count, reason) in batch {
            let records = self.log.read(*offset, 1, usize::MAX).await?;
            let Some(record) = records.into_iter().next() else {
                continue;
            };
            let mut event = decode_event(&record.value).map_err(|e| {
                BusError::Storage(herald_log::LogError::Corrupt {
                    path: self.log.location(),
                    position: record.offset,
                    reason: format!("queued event does not decode: {e}"),
                })
            })?;
            let x = &mut event.extensions;
            let string = |s: &str| ExtensionValue::String(s.to_string());
            x.insert(ext::REASON.into(), string(reason));
            x.insert(
                ext::DELIVERY_COUNT.into(),
                ExtensionValue::Integer(i64::from(*count)),
            );
            x.insert(ext::SUBSCRIPTION.into(), string(&self.config.subscription));
            x.insert(ext::DEAD_AT.into(), string(&dead_at));
            if let Some(source) = record.key.as_deref().and_then(SourcePosition::parse) {
                x.insert(ext::SOURCE_TOPIC.into(), string(&source.topic));
                x.insert(
                    ext::SOURCE_PARTITION.into(),
                    ExtensionValue::Integer(i64::from(source.partition)),
                );
                x.insert(
                    ext::SOURCE_OFFSET.into(),
                    ExtensionValue::Integer(i64::try_from(source.offset).unwrap_or(i64::MAX)),
                );
            }
            entries.push((record.key, event));
        }
        if !entries.is_empty() {
            ensure_topic(&self.broker, &self.config.dead_letter_topic).await?;
            self.broker
                .publish_keyed(&self.config.dead_letter_topic, entries, None)
                .await?;
        }
        let done: Vec<JournalEntry> = batch
            .iter()
            .map(|(offset, _, _)| JournalEntry::Done { offset: *offset })
            .collect();
        self.journal.append(&done).await?;
        tracing::info!(
            subscription = %self.config.subscription,
            count = batch.len(),
            dead_letter_topic = %self.config.dead_letter_topic,
            "messages dead-lettered"
        );
        Ok(())
    }

    /// One round of background work: expired leases, dead letters, compaction.
    pub async fn maintain(self: &Arc<Self>) {
        let (ready, dead) = {
            let mut state = self.state.lock();
            let ready = state.release_due(now_ms());
            (ready, state.has_dead_pending())
        };
        if ready {
            self.changed.notify_waiters();
        }
        if dead {
            if let Err(e) = self.move_dead_letters().await {
                tracing::warn!(subscription = %self.config.subscription, error = %e, "dead-lettering failed; will retry");
            }
        }
        if self.journal.needs_compaction()
            && !self
                .compacting
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let this = Arc::clone(self);
            let result = tokio::task::spawn_blocking(move || {
                let (generation, old, durable) = {
                    let state = this.state.lock();
                    let durable = state.durable();
                    let (generation, old) = this.journal.rotate()?;
                    (generation, old, durable)
                };
                let acked_below = durable.floor;
                let result = this.journal.finish_compaction(generation, durable, old);
                this.compacting
                    .store(false, std::sync::atomic::Ordering::Release);
                if result.is_ok() {
                    // Everything below the durable ack floor is acknowledged for good:
                    // drop the queue log's whole segments below it so it does not grow forever.
                    if let Err(e) = this.log.delete_records_before(acked_below) {
                        tracing::warn!(subscription = %this.config.subscription, error = %e, "trimming the queue log failed");
                    }
                }
                result
            })
            .await;
            if let Ok(Err(e)) = result {
                tracing::warn!(subscription = %self.config.subscription, error = %e, "queue journal compaction failed");
            }
        }
    }

    /// Runs [`Queue::maintain`] until `stop` flips.
    pub async fn run_maintenance(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let wake = self.state.lock().next_wakeup_ms();
            let mut pause = Duration::from_millis(500);
            if let Some(wake) = wake {
                let until = u64::try_from(wake.saturating_sub(now_ms())).unwrap_or(0);
                pause = pause.min(Duration::from_millis(until.max(5)));
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = self.maintenance.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            self.maintain().await;
        }
    }

    /// Flushes and closes the journal. Blocking.
    pub fn close(&self) {
        self.journal.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_keys_round_trip() {
        let s = SourcePosition {
            topic: "orders.eu".into(),
            partition: 3,
            offset: 99,
        };
        assert_eq!(SourcePosition::parse(s.key().as_bytes()), Some(s));
        assert_eq!(SourcePosition::parse(b"nonsense"), None);
    }
}
