//! [`Queue`]: a subscription's durable work queue: pull with leases, ack, nack,
//! extend, redelivery, dead-lettering.
//!
//! Owns: the queue log (`__sub.<name>`, one partition, written by the dispatcher and
//! by redrives), the in-memory [`state::QueueState`] and its [`journal::Journal`].
//! Messages are the offsets of the queue log; each record's key is the source
//! position `<topic>/<partition>/<offset>` of the event it copies.
//!
//! On JetStream storage the leases are JetStream's instead ([`shared::SharedLeases`]: a
//! durable consumer every gateway shares); the journal and `QueueState` are not used.
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
pub mod shared;
pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_broker::storage::{LeaseOutcome, WorkQueueConfig};
use herald_broker::PartitionStore;
use herald_broker::{Broker, BrokerError, TopicConfig};
use herald_core::codec::decode_event;
use herald_core::{CloudEvent, ExtensionValue};
use herald_log::StoredRecord;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use crate::error::BusError;
use journal::Journal;
use shared::{LastLease, SharedLeases};
use state::{JournalEntry, Leased, QueueCounts, QueueState, Receipt, ReceiptOutcome};

/// Longest a pull may wait for messages.
pub const PULL_WAIT_MAX: Duration = Duration::from_secs(60);
/// Most messages one pull returns.
pub const PULL_MESSAGES_MAX: usize = 1000;
/// Messages moved to the dead-letter topic per publish.
const DEAD_LETTER_BATCH: usize = 256;
/// The durable JetStream consumer of a queue on JetStream storage.
const SHARED_CONSUMER: &str = "herald-queue";
/// How often a waiting pull on JetStream storage looks for redeliveries that came due.
const SHARED_POLL: Duration = Duration::from_millis(200);
/// Why a message is dead-lettered when its deliveries run out without a nack.
const EXHAUSTED: &str = "visibility timeout expired without an ack";

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
    /// One message leased at a time (ordered webhooks; JetStream storage only: the
    /// embedded deliverer orders by key itself).
    pub one_at_a_time: bool,
}

/// Where a queue's leases live. One per queue, built once and never moved: the size
/// difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Leases {
    /// In this process: state machine plus journal.
    Local {
        state: Mutex<QueueState>,
        journal: Journal,
        compacting: std::sync::atomic::AtomicBool,
    },
    /// In a JetStream consumer every gateway shares.
    Shared(SharedLeases),
}

pub struct Queue {
    config: QueueConfig,
    broker: Broker,
    log: PartitionStore,
    leases: Leases,
    /// Woken when messages may have become ready (nack, expiry, redrive).
    changed: Notify,
    /// Woken when there is maintenance to do (dead letters).
    maintenance: Notify,
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

/// Waits until the queue log's end moves, `notified` fires or `pause` passes.
async fn wait_change(
    watch: &mut tokio::sync::watch::Receiver<u64>,
    notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    pause: Duration,
) -> Result<(), BusError> {
    tokio::select! {
        changed = watch.changed() => {
            if changed.is_err() {
                return Err(BusError::ShuttingDown);
            }
        }
        _ = notified => {}
        _ = tokio::time::sleep(pause) => {}
    }
    Ok(())
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
        let log = broker
            .wait_for_topic(&config.topic, Duration::from_secs(10))
            .await?
            .partition(0)?
            .clone();
        let leases = match &log {
            PartitionStore::JetStream(partition) => {
                let max_ack_pending = if config.one_at_a_time {
                    1
                } else {
                    i64::try_from(config.tracked_max).unwrap_or(i64::MAX)
                };
                let queue = partition
                    .work_queue(WorkQueueConfig {
                        consumer: SHARED_CONSUMER.to_string(),
                        ack_wait: Duration::from_millis(config.visibility_timeout_ms.max(1)),
                        max_ack_pending,
                        leases: broker.lease_table().ok_or_else(|| {
                            BusError::Broker(BrokerError::Unavailable(
                                "a JetStream partition without the JetStream lease table".into(),
                            ))
                        })?,
                    })
                    .await?;
                let shared = SharedLeases::new(queue, config.visibility_timeout_ms).trimming();
                shared.maintain(now_ms()).await;
                tracing::info!(subscription = %config.subscription, "queue opened on JetStream");
                Leases::Shared(shared)
            }
            PartitionStore::Local(_) => {
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
                Leases::Local {
                    state: Mutex::new(state),
                    journal,
                    compacting: std::sync::atomic::AtomicBool::new(false),
                }
            }
        };
        Ok(Arc::new(Queue {
            config,
            broker,
            log,
            leases,
            changed: Notify::new(),
            maintenance: Notify::new(),
        }))
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    pub fn log(&self) -> &PartitionStore {
        &self.log
    }

    pub fn counts(&self) -> QueueCounts {
        match &self.leases {
            Leases::Local { state, .. } => state.lock().counts(),
            Leases::Shared(shared) => shared.counts(),
        }
    }

    /// Messages not yet acknowledged or dead-lettered (tracked or not).
    pub fn backlog(&self) -> u64 {
        match &self.leases {
            Leases::Local { state, .. } => {
                let end = self.log.next_offset();
                end.saturating_sub(state.lock().floor())
            }
            Leases::Shared(shared) => shared.backlog(self.log.next_offset()),
        }
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
        let (state, journal) = match &self.leases {
            Leases::Local { state, journal, .. } => (state, journal),
            Leases::Shared(shared) => {
                return self.pull_shared(shared, max, visibility, deadline).await;
            }
        };
        loop {
            let mut watch = self.log.watch();
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (leased, wake_ms, dead) = {
                let mut state = state.lock();
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
                journal.append(&entries).await?;
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
            wait_change(&mut watch, notified, pause).await?;
        }
    }

    /// [`Queue::pull`] on JetStream: leases from the shared consumer, waiting on this
    /// gateway's view of the log end, wake-ups and a short poll (for redeliveries).
    async fn pull_shared(
        &self,
        shared: &SharedLeases,
        max: usize,
        visibility_ms: u64,
        deadline: Instant,
    ) -> Result<Vec<Message>, BusError> {
        loop {
            let mut watch = self.log.watch();
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let fetched = shared.fetch(max).await?;
            let got_any = !fetched.is_empty();
            let now = now_ms();
            let mut out = Vec::with_capacity(fetched.len());
            for leased in fetched {
                if leased.delivery_count > self.config.max_deliveries {
                    // Handed out once more than allowed (its lease lapsed last time).
                    if shared.take(&leased.receipt, false).await? == LeaseOutcome::Done {
                        let count = leased.delivery_count - 1;
                        let dead = vec![(leased.record, count, EXHAUSTED.to_string())];
                        self.dead_letter_events(dead).await?;
                        shared.terminate_taken(&leased.receipt).await?;
                    }
                    continue;
                }
                if leased.delivery_count >= self.config.max_deliveries {
                    let lease = LastLease {
                        offset: leased.record.offset,
                        delivery_count: leased.delivery_count,
                        expires_ms: now
                            .saturating_add(i64::try_from(visibility_ms).unwrap_or(i64::MAX)),
                    };
                    shared.watch_last(&leased.receipt, lease);
                }
                shared.keep(&leased.receipt, visibility_ms, now);
                let event = self.decode(&leased.record)?;
                out.push(Message {
                    receipt: leased.receipt,
                    delivery_count: leased.delivery_count,
                    queue_offset: leased.record.offset,
                    source: leased.record.key.as_deref().and_then(SourcePosition::parse),
                    event,
                });
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if got_any {
                continue;
            }
            let now = Instant::now();
            if now >= deadline || self.broker.is_shutting_down() {
                return Ok(Vec::new());
            }
            let pause = (deadline - now).min(SHARED_POLL);
            wait_change(&mut watch, notified, pause).await?;
        }
    }

    fn decode(&self, record: &StoredRecord) -> Result<CloudEvent, BusError> {
        decode_event(&record.value).map_err(|e| {
            BusError::Storage(herald_log::LogError::Corrupt {
                path: self.log.location(),
                position: record.offset,
                reason: format!("queued event does not decode: {e}"),
            })
        })
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
                let event = self.decode(&record)?;
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
    /// returned. Unparseable receipts are `Invalid`. Local leases only.
    async fn per_receipt(
        &self,
        state: &Mutex<QueueState>,
        journal: &Journal,
        receipts: &[String],
        op: impl FnMut(&mut QueueState, Receipt, i64) -> (ReceiptOutcome, Option<JournalEntry>),
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError> {
        let (outcomes, entries) =
            state
                .lock()
                .apply_receipts(receipts, now_ms(), ReceiptOutcome::Invalid, op);
        journal.append(&entries).await?;
        Ok(outcomes)
    }

    /// Runs `op` for each receipt concurrently (JetStream: one request each); the first
    /// error fails the call, as a journal write would locally.
    async fn per_receipt_shared<'a, F, Fut>(
        &self,
        receipts: &'a [String],
        op: F,
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError>
    where
        F: Fn(&'a str) -> Fut,
        Fut: std::future::Future<Output = Result<ReceiptOutcome, BusError>>,
    {
        let outcomes = futures::future::join_all(receipts.iter().map(|r| op(r.as_str()))).await;
        receipts
            .iter()
            .zip(outcomes)
            .map(|(receipt, outcome)| Ok((receipt.clone(), outcome?)))
            .collect()
    }

    pub async fn ack(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError> {
        let (state, journal) = match &self.leases {
            Leases::Local { state, journal, .. } => (state, journal),
            Leases::Shared(shared) => {
                let outcomes = self.per_receipt_shared(receipts, |r| shared.ack(r)).await;
                // A pull waiting on the consumer's lease limit can go on.
                self.changed.notify_waiters();
                return outcomes;
            }
        };
        self.per_receipt(state, journal, receipts, |state, receipt, _| {
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
        let outcomes = match &self.leases {
            Leases::Local { state, journal, .. } => {
                self.per_receipt(state, journal, receipts, |state, receipt, now| {
                    let outcome = state.nack(receipt, delay_ms, now, reason);
                    let entry = (outcome == ReceiptOutcome::Delayed).then(|| JournalEntry::Delay {
                        offset: receipt.offset,
                        until_ms: now.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
                    });
                    (outcome, entry)
                })
                .await?
            }
            Leases::Shared(shared) => {
                self.per_receipt_shared(receipts, |receipt| async move {
                    match shared.parse(receipt) {
                        None => Ok(ReceiptOutcome::Invalid),
                        Some((offset, count)) if count >= self.config.max_deliveries => {
                            let reason = reason.unwrap_or("delivery attempts exhausted");
                            self.dead_letter_shared(shared, receipt, offset, count, reason, false)
                                .await
                        }
                        Some(_) => shared.release(receipt, delay_ms).await,
                    }
                })
                .await?
            }
        };
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
        match &self.leases {
            Leases::Local { state, journal, .. } => {
                self.per_receipt(state, journal, receipts, |state, receipt, now| {
                    (state.extend(receipt, visibility_ms, now), None)
                })
                .await
            }
            Leases::Shared(shared) => {
                self.per_receipt_shared(receipts, |r| shared.extend(r, visibility_ms, now_ms()))
                    .await
            }
        }
    }

    /// Counts another attempt of a message the caller keeps leased; the new delivery
    /// count, or `None` if the receipt lost the message.
    pub async fn redeliver_in_place(
        &self,
        receipt: &str,
        visibility_ms: u64,
    ) -> Result<Option<u32>, BusError> {
        let (state, journal) = match &self.leases {
            Leases::Local { state, journal, .. } => (state, journal),
            Leases::Shared(shared) => {
                return shared
                    .redeliver_in_place(receipt, visibility_ms, now_ms())
                    .await;
            }
        };
        let Some(receipt) = Receipt::parse(receipt) else {
            return Ok(None);
        };
        let count = state
            .lock()
            .redeliver_in_place(receipt, visibility_ms, now_ms());
        if let Some(count) = count {
            journal
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
        let state = match &self.leases {
            Leases::Local { state, .. } => state,
            Leases::Shared(shared) => {
                return match shared.parse(receipt) {
                    None => Ok(ReceiptOutcome::Invalid),
                    Some((offset, count)) => {
                        self.dead_letter_shared(shared, receipt, offset, count, reason, false)
                            .await
                    }
                };
            }
        };
        let outcome = match Receipt::parse(receipt) {
            None => ReceiptOutcome::Invalid,
            Some(r) => state.lock().give_up(r, reason),
        };
        if outcome == ReceiptOutcome::DeadLettered {
            self.move_dead_letters().await?;
        }
        Ok(outcome)
    }

    /// JetStream: takes the lease `receipt` holds, publishes the message at `offset` to the
    /// dead-letter topic, then terminates it in the consumer (a crash in between leaves it
    /// to be handed out again once its ack wait passes, and dead-lettered then).
    async fn dead_letter_shared(
        &self,
        shared: &SharedLeases,
        receipt: &str,
        offset: u64,
        count: u32,
        reason: &str,
        lapsed: bool,
    ) -> Result<ReceiptOutcome, BusError> {
        match shared.take(receipt, lapsed).await? {
            LeaseOutcome::Done => {}
            LeaseOutcome::LeaseLost => return Ok(ReceiptOutcome::LeaseLost),
            LeaseOutcome::AlreadyDone => return Ok(ReceiptOutcome::AlreadyDone),
        }
        let records = self.log.read(offset, 1, usize::MAX).await?;
        if let Some(record) = records.into_iter().next().filter(|r| r.offset == offset) {
            self.dead_letter_events(vec![(record, count, reason.to_string())])
                .await?;
        }
        shared.terminate_taken(receipt).await?;
        Ok(ReceiptOutcome::DeadLettered)
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
    /// done. On failure the messages stay pending and the error is returned. (JetStream
    /// leases dead-letter as they go: nothing waits here.)
    pub async fn move_dead_letters(&self) -> Result<usize, BusError> {
        let Leases::Local { state, journal, .. } = &self.leases else {
            return Ok(0);
        };
        let mut moved = 0;
        loop {
            let batch = state.lock().take_dead(DEAD_LETTER_BATCH);
            if batch.is_empty() {
                return Ok(moved);
            }
            match self.dead_letter_batch(journal, &batch).await {
                Ok(()) => {
                    let mut state = state.lock();
                    for (offset, _, _) in &batch {
                        state.mark_done(*offset);
                    }
                    moved += batch.len();
                }
                Err(e) => {
                    let mut state = state.lock();
                    for (offset, _, _) in &batch {
                        state.return_dead(*offset);
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn dead_letter_batch(
        &self,
        journal: &Journal,
        batch: &[(u64, u32, String)],
    ) -> Result<(), BusError> {
        let mut dead = Vec::with_capacity(batch.len());
        for (offset, count, reason) in batch {
            let records = self.log.read(*offset, 1, usize::MAX).await?;
            if let Some(record) = records.into_iter().next() {
                dead.push((record, *count, reason.clone()));
            }
        }
        self.dead_letter_events(dead).await?;
        let done: Vec<JournalEntry> = batch
            .iter()
            .map(|(offset, _, _)| JournalEntry::Done { offset: *offset })
            .collect();
        journal.append(&done).await?;
        Ok(())
    }

    /// Publishes queued records to the dead-letter topic, each with why it died and
    /// where it came from.
    async fn dead_letter_events(
        &self,
        dead: Vec<(StoredRecord, u32, String)>,
    ) -> Result<(), BusError> {
        if dead.is_empty() {
            return Ok(());
        }
        let dead_at = herald_broker::record::format_time_ms(now_ms());
        let count_dead = dead.len();
        let mut entries = Vec::with_capacity(dead.len());
        for (record, count, reason) in dead {
            let mut event = self.decode(&record)?;
            let x = &mut event.extensions;
            let string = |s: &str| ExtensionValue::String(s.to_string());
            x.insert(ext::REASON.into(), string(&reason));
            x.insert(
                ext::DELIVERY_COUNT.into(),
                ExtensionValue::Integer(i64::from(count)),
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
        ensure_topic(&self.broker, &self.config.dead_letter_topic).await?;
        self.broker
            .publish_keyed(&self.config.dead_letter_topic, entries, None)
            .await?;
        tracing::info!(
            subscription = %self.config.subscription,
            count = count_dead,
            dead_letter_topic = %self.config.dead_letter_topic,
            "messages dead-lettered"
        );
        Ok(())
    }

    /// One round of background work: expired leases, dead letters, compaction (local);
    /// renewals, counts and trimming acknowledged records (JetStream).
    pub async fn maintain(self: &Arc<Self>) {
        let (state, journal, compacting) = match &self.leases {
            Leases::Local {
                state,
                journal,
                compacting,
            } => (state, journal, compacting),
            Leases::Shared(shared) => {
                // Also deletes finished records (below the ack floor and every lease key).
                shared.maintain(now_ms()).await;
                for (receipt, lease) in shared.lapsed_last(now_ms()) {
                    let dead = self
                        .dead_letter_shared(
                            shared,
                            &receipt,
                            lease.offset,
                            lease.delivery_count,
                            EXHAUSTED,
                            true,
                        )
                        .await;
                    if let Err(e) = dead {
                        // Handed out again later, it is dead-lettered by that pull.
                        tracing::warn!(subscription = %self.config.subscription, error = %e, "dead-lettering a lapsed last delivery failed");
                    }
                }
                return;
            }
        };
        let (ready, dead) = {
            let mut state = state.lock();
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
        if journal.needs_compaction() && !compacting.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let this = Arc::clone(self);
            let result = tokio::task::spawn_blocking(move || {
                let Leases::Local {
                    state,
                    journal,
                    compacting,
                } = &this.leases
                else {
                    return Ok(());
                };
                let (generation, old, durable) = {
                    let state = state.lock();
                    let durable = state.durable();
                    let (generation, old) = journal.rotate()?;
                    (generation, old, durable)
                };
                let acked_below = durable.floor;
                let result = journal.finish_compaction(generation, durable, old);
                compacting.store(false, std::sync::atomic::Ordering::Release);
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
            let mut pause = Duration::from_millis(500);
            match &self.leases {
                Leases::Local { state, .. } => {
                    if let Some(wake) = state.lock().next_wakeup_ms() {
                        let until = u64::try_from(wake.saturating_sub(now_ms())).unwrap_or(0);
                        pause = pause.min(Duration::from_millis(until.max(5)));
                    }
                }
                Leases::Shared(shared) => {
                    if let Some(wake) = shared.next_wakeup(now_ms()) {
                        pause = pause.min(wake);
                    }
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = self.maintenance.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            self.maintain().await;
        }
    }

    /// Flushes and closes the journal (local leases). Blocking.
    pub fn close(&self) {
        if let Leases::Local { journal, .. } = &self.leases {
            journal.close();
        }
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
