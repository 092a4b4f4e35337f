//! [`PartitionLog`]: the public face of one partition's log.
//!
//! Owns: the append front end (validation, encoding on the caller's thread, the
//! bounded queue to the writer), reads and timestamp lookups across segments,
//! retention, flush and close.
//!
//! Invariants: a read never returns a record at or past the `next_offset()` it
//! observed when it started, nor a record from a batch that failed verification;
//! `append` returns `Backpressure` instead of waiting for queue space.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::batch::{decode_header, encode_batch, encoded_batch_len, BatchError};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::record::{AppendOutcome, Record, StoredRecord};
use crate::recovery::{recover, RecoveryReport};
use crate::segment::Segment;
use crate::state::Shared;
use crate::writer::{AppendRequest, Command, Writer};

/// One partition's durable, segmented log. `Send + Sync`; share it behind an `Arc`.
///
/// Dropping the last handle closes the log (see [`PartitionLog::close`]).
#[derive(Debug)]
pub struct PartitionLog {
    pub(crate) shared: Arc<Shared>,
    sender: SyncSender<Command>,
    closed: AtomicBool,
    writer: Mutex<Option<JoinHandle<Result<(), LogError>>>>,
    report: RecoveryReport,
}

type Reply = oneshot::Receiver<Result<AppendOutcome, LogError>>;

/// Read limits: records and key+value bytes still allowed.
struct Budget {
    records_left: usize,
    bytes_left: usize,
}

impl Budget {
    /// Takes `record` out of the budget if it fits (the first record always fits).
    fn admit(&mut self, record: &StoredRecord, is_first: bool) -> bool {
        let bytes = record.payload_bytes();
        if self.records_left == 0 || (!is_first && bytes > self.bytes_left) {
            return false;
        }
        self.records_left -= 1;
        self.bytes_left = self.bytes_left.saturating_sub(bytes);
        true
    }
}

impl PartitionLog {
    /// Opens (creating the directory if needed) and recovers the log in `dir`, then
    /// starts its writer thread. See [`crate::recovery`] for what recovery does.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Arc<Self>, LogError> {
        config.validate()?;
        let dir = dir.into();
        let recovered = recover(&dir, &config)?;
        let report = recovered.report;
        tracing::info!(
            dir = %dir.display(),
            segments = report.segments,
            start_offset = report.start_offset,
            next_offset = report.next_offset,
            truncated_bytes = report.truncated_bytes,
            rebuilt_indexes = report.rebuilt_indexes,
            duration_ms = report.duration.as_millis() as u64,
            "partition log recovered"
        );
        let segments = recovered.segments;
        let active = segments
            .last()
            .cloned()
            .ok_or_else(|| LogError::corrupt(&dir, 0, "recovery produced no segment"))?;
        let (sender, receiver) = mpsc::sync_channel(config.queue_depth_max);
        let shared = Arc::new(Shared::new(
            dir,
            config,
            segments,
            recovered.active.next_offset,
        ));
        let writer = Writer::spawn(Arc::clone(&shared), active, recovered.active, receiver)?;
        Ok(Arc::new(Self {
            shared,
            sender,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(writer)),
            report,
        }))
    }

    /// Appends `records` as one atomic batch (all or nothing on crash) and resolves
    /// once the batch is durable per the fsync policy (under `Always`: after the
    /// fdatasync). Fails at once with `Backpressure` if the writer queue is full,
    /// `EmptyBatch` / `BatchTooLarge` for bad input, `Closed` / `Poisoned` if the
    /// log takes no more writes.
    ///
    /// Dropping the future after it was first polled does not cancel the append.
    /// An `Io` or `Poisoned` error from a failed fdatasync does not prove the batch
    /// is absent: it may still be found after a restart.
    pub async fn append(&self, records: Vec<Record>) -> Result<AppendOutcome, LogError> {
        let reply = self.submit(records)?;
        reply
            .await
            .unwrap_or_else(|_| Err(self.shared.closed_error()))
    }

    /// [`PartitionLog::append`], blocking the calling thread. Must not be called
    /// from inside an async runtime (it would block a runtime thread; tokio panics).
    pub fn append_blocking(&self, records: Vec<Record>) -> Result<AppendOutcome, LogError> {
        let reply = self.submit(records)?;
        reply
            .blocking_recv()
            .unwrap_or_else(|_| Err(self.shared.closed_error()))
    }

    /// Validates and encodes `records` on the caller's thread and queues them.
    pub(crate) fn submit(&self, records: Vec<Record>) -> Result<Reply, LogError> {
        if records.is_empty() {
            return Err(LogError::EmptyBatch);
        }
        let size = encoded_batch_len(&records);
        let max = u64::from(self.shared.config.batch_bytes_max);
        if size > max {
            return Err(LogError::BatchTooLarge { size, max });
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(self.shared.closed_error());
        }
        if let Some(reason) = self.shared.poisoned() {
            return Err(LogError::Poisoned(reason));
        }
        let batch = encode_batch(0, &records).map_err(|e| encode_error(e, size, max))?;
        let header = decode_header(&batch).map_err(|e| encode_error(e, size, max))?;
        let (reply, receiver) = oneshot::channel();
        let request = AppendRequest {
            batch,
            header,
            reply,
        };
        match self.sender.try_send(Command::Append(request)) {
            Ok(()) => Ok(receiver),
            Err(TrySendError::Full(_)) => Err(LogError::Backpressure),
            Err(TrySendError::Disconnected(_)) => Err(self.shared.closed_error()),
        }
    }

    /// Records with offset >= `offset`, in order, up to the visible end: at most
    /// `max_records`, and no more key+value bytes than `max_bytes`, except that the
    /// first record is returned whatever its size. `offset == next_offset()` gives
    /// an empty Vec; `offset` outside `[start_offset(), next_offset()]` is
    /// `OffsetOutOfRange`.
    ///
    /// Every batch is verified before use. A batch that fails verification (or
    /// offsets missing from the log) ends the read: the records before it are
    /// returned, or `Corrupt` if there are none.
    pub fn read(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, LogError> {
        let visible_end = self.shared.next_offset();
        self.check_range(offset, visible_end)?;
        let mut out = Vec::new();
        let mut budget = Budget {
            records_left: max_records,
            bytes_left: max_bytes,
        };
        let mut next = offset;
        while next < visible_end && budget.records_left > 0 {
            let step = self.segment_for(next, visible_end).and_then(|segment| {
                read_segment(&segment, next, visible_end, &mut out, &mut budget)
            });
            match step {
                Ok(Some(reached)) => next = reached,
                Ok(None) => break,
                Err(error) if out.is_empty() => return Err(self.noted(error)),
                Err(error) => {
                    self.noted(error);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Logs and counts (`CORRUPT_READS_METRIC`) a read that met damaged data.
    fn noted(&self, error: LogError) -> LogError {
        if let LogError::Corrupt { .. } = &error {
            metrics::counter!(crate::CORRUPT_READS_METRIC).increment(1);
            tracing::error!(dir = %self.shared.dir.display(), %error, "read met damaged data; it is not served");
        }
        error
    }

    fn check_range(&self, offset: u64, visible_end: u64) -> Result<(), LogError> {
        let start = self.shared.start_offset();
        if offset < start || offset > visible_end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                start,
                end: visible_end,
            });
        }
        Ok(())
    }

    /// The segment that should hold `offset`: the last with base offset <= it.
    /// Offsets before the first segment are out of range (retention took them);
    /// offsets past a segment's end and before the next one are a gap (`Corrupt`).
    fn segment_for(&self, offset: u64, visible_end: u64) -> Result<Arc<Segment>, LogError> {
        let segments = self.shared.segments.read();
        let index = segments.partition_point(|s| s.base_offset() <= offset);
        let Some(segment) = index.checked_sub(1).and_then(|i| segments.get(i)) else {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                start: segments.first().map_or(visible_end, |s| s.base_offset()),
                end: visible_end,
            });
        };
        let is_last = index == segments.len();
        if !is_last && offset >= segment.end_offset() {
            let next_base = segments.get(index).map_or(visible_end, |s| s.base_offset());
            let reason = format!(
                "offsets {}..{next_base} are missing from the log: segment {} ends at offset {} \
                 (a segment file was lost or damaged)",
                segment.end_offset(),
                segment.base_offset(),
                segment.end_offset()
            );
            return Err(LogError::corrupt(segment.log_path(), 0, reason));
        }
        Ok(Arc::clone(segment))
    }

    /// Where a reader can go on after `read(offset, ..)` failed with `Corrupt`: the base
    /// offset of the segment after the one holding `offset`, or `next_offset()` if
    /// there is none. Offsets skipped this way are lost to that reader; recovery code
    /// (e.g. rebuilding an in-memory window) uses it to keep going past damage.
    pub fn offset_after_damage(&self, offset: u64) -> u64 {
        let segments = self.shared.segments.read();
        let index = segments.partition_point(|s| s.base_offset() <= offset);
        segments
            .get(index)
            .map_or_else(|| self.shared.next_offset(), |s| s.base_offset())
            .max(offset.saturating_add(1))
    }

    /// The first offset whose record timestamp is >= `timestamp_ms`, or
    /// `next_offset()` if there is none. Uses each segment's largest timestamp and
    /// time index to skip, then scans.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64, LogError> {
        let visible_end = self.shared.next_offset();
        let candidates: Vec<Arc<Segment>> = {
            let segments = self.shared.segments.read();
            segments
                .iter()
                .filter(|s| s.max_timestamp_ms() >= timestamp_ms)
                .cloned()
                .collect()
        };
        for segment in candidates {
            let found = segment
                .find_timestamp(timestamp_ms, visible_end)
                .map_err(|error| self.noted(error))?;
            if let Some(offset) = found {
                return Ok(offset);
            }
        }
        Ok(visible_end)
    }

    /// First offset still stored (retention moves it forward).
    pub fn start_offset(&self) -> u64 {
        self.shared.start_offset()
    }

    /// The visible end, exclusive: the offset the next record will get once every
    /// acknowledged append is counted. Under `Always` only fsynced data is visible.
    pub fn next_offset(&self) -> u64 {
        self.shared.next_offset()
    }

    /// A receiver of `next_offset()`, updated whenever it advances (for long polls).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.shared.subscribe()
    }

    /// Bytes of all segment files (`.log`, `.index`, `.timeindex`).
    pub fn size_bytes(&self) -> u64 {
        self.shared
            .segments
            .read()
            .iter()
            .map(|s| s.size_bytes())
            .sum()
    }

    pub fn segment_count(&self) -> usize {
        self.shared.segments.read().len()
    }

    /// fdatasync calls issued so far (writer, rolls, flushes and directory syncs).
    pub fn fsync_count(&self) -> u64 {
        self.shared.fsync_count()
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &std::path::Path {
        &self.shared.dir
    }

    /// What `open()` found: segments, records, truncated bytes, rebuilt indexes, gaps
    /// and how long it took.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Deletes whole sealed segments, oldest first (never the active one), while the
    /// log is bigger than `retention_bytes` or the oldest segment's newest record is
    /// older than `now_ms - retention_age`. Returns how many were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        crate::retention::enforce(&self.shared, now_ms)
    }

    /// Deletes whole sealed segments holding only offsets below `offset` (the start offset
    /// moves to the first kept segment). For consumers that know everything below
    /// `offset` is no longer needed, e.g. a fully acknowledged queue prefix.
    pub fn delete_records_before(&self, offset: u64) -> Result<usize, LogError> {
        crate::retention::delete_before(&self.shared, offset)
    }

    /// fdatasyncs everything written so far.
    pub fn flush(&self) -> Result<(), LogError> {
        if let Some(reason) = self.shared.poisoned() {
            return Err(LogError::Poisoned(reason));
        }
        match self.shared.active_segment() {
            Some(segment) => self
                .shared
                .sync_data(segment.log_file(), segment.log_path()),
            None => Ok(()),
        }
    }

    /// Stops taking appends, lets the writer finish every queued one, fdatasyncs and
    /// stops the writer thread. Blocks until done. Later appends fail with `Closed`;
    /// reads keep working. Closing again is a no-op.
    pub fn close(&self) -> Result<(), LogError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Blocks while the queue is full: the writer is draining it.
        let _ = self.sender.send(Command::Close);
        let Some(writer) = self.writer.lock().take() else {
            return Ok(());
        };
        match writer.join() {
            Ok(result) => result,
            Err(_) => Err(self.shared.closed_error()),
        }
    }

    #[cfg(test)]
    pub(crate) fn faults(&self) -> &crate::fault::Faults {
        &self.shared.faults
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::warn!(dir = %self.shared.dir.display(), %error, "closing the log on drop failed");
        }
    }
}

fn encode_error(error: BatchError, size: u64, max: u64) -> LogError {
    match error {
        BatchError::NoRecords => LogError::EmptyBatch,
        _ => LogError::BatchTooLarge { size, max },
    }
}

/// Reads from one segment into `out`. Returns the offset to continue from, or
/// `None` once the budget is spent.
fn read_segment(
    segment: &Segment,
    from: u64,
    visible_end: u64,
    out: &mut Vec<StoredRecord>,
    budget: &mut Budget,
) -> Result<Option<u64>, LogError> {
    let mut full = false;
    let reached = segment.scan_from(from, visible_end, |batch| {
        for record in batch.records(from, visible_end) {
            if !budget.admit(&record, out.is_empty()) {
                full = true;
                return false;
            }
            out.push(record);
        }
        budget.records_left > 0
    })?;
    if full || budget.records_left == 0 {
        return Ok(None);
    }
    if reached <= from {
        let reason = format!(
            "offset {from} not found: segment {} ends before it",
            segment.base_offset()
        );
        return Err(LogError::corrupt(segment.log_path(), 0, reason));
    }
    Ok(Some(reached))
}
