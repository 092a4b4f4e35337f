//! [`Group`]: one persistent subscription: a queue of `$all` positions leased to
//! competing consumers, with a durable checkpoint and a parked list.
//!
//! Layout of `<store>/persistent/<group>/`:
//! ```text
//! settings.json   what the group follows (written last at creation)
//! queue/          herald-log log; record = kind u8 (0 source, 1 replayed) · $all
//!                 position u64 LE · dispatch cursor u64 LE. Its offsets are the
//!                 messages of herald-bus's QueueState.
//! journal/        herald-bus queue journal: deliveries, done (acked/skipped/parked), delays
//! parked/         herald-log log; record = queue offset u64 · position u64 · deliveries
//!                 u32, key = the reason
//! parked.json     {"replayed_before": N}: parked records below N were replayed
//! ```
//! The dispatcher copies the positions of the target's visible events after the
//! cursor into `queue/`; reads lease queue messages (QueueState), acks journal `Done`
//! before they return. The cursor of record `k` is the last `$all` position examined
//! when it was written, so every source record after `k` has a larger position: the
//! checkpoint is the cursor of the record just below the queue's done floor.
//! Guarantees: an ack, skip or park that returned is durable (fsync) and never undone;
//! leases live in memory, so after a restart every unfinished event is delivered again
//! (its delivery count kept). Parking appends to `parked/` before journaling `Done`,
//! and replay appends to `queue/` before writing `parked.json`: a crash in between
//! duplicates (parked twice, replayed twice), it never loses an event.
//! Not yet done: `queue/` and `parked/` are never trimmed (a few dozen bytes per event
//! with the log's framing); the journal is compacted.
//! Locks: `dispatch` (async, writers of `queue/`) before `state` (leaf, never held
//! across an `.await`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_bus::queue::journal::Journal;
use herald_bus::queue::state::{
    JournalEntry, Leased, QueueState, Receipt, ReceiptOutcome as QueueOutcome,
};
use herald_log::{FsyncPolicy, LogConfig, PartitionLog, Record};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{
    bus_error, NackAction, ParkedEvent, PersistentEvent, PersistentInfo, PersistentSettings,
    ReceiptOutcome, READ_EVENTS_MAX, READ_WAIT_MAX, REASON_BYTES_MAX,
};
use crate::error::EventStoreError;
use crate::store::{now_ms, EventStore};

/// Messages tracked in memory beyond the done floor; the dispatcher stops copying
/// when the queue holds this many unfinished messages.
const TRACKED_MAX: usize = 10_000;
/// Events scanned from the store per dispatch step.
const DISPATCH_BATCH: usize = 1024;
/// Messages parked per append.
const PARK_BATCH: usize = 256;
/// Parked records replayed per append.
const REPLAY_BATCH: usize = 1024;
const QUEUE_RECORD_BYTES: usize = 17;
const PARKED_RECORD_BYTES: usize = 20;
pub(super) const KIND_SOURCE: u8 = 0;
pub(super) const KIND_REPLAYED: u8 = 1;
const PARKED_FILE: &str = "parked.json";

#[derive(Debug, Serialize, Deserialize)]
struct ParkedFile {
    replayed_before: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct QueueRecord {
    pub(super) kind: u8,
    pub(super) position: u64,
    pub(super) cursor: u64,
}

impl QueueRecord {
    pub(super) fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(QUEUE_RECORD_BYTES);
        out.push(self.kind);
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.cursor.to_le_bytes());
        Bytes::from(out)
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != QUEUE_RECORD_BYTES {
            return None;
        }
        let (kind, rest) = bytes.split_first()?;
        let (position, cursor) = rest.split_at(8);
        Some(Self {
            kind: *kind,
            position: u64::from_le_bytes(position.try_into().ok()?),
            cursor: u64::from_le_bytes(cursor.try_into().ok()?),
        })
    }
}

pub(super) fn encode_parked(queue_offset: u64, position: u64, deliveries: u32) -> Bytes {
    let mut out = Vec::with_capacity(PARKED_RECORD_BYTES);
    out.extend_from_slice(&queue_offset.to_le_bytes());
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&deliveries.to_le_bytes());
    Bytes::from(out)
}

pub(super) fn decode_parked(bytes: &[u8]) -> Option<(u64, u64, u32)> {
    if bytes.len() != PARKED_RECORD_BYTES {
        return None;
    }
    let (offset, rest) = bytes.split_at(8);
    let (position, count) = rest.split_at(8);
    Some((
        u64::from_le_bytes(offset.try_into().ok()?),
        u64::from_le_bytes(position.try_into().ok()?),
        u32::from_le_bytes(count.try_into().ok()?),
    ))
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 * 1024 * 1024,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

pub(crate) struct Group {
    settings: PersistentSettings,
    dir: PathBuf,
    queue: Arc<PartitionLog>,
    parked: Arc<PartitionLog>,
    journal: Arc<Journal>,
    state: Mutex<QueueState>,
    /// Serializes the writers of `queue` (dispatch, replay).
    dispatch: tokio::sync::Mutex<()>,
    /// The last `$all` position examined by the dispatcher (`None`: none yet).
    cursor: Mutex<Option<u64>>,
    /// Parked records below this were replayed.
    replayed_before: Mutex<u64>,
    /// Woken when events may have become ready (nack, replay, delete).
    changed: Notify,
    compacting: AtomicBool,
    deleted: AtomicBool,
}

impl Group {
    /// Opens the group's logs and recovers its state. Blocking.
    pub fn open(dir: PathBuf, settings: PersistentSettings) -> Result<Self, EventStoreError> {
        let queue = PartitionLog::open(dir.join("queue"), log_config())?;
        let parked = PartitionLog::open(dir.join("parked"), log_config())?;
        let journal_dir = dir.join("journal");
        let mut entries = Vec::new();
        let (journal, durable) = Journal::open(&journal_dir, |e| entries.push(e))
            .map_err(|e| bus_error(&journal_dir, e))?;
        let max_deliveries = settings.max_retries.saturating_add(1);
        let mut state = QueueState::new(durable, max_deliveries, TRACKED_MAX);
        for entry in entries {
            state.apply(entry);
        }
        let cursor = match queue.next_offset().checked_sub(1) {
            Some(last) => Some(read_queue_record(&queue, last)?.cursor),
            None => settings.start_after,
        };
        let replayed_before = match std::fs::read(dir.join(PARKED_FILE)) {
            Ok(bytes) => {
                serde_json::from_slice::<ParkedFile>(&bytes)
                    .map_err(|e| EventStoreError::Corrupt {
                        position: 0,
                        reason: format!("{}: {e}", dir.join(PARKED_FILE).display()),
                    })?
                    .replayed_before
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(EventStoreError::io(dir.join(PARKED_FILE), e)),
        };
        tracing::info!(
            group = %settings.group,
            done_floor = state.floor(),
            queued = queue.next_offset(),
            cursor = ?cursor,
            "persistent subscription recovered"
        );
        Ok(Self {
            settings,
            dir,
            queue,
            parked,
            journal: Arc::new(journal),
            state: Mutex::new(state),
            dispatch: tokio::sync::Mutex::new(()),
            cursor: Mutex::new(cursor),
            replayed_before: Mutex::new(replayed_before),
            changed: Notify::new(),
            compacting: AtomicBool::new(false),
            deleted: AtomicBool::new(false),
        })
    }

    pub fn settings(&self) -> &PersistentSettings {
        &self.settings
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_live(&self) -> Result<(), EventStoreError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(EventStoreError::SubscriptionNotFound {
                group: self.settings.group.clone(),
            });
        }
        Ok(())
    }

    pub fn info(&self) -> Result<PersistentInfo, EventStoreError> {
        let (floor, counts) = {
            let state = self.state.lock();
            (state.floor(), state.counts())
        };
        let end = self.queue.next_offset();
        let cursor = *self.cursor.lock();
        let checkpoint = match floor.checked_sub(1) {
            // Everything queued is done: every examined event is handled.
            _ if floor >= end => cursor,
            None => self.settings.start_after,
            Some(below) => Some(read_queue_record(&self.queue, below)?.cursor),
        };
        let replayed_before = *self.replayed_before.lock();
        Ok(PersistentInfo {
            settings: self.settings.clone(),
            checkpoint,
            last_dispatched_position: cursor,
            in_flight: counts.leased,
            pending: (counts.ready + counts.delayed) as u64 + end.saturating_sub(counts.scanned),
            parked: self.parked.next_offset().saturating_sub(replayed_before),
        })
    }

    /// Copies the positions of the target's visible events after the cursor into the
    /// queue, until the store's end or until the queue holds `TRACKED_MAX` unfinished
    /// messages.
    async fn dispatch(&self, store: &EventStore) -> Result<(), EventStoreError> {
        let next = |cursor: Option<u64>| cursor.map_or(0, |c| c.saturating_add(1));
        if next(*self.cursor.lock()) >= store.end_position() {
            return Ok(());
        }
        let _writer = self.dispatch.lock().await;
        loop {
            let from = next(*self.cursor.lock());
            if from >= store.end_position() {
                return Ok(());
            }
            let floor = self.state.lock().floor();
            if self.queue.next_offset().saturating_sub(floor) >= TRACKED_MAX as u64 {
                return Ok(());
            }
            let target = &self.settings.target;
            let (events, scan_next) =
                store.scan_forwards(from, DISPATCH_BATCH, |stream| target.matches(stream))?;
            let Some(examined) = scan_next.checked_sub(1) else {
                return Ok(());
            };
            let events = store.visible_only(events);
            if !events.is_empty() {
                let timestamp_ms = now_ms();
                let records = events
                    .iter()
                    .map(|e| Record {
                        timestamp_ms,
                        key: None,
                        value: QueueRecord {
                            kind: KIND_SOURCE,
                            position: e.position,
                            cursor: e.position,
                        }
                        .encode(),
                    })
                    .collect();
                self.queue.append(records).await?;
            }
            *self.cursor.lock() = Some(examined);
        }
    }

    /// Leases up to `max` events for `visibility_ms`, waiting up to `wait` for one.
    pub async fn read(
        &self,
        store: &EventStore,
        max: usize,
        visibility_ms: Option<u64>,
        wait: Duration,
    ) -> Result<Vec<PersistentEvent>, EventStoreError> {
        let max = max.clamp(1, READ_EVENTS_MAX);
        let visibility = visibility_ms.unwrap_or(self.settings.visibility_timeout_ms);
        let deadline = Instant::now() + wait.min(READ_WAIT_MAX);
        loop {
            self.check_live()?;
            let mut store_end = store.inner.log.watch();
            store_end.borrow_and_update();
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.dispatch(store).await?;
            let (leased, wake_ms) = {
                let mut state = self.state.lock();
                let now = now_ms();
                state.release_due(now);
                state.fill(self.queue.next_offset(), now);
                let leased = state.lease(now, max, visibility, rand::random::<u64>);
                (leased, state.next_wakeup_ms())
            };
            self.park_pending().await?;
            if !leased.is_empty() {
                let entries: Vec<JournalEntry> = leased
                    .iter()
                    .map(|l| JournalEntry::Delivered {
                        offset: l.receipt.offset,
                        count: l.delivery_count,
                    })
                    .collect();
                self.journal_append(&entries).await?;
                let events = self.read_leased(store, &leased).await?;
                if !events.is_empty() {
                    return Ok(events);
                }
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut pause = deadline - now;
            if let Some(wake) = wake_ms {
                let until = u64::try_from(wake.saturating_sub(now_ms())).unwrap_or(0);
                pause = pause.min(Duration::from_millis(until.max(1)));
            }
            tokio::select! {
                changed = store_end.changed() => {
                    if changed.is_err() {
                        return Err(EventStoreError::Closed);
                    }
                }
                () = &mut notified => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// The events of leased messages. Events hidden since they were queued (stream
    /// metadata, deletes) are finished as skipped and left out.
    async fn read_leased(
        &self,
        store: &EventStore,
        leased: &[Leased],
    ) -> Result<Vec<PersistentEvent>, EventStoreError> {
        let mut out = Vec::with_capacity(leased.len());
        let mut hidden = Vec::new();
        for lease in leased {
            let record = read_queue_record(&self.queue, lease.receipt.offset)?;
            let event = store
                .event_at(record.position)?
                .and_then(|e| store.visible_only(vec![e]).pop());
            match event {
                Some(event) => out.push(PersistentEvent {
                    receipt: lease.receipt.encode(),
                    delivery_count: lease.delivery_count,
                    event,
                }),
                None => hidden.push(lease.receipt),
            }
        }
        if !hidden.is_empty() {
            let entries: Vec<JournalEntry> = {
                let mut state = self.state.lock();
                hidden
                    .iter()
                    .filter(|r| state.ack(**r) == QueueOutcome::Acked)
                    .map(|r| JournalEntry::Done { offset: r.offset })
                    .collect()
            };
            self.journal_append(&entries).await?;
        }
        Ok(out)
    }

    /// Applies `op` to each receipt under the state lock, journals what it returned,
    /// then parks what is waiting to be parked.
    async fn per_receipt(
        &self,
        receipts: &[String],
        op: impl FnMut(&mut QueueState, Receipt, i64) -> (ReceiptOutcome, Option<JournalEntry>),
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError> {
        self.check_live()?;
        let (outcomes, entries) =
            self.state
                .lock()
                .apply_receipts(receipts, now_ms(), ReceiptOutcome::Invalid, op);
        self.journal_append(&entries).await?;
        self.park_pending().await?;
        self.changed.notify_waiters();
        Ok(outcomes)
    }

    pub async fn ack(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError> {
        self.per_receipt(receipts, |state, receipt, _| {
            let outcome = map_outcome(state.ack(receipt));
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
        action: NackAction,
        reason: Option<&str>,
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError> {
        let reason = reason.map(|r| truncate(r, REASON_BYTES_MAX));
        self.per_receipt(receipts, |state, receipt, now| match action {
            NackAction::Skip => match map_outcome(state.ack(receipt)) {
                ReceiptOutcome::Acked => (
                    ReceiptOutcome::Skipped,
                    Some(JournalEntry::Done {
                        offset: receipt.offset,
                    }),
                ),
                other => (other, None),
            },
            NackAction::Park => {
                let why = reason.as_deref().unwrap_or("parked by a consumer");
                (map_outcome(state.give_up(receipt, why)), None)
            }
            NackAction::Retry { delay_ms } => {
                let outcome = map_outcome(state.nack(receipt, delay_ms, now, reason.as_deref()));
                let entry = (outcome == ReceiptOutcome::Delayed).then(|| JournalEntry::Delay {
                    offset: receipt.offset,
                    until_ms: now.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX)),
                });
                (outcome, entry)
            }
        })
        .await
    }

    /// Moves every message waiting to be parked to the parked list, then journals it
    /// done. On failure the messages stay pending and the error is returned.
    async fn park_pending(&self) -> Result<(), EventStoreError> {
        loop {
            let batch = self.state.lock().take_dead(PARK_BATCH);
            if batch.is_empty() {
                return Ok(());
            }
            if let Err(e) = self.park_batch(&batch).await {
                let mut state = self.state.lock();
                for (offset, _, _) in &batch {
                    state.return_dead(*offset);
                }
                return Err(e);
            }
            let mut state = self.state.lock();
            for (offset, _, _) in &batch {
                state.mark_done(*offset);
            }
        }
    }

    async fn park_batch(&self, batch: &[(u64, u32, String)]) -> Result<(), EventStoreError> {
        let timestamp_ms = now_ms();
        let mut records = Vec::with_capacity(batch.len());
        for (offset, count, reason) in batch {
            let position = read_queue_record(&self.queue, *offset)?.position;
            records.push(Record {
                timestamp_ms,
                key: Some(Bytes::from(truncate(reason, REASON_BYTES_MAX).into_bytes())),
                value: encode_parked(*offset, position, *count),
            });
        }
        self.parked.append(records).await?;
        let done: Vec<JournalEntry> = batch
            .iter()
            .map(|(offset, _, _)| JournalEntry::Done { offset: *offset })
            .collect();
        self.journal_append(&done).await?;
        tracing::info!(group = %self.settings.group, count = batch.len(), "events parked");
        Ok(())
    }

    /// Up to `max` parked events from parked index `from` (not yet replayed ones only).
    pub fn list_parked(
        &self,
        store: &EventStore,
        from: u64,
        max: usize,
    ) -> Result<Vec<ParkedEvent>, EventStoreError> {
        self.check_live()?;
        let from = from.max(*self.replayed_before.lock());
        let mut out = Vec::new();
        let mut next = from;
        while out.len() < max && next < self.parked.next_offset() {
            let records = self.parked.read(next, max - out.len(), 16 * 1024 * 1024)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for record in records {
                let (_, position, delivery_count) =
                    decode_parked(&record.value).ok_or_else(|| EventStoreError::Corrupt {
                        position: record.offset,
                        reason: format!("bad parked record in {}", self.dir.display()),
                    })?;
                out.push(ParkedEvent {
                    parked_index: record.offset,
                    position,
                    delivery_count,
                    reason: record
                        .key
                        .as_deref()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    parked_at_ms: record.timestamp_ms,
                    event: store.event_at(position)?,
                });
            }
        }
        Ok(out)
    }

    /// Puts every parked event back into the queue (as new messages, delivery count 0)
    /// and empties the parked list. Returns how many were replayed.
    pub async fn replay_parked(&self) -> Result<u64, EventStoreError> {
        self.check_live()?;
        let _writer = self.dispatch.lock().await;
        let from = *self.replayed_before.lock();
        let end = self.parked.next_offset();
        let mut next = from;
        while next < end {
            let want = usize::try_from(end - next)
                .unwrap_or(usize::MAX)
                .min(REPLAY_BATCH);
            let parked = self.parked.read(next, want, 16 * 1024 * 1024)?;
            let Some(last) = parked.last() else { break };
            next = last.offset + 1;
            let cursor = self.cursor.lock().unwrap_or(0);
            let timestamp_ms = now_ms();
            let records = parked
                .iter()
                .filter(|r| r.offset < end)
                .map(|r| {
                    let (_, position, _) =
                        decode_parked(&r.value).ok_or_else(|| EventStoreError::Corrupt {
                            position: r.offset,
                            reason: format!("bad parked record in {}", self.dir.display()),
                        })?;
                    Ok(Record {
                        timestamp_ms,
                        key: None,
                        value: QueueRecord {
                            kind: KIND_REPLAYED,
                            position,
                            cursor,
                        }
                        .encode(),
                    })
                })
                .collect::<Result<Vec<_>, EventStoreError>>()?;
            if !records.is_empty() {
                self.queue.append(records).await?;
            }
        }
        let dir = self.dir.clone();
        let bytes = serde_json::to_vec(&ParkedFile {
            replayed_before: end,
        })
        .map_err(|e| EventStoreError::io(&dir, std::io::Error::other(e)))?;
        super::blocking(move || {
            crate::snapshot::write_atomically(&dir, &dir.join(PARKED_FILE), &bytes)
        })
        .await?;
        *self.replayed_before.lock() = end;
        self.changed.notify_waiters();
        Ok(end - from)
    }

    async fn journal_append(&self, entries: &[JournalEntry]) -> Result<(), EventStoreError> {
        self.journal
            .append(entries)
            .await
            .map_err(|e| bus_error(&self.dir, e))?;
        if self.journal.needs_compaction() && !self.compacting.swap(true, Ordering::AcqRel) {
            self.compact().await;
        }
        Ok(())
    }

    /// Snapshots the durable queue state and starts a new journal generation.
    async fn compact(&self) {
        let (generation, old, durable) = {
            let state = self.state.lock();
            let durable = state.durable();
            match self.journal.rotate() {
                Ok((generation, old)) => (generation, old, durable),
                Err(e) => {
                    tracing::warn!(group = %self.settings.group, error = %e, "journal rotation failed");
                    self.compacting.store(false, Ordering::Release);
                    return;
                }
            }
        };
        let journal = Arc::clone(&self.journal);
        let result = tokio::task::spawn_blocking(move || {
            journal.finish_compaction(generation, durable, old)
        })
        .await;
        self.compacting.store(false, Ordering::Release);
        if let Ok(Err(e)) = result {
            tracing::warn!(group = %self.settings.group, error = %e, "journal compaction failed");
        }
    }

    /// Marks the group deleted (pending reads end) and closes its logs. Blocking.
    pub fn shut_down(&self) {
        self.deleted.store(true, Ordering::Release);
        self.changed.notify_waiters();
        self.close();
    }

    /// Flushes and closes the group's logs. Blocking.
    pub fn close(&self) {
        self.journal.close();
        for log in [&self.queue, &self.parked] {
            if let Err(e) = log.close() {
                tracing::warn!(group = %self.settings.group, error = %e, "closing a persistent subscription log failed");
            }
        }
    }
}

fn read_queue_record(queue: &PartitionLog, offset: u64) -> Result<QueueRecord, EventStoreError> {
    let records = queue.read(offset, 1, usize::MAX)?;
    records
        .first()
        .filter(|r| r.offset == offset)
        .and_then(|r| QueueRecord::decode(&r.value))
        .ok_or_else(|| EventStoreError::Corrupt {
            position: offset,
            reason: format!(
                "persistent subscription queue {} has no valid record at {offset}",
                queue.dir().display()
            ),
        })
}

pub(super) fn map_outcome(outcome: QueueOutcome) -> ReceiptOutcome {
    match outcome {
        QueueOutcome::Acked => ReceiptOutcome::Acked,
        QueueOutcome::Released | QueueOutcome::Extended => ReceiptOutcome::Retried,
        QueueOutcome::Delayed => ReceiptOutcome::Delayed,
        QueueOutcome::DeadLettered => ReceiptOutcome::Parked,
        QueueOutcome::AlreadyDone => ReceiptOutcome::AlreadyDone,
        QueueOutcome::LeaseLost => ReceiptOutcome::LeaseLost,
        QueueOutcome::Invalid => ReceiptOutcome::Invalid,
    }
}

pub(super) fn truncate(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = QueueRecord {
            kind: KIND_REPLAYED,
            position: 42,
            cursor: u64::MAX,
        };
        assert_eq!(QueueRecord::decode(&record.encode()), Some(record));
        assert_eq!(QueueRecord::decode(&[1, 2]), None);
        assert_eq!(decode_parked(&encode_parked(3, 9, 7)), Some((3, 9, 7)));
        assert_eq!(truncate("héllo", 2), "h");
    }
}
