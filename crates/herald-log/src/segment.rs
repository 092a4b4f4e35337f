//! One segment: a `.log` file of batches plus its `.index` and `.timeindex`, and the
//! read side of it (batch scanning, record reads, timestamp lookups).
//!
//! Owns: file naming (`{base_offset:020}.log` and friends), opening and creating the
//! three files, and the atomics that say how much of the segment readers may see.
//! Writes to the files belong to the writer (`crate::writer`) and to recovery.
//!
//! Invariants: readers never look past `visible_bytes`, which the writer raises only
//! after the bytes below it are written (and, under `FsyncPolicy::Always`, synced);
//! every batch handed to a reader has passed its CRC check and continues the
//! offsets of the batch before it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

use crate::batch::{decode_batch, decode_header, BatchHeader, DecodedBatch, HEADER_BYTES};
use crate::error::LogError;
use crate::index::{IndexFile, OffsetIndexEntry, TimeIndexEntry};
use crate::record::StoredRecord;

/// Extension of a segment's batch file.
pub const LOG_EXTENSION: &str = "log";
/// Extension of a segment's sparse offset index.
pub const INDEX_EXTENSION: &str = "index";
/// Extension of a segment's time index.
pub const TIME_INDEX_EXTENSION: &str = "timeindex";

/// Bytes a reader fetches from a segment per positioned read (more if a batch is larger).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// `{base_offset:020}.{extension}`.
pub fn segment_file_name(base_offset: u64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// The base offset of a `NNNNNNNNNNNNNNNNNNNN.log` file name, if `name` is one.
pub fn parse_log_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment's files and visibility state, shared by the writer and readers.
#[derive(Debug)]
pub(crate) struct Segment {
    base_offset: u64,
    log_path: PathBuf,
    log: File,
    pub(crate) offset_index: IndexFile<OffsetIndexEntry>,
    pub(crate) time_index: IndexFile<TimeIndexEntry>,
    /// Bytes written to the `.log` file (visible or not).
    written_bytes: AtomicU64,
    /// Prefix of the `.log` file readers may read.
    visible_bytes: AtomicU64,
    /// Offsets below this are in this segment (once visible); for a sealed segment
    /// whose end could not be established, the next segment's base offset.
    end_offset: AtomicU64,
    /// Largest record timestamp in the segment, `i64::MIN` if empty.
    max_timestamp_ms: AtomicI64,
    sealed: AtomicBool,
}

/// State of a segment as recovery or the writer established it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentState {
    pub(crate) written_bytes: u64,
    pub(crate) end_offset: u64,
    pub(crate) max_timestamp_ms: i64,
}

fn open_rw(path: &Path, create: bool, truncate: bool) -> Result<File, LogError> {
    File::options()
        .read(true)
        .write(true)
        .create(create)
        .truncate(truncate)
        .open(path)
        .map_err(|e| LogError::io("open", path, e))
}

impl Segment {
    /// Opens the segment at `base_offset` in `dir`. `fresh` creates (or empties) all
    /// three files; otherwise the `.log` must exist and missing index files are created.
    pub(crate) fn open(dir: &Path, base_offset: u64, fresh: bool) -> Result<Self, LogError> {
        let log_path = dir.join(segment_file_name(base_offset, LOG_EXTENSION));
        let index_path = dir.join(segment_file_name(base_offset, INDEX_EXTENSION));
        let time_path = dir.join(segment_file_name(base_offset, TIME_INDEX_EXTENSION));
        let log = open_rw(&log_path, fresh, fresh)?;
        let index = open_rw(&index_path, true, fresh)?;
        let time = open_rw(&time_path, true, fresh)?;
        Ok(Self {
            base_offset,
            log_path,
            log,
            offset_index: IndexFile::new(index, index_path, 0),
            time_index: IndexFile::new(time, time_path, 0),
            written_bytes: AtomicU64::new(0),
            visible_bytes: AtomicU64::new(0),
            end_offset: AtomicU64::new(base_offset),
            max_timestamp_ms: AtomicI64::new(i64::MIN),
            sealed: AtomicBool::new(false),
        })
    }

    pub(crate) fn base_offset(&self) -> u64 {
        self.base_offset
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn log_file(&self) -> &File {
        &self.log
    }

    pub(crate) fn end_offset(&self) -> u64 {
        self.end_offset.load(Ordering::Acquire)
    }

    pub(crate) fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms.load(Ordering::Acquire)
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub(crate) fn mark_sealed(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    /// Bytes of all three files.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.written_bytes.load(Ordering::Acquire)
            + self.offset_index.size_bytes()
            + self.time_index.size_bytes()
    }

    /// Records bytes written but not yet visible (so `size_bytes` counts them).
    pub(crate) fn set_written_bytes(&self, written_bytes: u64) {
        self.written_bytes.store(written_bytes, Ordering::Release);
    }

    /// Makes everything in `state` visible to readers. Called before the log's
    /// global end offset is raised, so a reader that sees the new end sees this too.
    pub(crate) fn publish(&self, state: SegmentState) {
        self.written_bytes
            .store(state.written_bytes, Ordering::Release);
        self.max_timestamp_ms
            .fetch_max(state.max_timestamp_ms, Ordering::AcqRel);
        self.visible_bytes
            .store(state.written_bytes, Ordering::Release);
        self.end_offset.store(state.end_offset, Ordering::Release);
    }

    /// Removes the three files (the segment must already be out of the segment list).
    pub(crate) fn delete_files(&self) -> Result<(), LogError> {
        for path in [
            &self.log_path,
            self.offset_index.path(),
            self.time_index.path(),
        ] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("delete", path, e)),
            }
        }
        Ok(())
    }

    fn corrupt(&self, position: u64, reason: impl Into<String>) -> LogError {
        LogError::corrupt(&self.log_path, position, reason)
    }

    /// Where to start scanning for `offset`: the last indexed batch at or before it.
    fn seek(&self, offset: u64) -> Result<(u64, u64), LogError> {
        let relative = u32::try_from(offset.saturating_sub(self.base_offset)).unwrap_or(u32::MAX);
        let entry = self
            .offset_index
            .floor(|e| e.relative_offset <= relative)
            .map_err(|e| LogError::io("read index", self.offset_index.path(), e))?;
        Ok(entry.map_or((0, self.base_offset), |e| {
            (
                u64::from(e.position),
                self.base_offset + u64::from(e.relative_offset),
            )
        }))
    }

    /// Visits the verified batches of this segment that hold offsets at or after
    /// `from` and below `visible_end`, in order, until `visit` returns `false`.
    /// Returns the offset right after the last batch scanned (skipped ones included).
    ///
    /// The offset index only picks where to start: if the batch an entry points at is
    /// not the batch the entry names (a damaged index), the scan restarts from the
    /// start of the segment, so index damage costs time, never data.
    pub(crate) fn scan_from(
        &self,
        from: u64,
        visible_end: u64,
        mut visit: impl FnMut(&VerifiedBatch<'_>) -> bool,
    ) -> Result<u64, LogError> {
        let (position, expected) = self.seek(from)?;
        match self.scan_at(position, expected, from, visible_end, &mut visit) {
            Err(ScanFailure::IndexMismatch { reason, .. })
                if (position, expected) != (0, self.base_offset) =>
            {
                tracing::warn!(
                    index = %self.offset_index.path().display(),
                    position,
                    %reason,
                    "offset index entry does not match the log; scanning the segment from its start"
                );
                self.scan_at(0, self.base_offset, from, visible_end, &mut visit)
                    .map_err(|failure| failure.into_error(self))
            }
            result => result.map_err(|failure| failure.into_error(self)),
        }
    }

    /// [`Segment::scan_from`] from byte `position`, where the batch at `expected`
    /// should start.
    fn scan_at(
        &self,
        position: u64,
        mut expected: u64,
        from: u64,
        visible_end: u64,
        visit: &mut impl FnMut(&VerifiedBatch<'_>) -> bool,
    ) -> Result<u64, ScanFailure> {
        let visible_bytes = self.visible_bytes.load(Ordering::Acquire);
        let mut scanner = BatchScanner::new(&self.log, position, visible_bytes, READ_CHUNK_BYTES);
        let mut first = true;
        while expected < visible_end {
            let scanned = match scanner.next_batch() {
                Ok(Some(scanned)) => scanned,
                Ok(None) => break,
                Err(ScanError::Io(e)) => {
                    return Err(ScanFailure::Error(LogError::io("read", &self.log_path, e)))
                }
                Err(ScanError::Damaged { position, reason }) if first => {
                    return Err(ScanFailure::IndexMismatch { position, reason })
                }
                Err(ScanError::Damaged { position, reason }) => {
                    return Err(ScanFailure::Error(self.corrupt(position, reason)))
                }
            };
            let header = scanned.header;
            if header.base_offset != expected {
                let reason = format!(
                    "batch has base offset {}, expected {expected}",
                    header.base_offset
                );
                if first {
                    let position = scanned.position;
                    return Err(ScanFailure::IndexMismatch { position, reason });
                }
                return Err(ScanFailure::Error(self.corrupt(scanned.position, reason)));
            }
            first = false;
            expected = header.next_offset();
            if expected <= from {
                continue;
            }
            let decoded = decode_batch(&scanned.bytes).map_err(|e| {
                let reason = format!("batch at offset {}: {e}", header.base_offset);
                ScanFailure::Error(self.corrupt(scanned.position, reason))
            })?;
            let verified = VerifiedBatch {
                bytes: &scanned.bytes,
                decoded,
            };
            if !visit(&verified) {
                break;
            }
        }
        Ok(expected)
    }

    /// The first offset below `visible_end` of this segment whose record timestamp is
    /// at least `timestamp_ms`, using the time index to skip ahead. A time entry
    /// `(T, r)` is trusted only once the scan confirms it: every batch between the
    /// previous entry and batch `r` is older than `T`, and batch `r` starts at its
    /// offset with exactly `T` as maximum (how the writer makes entries). Otherwise
    /// the segment is scanned from its start.
    pub(crate) fn find_timestamp(
        &self,
        timestamp_ms: i64,
        visible_end: u64,
    ) -> Result<Option<u64>, LogError> {
        let read_error = |e| LogError::io("read time index", self.time_index.path(), e);
        let floor = self
            .time_index
            .floor_at(|e| e.timestamp_ms <= timestamp_ms)
            .map_err(read_error)?;
        if let Some((index, entry)) = floor {
            let previous = match index.checked_sub(1) {
                Some(previous) => Some(self.time_index.entry(previous).map_err(read_error)?),
                None => None,
            };
            match self.find_timestamp_from(timestamp_ms, visible_end, Some((entry, previous)))? {
                TimestampSearch::Done(found) => return Ok(found),
                TimestampSearch::EntryMismatch => tracing::warn!(
                    index = %self.time_index.path().display(),
                    relative_offset = entry.relative_offset,
                    "time index entry does not match the log; scanning the segment from its start"
                ),
            }
        }
        match self.find_timestamp_from(timestamp_ms, visible_end, None)? {
            TimestampSearch::Done(found) => Ok(found),
            TimestampSearch::EntryMismatch => Ok(None),
        }
    }

    /// Scans for `timestamp_ms` from the segment start, or from the entry before
    /// `entry` while checking `entry` (see [`Segment::find_timestamp`]).
    fn find_timestamp_from(
        &self,
        timestamp_ms: i64,
        visible_end: u64,
        entry: Option<(TimeIndexEntry, Option<TimeIndexEntry>)>,
    ) -> Result<TimestampSearch, LogError> {
        let relative = |e: TimeIndexEntry| self.base_offset + u64::from(e.relative_offset);
        let from = entry
            .and_then(|(_, previous)| previous)
            .map_or(self.base_offset, relative);
        let mut to_check = entry.map(|(entry, _)| (entry.timestamp_ms, relative(entry)));
        let mut found = None;
        let mut mismatch = false;
        self.scan_from(from, visible_end, |batch| {
            let header = &batch.decoded.header;
            if let Some((entry_ms, entry_offset)) = to_check {
                let confirmed =
                    header.base_offset == entry_offset && header.max_timestamp_ms == entry_ms;
                if confirmed {
                    to_check = None;
                } else if header.base_offset >= entry_offset || header.max_timestamp_ms >= entry_ms
                {
                    mismatch = true;
                    return false;
                } else {
                    return true;
                }
            }
            if header.max_timestamp_ms < timestamp_ms {
                return true;
            }
            found = batch
                .decoded
                .records()
                .zip(header.base_offset..)
                .find(|(record, offset)| *offset >= from && record.timestamp_ms >= timestamp_ms)
                .map(|(_, offset)| offset)
                .filter(|offset| *offset < visible_end);
            found.is_none()
        })?;
        if mismatch || to_check.is_some() {
            return Ok(TimestampSearch::EntryMismatch);
        }
        Ok(TimestampSearch::Done(found))
    }
}

/// The outcome of one time-index-guided search.
enum TimestampSearch {
    Done(Option<u64>),
    /// The time entry does not describe the batch it names.
    EntryMismatch,
}

/// A batch whose CRC and records checked out, with the buffer it lives in.
pub(crate) struct VerifiedBatch<'a> {
    bytes: &'a Bytes,
    pub(crate) decoded: DecodedBatch<'a>,
}

impl VerifiedBatch<'_> {
    /// The records of the batch with offsets in `[from, visible_end)`; keys and
    /// values share the batch's buffer.
    pub(crate) fn records(
        &self,
        from: u64,
        visible_end: u64,
    ) -> impl Iterator<Item = StoredRecord> + '_ {
        self.decoded
            .records()
            .zip(self.decoded.header.base_offset..)
            .filter(move |(_, offset)| *offset >= from && *offset < visible_end)
            .map(|(record, offset)| StoredRecord {
                offset,
                timestamp_ms: record.timestamp_ms,
                key: record.key.map(|k| self.bytes.slice_ref(k)),
                value: self.bytes.slice_ref(record.value),
            })
    }
}

/// Why a scan stopped before the end of the readable bytes.
#[derive(Debug)]
pub(crate) enum ScanError {
    Io(io::Error),
    /// The bytes at `position` are not a whole, well-formed batch header and body.
    Damaged {
        position: u64,
        reason: String,
    },
}

/// Why [`Segment::scan_at`] failed.
enum ScanFailure {
    /// The first batch is not where the index said (or not whole); with position 0
    /// this is data damage like any other.
    IndexMismatch {
        position: u64,
        reason: String,
    },
    Error(LogError),
}

impl ScanFailure {
    fn into_error(self, segment: &Segment) -> LogError {
        match self {
            ScanFailure::IndexMismatch { position, reason } => segment.corrupt(position, reason),
            ScanFailure::Error(error) => error,
        }
    }
}

/// A batch found by a [`BatchScanner`]: header checked, CRC not yet.
pub(crate) struct ScannedBatch {
    pub(crate) position: u64,
    pub(crate) header: BatchHeader,
    pub(crate) bytes: Bytes,
}

/// Walks the batches of a `.log` file from a position up to a byte limit with
/// chunked positioned reads. Holds at most one chunk (or one batch, if larger).
pub(crate) struct BatchScanner<'a> {
    file: &'a File,
    position: u64,
    limit: u64,
    chunk: Bytes,
    chunk_start: u64,
    chunk_bytes: usize,
}

impl<'a> BatchScanner<'a> {
    pub(crate) fn new(file: &'a File, position: u64, limit: u64, chunk_bytes: usize) -> Self {
        Self {
            file,
            position,
            limit,
            chunk: Bytes::new(),
            chunk_start: position,
            chunk_bytes,
        }
    }

    /// File position of the next batch.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Makes `[position, position + need)` available in the chunk.
    fn fill(&mut self, need: u64) -> io::Result<Bytes> {
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        if self.position < self.chunk_start || self.position + need > chunk_end {
            let want = need
                .max(self.chunk_bytes as u64)
                .min(self.limit - self.position);
            let mut buffer = BytesMut::zeroed(want as usize);
            self.file.read_exact_at(&mut buffer, self.position)?;
            self.chunk = buffer.freeze();
            self.chunk_start = self.position;
        }
        let start = (self.position - self.chunk_start) as usize;
        Ok(self.chunk.slice(start..start + need as usize))
    }

    /// The next batch, `None` at the limit.
    pub(crate) fn next_batch(&mut self) -> Result<Option<ScannedBatch>, ScanError> {
        let position = self.position;
        let left = self.limit.saturating_sub(position);
        if left == 0 {
            return Ok(None);
        }
        let damaged = |reason: String| ScanError::Damaged { position, reason };
        if left < HEADER_BYTES as u64 {
            return Err(damaged(format!(
                "{left} trailing bytes are too short for a batch header"
            )));
        }
        let head = self.fill(HEADER_BYTES as u64).map_err(ScanError::Io)?;
        let header = decode_header(&head).map_err(|e| damaged(format!("bad batch header: {e}")))?;
        let length = u64::from(header.length);
        if length > left {
            return Err(damaged(format!(
                "batch of {length} bytes runs past the end of the data ({left} bytes left)"
            )));
        }
        let bytes = self.fill(length).map_err(ScanError::Io)?;
        self.position += length;
        Ok(Some(ScannedBatch {
            position,
            header,
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        let name = segment_file_name(1234, LOG_EXTENSION);
        assert_eq!(name, "00000000000000001234.log");
        assert_eq!(parse_log_file_name(&name), Some(1234));
        assert_eq!(parse_log_file_name("00000000000000001234.index"), None);
        assert_eq!(parse_log_file_name("1234.log"), None);
        assert_eq!(parse_log_file_name("0000000000000000123x.log"), None);
        assert_eq!(
            parse_log_file_name(&segment_file_name(u64::MAX, LOG_EXTENSION)),
            Some(u64::MAX)
        );
    }
}
