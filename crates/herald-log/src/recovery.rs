//! Crash recovery: everything `PartitionLog::open` does before the log serves anything.
//!
//! Owns: listing segment files, checking or rebuilding sealed segments' indexes,
//! scanning and truncating the tail segment, finding offset gaps, and the
//! [`RecoveryReport`].
//!
//! Rules:
//! - Tail (newest) segment: every batch is read and verified (header, length bounds,
//!   CRC, records, offset continuity from the segment's base offset). The file is
//!   truncated at the first batch that fails, and both indexes are rebuilt.
//! - Sealed segments: their data is not read in full. Index files are kept if sane
//!   (size a multiple of the entry size, entries strictly increasing and inside the
//!   segment, the last offset entry pointing at a batch header with the right base
//!   offset); otherwise they are rebuilt by a verifying scan. Sealed data is never
//!   truncated: damage there is reported as `Corrupt` when read.
//! - The batches after a sealed segment's last index entry are verified to learn
//!   where the segment ends, so a missing segment shows up as an [`OffsetGap`].
//! - A sealed time index must end with the segment's largest timestamp (checked by
//!   reading from the batch its last entry names); a truncated one is rebuilt, since
//!   it would make timestamp lookups skip the segment. Reads never trust an index
//!   entry they cannot confirm against the batch it names (see [`crate::segment`]).

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{decode_batch, decode_header, HEADER_BYTES};
use crate::config::LogConfig;
use crate::error::LogError;
use crate::index::{check_index_file, IndexEntry, Indexer, OffsetIndexEntry, TimeIndexEntry};
use crate::segment::{parse_log_file_name, BatchScanner, ScanError, Segment, SegmentState};
use crate::writer::{now_ms, ActiveState};

/// Bytes per positioned read while scanning a whole segment.
const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// What `open()` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segments in the log after recovery.
    pub segments: usize,
    /// Offsets the segments hold (gaps excluded).
    pub records: u64,
    /// Bytes cut from the end of the tail segment (torn or corrupt batches).
    pub truncated_bytes: u64,
    /// Sealed segments whose index files were missing or insane and were rebuilt
    /// (the tail segment's indexes are always rebuilt and not counted).
    pub rebuilt_indexes: usize,
    /// Offset ranges no segment holds (a segment file went missing).
    pub gaps: Vec<OffsetGap>,
    pub start_offset: u64,
    pub next_offset: u64,
    pub duration: Duration,
}

/// Offsets `[start, end)` that are missing from the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetGap {
    pub start: u64,
    pub end: u64,
}

/// A recovered log, ready for the writer.
pub(crate) struct Recovered {
    pub(crate) segments: Vec<Arc<Segment>>,
    pub(crate) active: ActiveState,
    pub(crate) report: RecoveryReport,
}

pub(crate) fn recover(dir: &Path, config: &LogConfig) -> Result<Recovered, LogError> {
    let started = Instant::now();
    fs::create_dir_all(dir).map_err(|e| LogError::io("create directory", dir, e))?;
    let bases = list_segments(dir)?;
    let mut report = RecoveryReport::default();
    let mut segments = Vec::with_capacity(bases.len().max(1));
    let active = match bases.split_last() {
        None => {
            segments.push(Arc::new(Segment::open(dir, 0, true)?));
            sync_dir(dir)?;
            ActiveState::empty(0, config.index_interval_bytes)
        }
        Some((&tail_base, sealed)) => {
            for (index, &base_offset) in sealed.iter().enumerate() {
                let next_base = bases.get(index + 1).copied().unwrap_or(tail_base);
                let (segment, rebuilt) = recover_sealed(dir, base_offset, next_base, config)?;
                report.rebuilt_indexes += usize::from(rebuilt);
                segments.push(Arc::new(segment));
            }
            let (segment, active, truncated_bytes) = recover_tail(dir, tail_base, config)?;
            report.truncated_bytes = truncated_bytes;
            segments.push(Arc::new(segment));
            active
        }
    };
    report.gaps = find_gaps(dir, &segments);
    report.segments = segments.len();
    report.records = count_offsets(&segments);
    report.start_offset = segments.first().map_or(0, |s| s.base_offset());
    report.next_offset = active.next_offset;
    report.duration = started.elapsed();
    Ok(Recovered {
        segments,
        active,
        report,
    })
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("list directory", dir, e))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("list directory", dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_log_file_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("fsync directory", dir, e))
}

fn log_bytes(segment: &Segment) -> Result<u64, LogError> {
    segment
        .log_file()
        .metadata()
        .map(|m| m.len())
        .map_err(|e| LogError::io("stat", segment.log_path(), e))
}

/// The result of a verifying scan over a segment's batches.
struct ScanSummary {
    /// Offset after the last good batch.
    end_offset: u64,
    /// Bytes of whole, good batches from the start of the file.
    valid_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    damage: Option<String>,
    indexer: Indexer,
    first_timestamp_ms: Option<i64>,
}

/// Index entries found by a scan, written to the index files in bounded chunks.
struct IndexRewrite<'a> {
    segment: &'a Segment,
    offset_entries: Vec<u8>,
    time_entries: Vec<u8>,
}

/// Bytes of index entries buffered before they are written out.
const REWRITE_CHUNK_BYTES: usize = 64 * 1024;

impl<'a> IndexRewrite<'a> {
    /// Empties both index files of `segment`.
    fn start(segment: &'a Segment) -> Result<Self, LogError> {
        let offsets = &segment.offset_index;
        offsets
            .truncate(0)
            .map_err(|e| LogError::io("rebuild index", offsets.path(), e))?;
        let times = &segment.time_index;
        times
            .truncate(0)
            .map_err(|e| LogError::io("rebuild time index", times.path(), e))?;
        Ok(Self {
            segment,
            offset_entries: Vec::new(),
            time_entries: Vec::new(),
        })
    }

    fn push(
        &mut self,
        offset_entry: Option<OffsetIndexEntry>,
        time_entry: Option<TimeIndexEntry>,
    ) -> Result<(), LogError> {
        offset_entry.inspect(|e| e.encode_into(&mut self.offset_entries));
        time_entry.inspect(|e| e.encode_into(&mut self.time_entries));
        if self.offset_entries.len() + self.time_entries.len() >= REWRITE_CHUNK_BYTES {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), LogError> {
        let offsets = &self.segment.offset_index;
        offsets
            .append(&self.offset_entries)
            .map_err(|e| LogError::io("rebuild index", offsets.path(), e))?;
        self.offset_entries.clear();
        let times = &self.segment.time_index;
        times
            .append(&self.time_entries)
            .map_err(|e| LogError::io("rebuild time index", times.path(), e))?;
        self.time_entries.clear();
        Ok(())
    }
}

/// Reads and verifies every batch from the start of `segment`, up to the first
/// damaged one, and rewrites both index files with the entries the good ones earn.
/// `seal` adds the final time entry of a sealed segment.
fn scan_segment(
    segment: &Segment,
    log_bytes: u64,
    config: &LogConfig,
    seal: bool,
) -> Result<ScanSummary, LogError> {
    let mut summary = ScanSummary {
        end_offset: segment.base_offset(),
        valid_bytes: 0,
        damage: None,
        indexer: Indexer::new(segment.base_offset(), config.index_interval_bytes),
        first_timestamp_ms: None,
    };
    let mut rewrite = IndexRewrite::start(segment)?;
    let mut scanner = BatchScanner::new(segment.log_file(), 0, log_bytes, SCAN_CHUNK_BYTES);
    loop {
        let scanned = match scanner.next_batch() {
            Ok(Some(scanned)) => scanned,
            Ok(None) => break,
            Err(ScanError::Io(e)) => return Err(LogError::io("read", segment.log_path(), e)),
            Err(ScanError::Damaged { reason, .. }) => {
                summary.damage = Some(reason);
                break;
            }
        };
        let header = scanned.header;
        if header.base_offset != summary.end_offset {
            summary.damage = Some(format!(
                "batch has base offset {}, expected {}",
                header.base_offset, summary.end_offset
            ));
            break;
        }
        if let Err(e) = decode_batch(&scanned.bytes) {
            summary.damage = Some(format!("batch at offset {}: {e}", header.base_offset));
            break;
        }
        let (offset_entry, time_entry) = summary.indexer.on_batch(&header, scanned.position);
        rewrite.push(offset_entry, time_entry)?;
        summary
            .first_timestamp_ms
            .get_or_insert(header.first_timestamp_ms);
        summary.end_offset = header.next_offset();
        summary.valid_bytes = scanner.position();
    }
    if seal {
        rewrite.push(None, summary.indexer.take_time_entry())?;
    }
    rewrite.write_out()?;
    Ok(summary)
}

fn recover_tail(
    dir: &Path,
    base_offset: u64,
    config: &LogConfig,
) -> Result<(Segment, ActiveState, u64), LogError> {
    let segment = Segment::open(dir, base_offset, false)?;
    let log_bytes = log_bytes(&segment)?;
    let summary = scan_segment(&segment, log_bytes, config, false)?;
    let truncated_bytes = log_bytes - summary.valid_bytes;
    if let Some(reason) = &summary.damage {
        tracing::warn!(
            path = %segment.log_path().display(),
            truncated_bytes,
            position = summary.valid_bytes,
            %reason,
            "truncating the torn or corrupt end of the log"
        );
        let log = segment.log_file();
        log.set_len(summary.valid_bytes)
            .and_then(|()| log.sync_data())
            .map_err(|e| LogError::io("truncate", segment.log_path(), e))?;
    }
    segment.publish(SegmentState {
        written_bytes: summary.valid_bytes,
        end_offset: summary.end_offset,
        max_timestamp_ms: summary.indexer.max_timestamp_ms().unwrap_or(i64::MIN),
    });
    let active = ActiveState {
        position: summary.valid_bytes,
        next_offset: summary.end_offset,
        indexer: summary.indexer,
        first_append_ms: summary.first_timestamp_ms.map(|first| first.min(now_ms())),
    };
    Ok((segment, active, truncated_bytes))
}

/// What a sane pair of sealed index files says.
struct SaneIndexes {
    offset_entries: u64,
    time_entries: u64,
    last_offset_entry: Option<OffsetIndexEntry>,
    last_time_entry: Option<TimeIndexEntry>,
    max_timestamp_ms: i64,
}

fn recover_sealed(
    dir: &Path,
    base_offset: u64,
    next_base: u64,
    config: &LogConfig,
) -> Result<(Segment, bool), LogError> {
    let segment = Segment::open(dir, base_offset, false)?;
    let log_bytes = log_bytes(&segment)?;
    let span_offsets = next_base.saturating_sub(base_offset);
    let checked = match check_sealed_indexes(&segment, log_bytes, span_offsets)? {
        Ok(sane) => {
            segment.offset_index.assume_entries(sane.offset_entries);
            segment.time_index.assume_entries(sane.time_entries);
            let end = sealed_end(&segment, sane.last_offset_entry, log_bytes)?;
            match check_time_maximum(&segment, &sane, &end, log_bytes)? {
                Ok(()) => Ok(SegmentState {
                    written_bytes: log_bytes,
                    end_offset: end.end_offset.unwrap_or(next_base),
                    max_timestamp_ms: sane.max_timestamp_ms,
                }),
                Err(reason) => Err(reason),
            }
        }
        Err(reason) => Err(reason),
    };
    let (state, rebuilt) = match checked {
        Ok(state) => (state, false),
        Err(reason) => {
            tracing::warn!(path = %segment.log_path().display(), %reason, "rebuilding the indexes of a sealed segment");
            (
                rebuild_sealed(&segment, log_bytes, next_base, config)?,
                true,
            )
        }
    };
    segment.publish(state);
    segment.mark_sealed();
    Ok((segment, rebuilt))
}

/// Rebuilds a sealed segment's indexes from a verifying scan. Damage is logged but
/// the data is kept: reads of the damaged part report `Corrupt`.
fn rebuild_sealed(
    segment: &Segment,
    log_bytes: u64,
    next_base: u64,
    config: &LogConfig,
) -> Result<SegmentState, LogError> {
    let summary = scan_segment(segment, log_bytes, config, true)?;
    let offsets = &segment.offset_index;
    offsets
        .file()
        .sync_data()
        .map_err(|e| LogError::io("fdatasync", offsets.path(), e))?;
    let times = &segment.time_index;
    times
        .file()
        .sync_data()
        .map_err(|e| LogError::io("fdatasync", times.path(), e))?;
    let end_offset = match &summary.damage {
        None => summary.end_offset,
        Some(reason) => {
            tracing::warn!(
                path = %segment.log_path().display(),
                position = summary.valid_bytes,
                %reason,
                "sealed segment is damaged; reads of the damaged part will fail"
            );
            next_base.max(summary.end_offset)
        }
    };
    Ok(SegmentState {
        written_bytes: log_bytes,
        end_offset,
        max_timestamp_ms: summary.indexer.max_timestamp_ms().unwrap_or(i64::MIN),
    })
}

fn check_sealed_indexes(
    segment: &Segment,
    log_bytes: u64,
    span_offsets: u64,
) -> Result<Result<SaneIndexes, String>, LogError> {
    let offsets =
        check_index_file::<OffsetIndexEntry>(segment.offset_index.file(), span_offsets, |e| {
            if u64::from(e.position) < log_bytes {
                Ok(())
            } else {
                Err(format!(
                    "offset index points to byte {} of a {log_bytes}-byte log",
                    e.position
                ))
            }
        })
        .map_err(|e| LogError::io("read index", segment.offset_index.path(), e))?;
    let times =
        check_index_file::<TimeIndexEntry>(segment.time_index.file(), span_offsets, |_| Ok(()))
            .map_err(|e| LogError::io("read time index", segment.time_index.path(), e))?;
    let ((offset_entries, last_offset_entry), (time_entries, last_time_entry)) =
        match (offsets, times) {
            (Ok(offsets), Ok(times)) => (offsets, times),
            (Err(reason), _) => return Ok(Err(format!("offset index: {reason}"))),
            (_, Err(reason)) => return Ok(Err(format!("time index: {reason}"))),
        };
    if (log_bytes > 0) != (offset_entries > 0 && time_entries > 0) {
        return Ok(Err(format!(
            "{offset_entries} offset and {time_entries} time entries for a {log_bytes}-byte log"
        )));
    }
    if let Some(entry) = last_offset_entry {
        let expected = segment.base_offset() + u64::from(entry.relative_offset);
        let mut head = [0u8; HEADER_BYTES];
        let read = segment
            .log_file()
            .read_exact_at(&mut head, u64::from(entry.position));
        let found = read
            .ok()
            .and_then(|()| decode_header(&head).ok())
            .map(|h| h.base_offset);
        if found != Some(expected) {
            return Ok(Err(format!(
                "last offset entry expects offset {expected} at byte {}",
                entry.position
            )));
        }
    }
    Ok(Ok(SaneIndexes {
        offset_entries,
        time_entries,
        last_offset_entry,
        last_time_entry,
        max_timestamp_ms: last_time_entry.map_or(i64::MIN, |e| e.timestamp_ms),
    }))
}

/// What the batches after a sealed segment's last offset entry say.
struct SealedEnd {
    /// The segment's end offset, `None` (logged) if those batches are damaged.
    end_offset: Option<u64>,
    /// The largest batch maximum timestamp among the good ones.
    max_timestamp_ms: Option<i64>,
}

/// Verifies the batches after the last offset entry.
fn sealed_end(
    segment: &Segment,
    last_entry: Option<OffsetIndexEntry>,
    log_bytes: u64,
) -> Result<SealedEnd, LogError> {
    let (position, mut expected) = last_entry.map_or((0, segment.base_offset()), |e| {
        (
            u64::from(e.position),
            segment.base_offset() + u64::from(e.relative_offset),
        )
    });
    let mut max_timestamp_ms: Option<i64> = None;
    let mut scanner = BatchScanner::new(segment.log_file(), position, log_bytes, SCAN_CHUNK_BYTES);
    let damage = loop {
        match scanner.next_batch() {
            Ok(None) => {
                return Ok(SealedEnd {
                    end_offset: Some(expected),
                    max_timestamp_ms,
                })
            }
            Ok(Some(scanned)) if scanned.header.base_offset != expected => {
                break format!(
                    "batch has base offset {}, expected {expected}",
                    scanned.header.base_offset
                )
            }
            Ok(Some(scanned)) => match decode_batch(&scanned.bytes) {
                Ok(_) => {
                    let batch_max = scanned.header.max_timestamp_ms;
                    max_timestamp_ms =
                        Some(max_timestamp_ms.map_or(batch_max, |m| m.max(batch_max)));
                    expected = scanned.header.next_offset();
                }
                Err(e) => break format!("batch at offset {expected}: {e}"),
            },
            Err(ScanError::Damaged { reason, .. }) => break reason,
            Err(ScanError::Io(e)) => return Err(LogError::io("read", segment.log_path(), e)),
        }
    };
    tracing::warn!(
        path = %segment.log_path().display(),
        position = scanner.position(),
        reason = %damage,
        "sealed segment is damaged near its end; reads of the damaged part will fail"
    );
    Ok(SealedEnd {
        end_offset: None,
        max_timestamp_ms,
    })
}

/// Checks that the last time entry holds the segment's largest timestamp: the batch it
/// names starts at its offset with exactly its timestamp as maximum (how the writer
/// makes entries), and no later batch is newer. Catches a truncated or damaged time
/// index, which would otherwise make timestamp lookups skip the segment. Reads the
/// segment from that batch on: with append-time timestamps, only its last batches.
fn check_time_maximum(
    segment: &Segment,
    sane: &SaneIndexes,
    end: &SealedEnd,
    log_bytes: u64,
) -> Result<Result<(), String>, LogError> {
    let Some(entry) = sane.last_time_entry else {
        return Ok(Ok(()));
    };
    if let Some(tail_max) = end.max_timestamp_ms.filter(|m| *m > entry.timestamp_ms) {
        return Ok(Err(format!(
            "time index maximum {} is below timestamp {tail_max} in the segment",
            entry.timestamp_ms
        )));
    }
    let target = segment.base_offset() + u64::from(entry.relative_offset);
    let floor = segment
        .offset_index
        .floor(|e| e.relative_offset <= entry.relative_offset)
        .map_err(|e| LogError::io("read index", segment.offset_index.path(), e))?;
    let (position, mut expected) = floor.map_or((0, segment.base_offset()), |e| {
        (
            u64::from(e.position),
            segment.base_offset() + u64::from(e.relative_offset),
        )
    });
    let mut scanner = BatchScanner::new(segment.log_file(), position, log_bytes, SCAN_CHUNK_BYTES);
    let mut named_found = false;
    loop {
        let header = match scanner.next_batch() {
            Ok(Some(scanned)) => scanned.header,
            // Damage past the named batch is reported by reads; before it, the entry
            // cannot be checked.
            Ok(None) | Err(ScanError::Damaged { .. }) => break,
            Err(ScanError::Io(e)) => return Err(LogError::io("read", segment.log_path(), e)),
        };
        if header.base_offset != expected {
            break;
        }
        expected = header.next_offset();
        if named_found && header.max_timestamp_ms > entry.timestamp_ms {
            return Ok(Err(format!(
                "time index maximum {} is below timestamp {} at offset {}",
                entry.timestamp_ms, header.max_timestamp_ms, header.base_offset
            )));
        }
        if header.base_offset == target {
            if header.max_timestamp_ms != entry.timestamp_ms {
                break;
            }
            named_found = true;
        } else if header.base_offset > target && !named_found {
            break;
        }
    }
    if named_found {
        return Ok(Ok(()));
    }
    Ok(Err(format!(
        "last time entry ({}, offset {target}) does not name a batch with that maximum",
        entry.timestamp_ms
    )))
}

/// Offset ranges between one segment's end and the next one's base.
fn find_gaps(dir: &Path, segments: &[Arc<Segment>]) -> Vec<OffsetGap> {
    let mut gaps = Vec::new();
    for pair in segments.windows(2) {
        let [earlier, later] = pair else { continue };
        let (end, next_base) = (earlier.end_offset(), later.base_offset());
        if end < next_base {
            tracing::warn!(
                dir = %dir.display(),
                missing_start = end,
                missing_end = next_base,
                "offsets are missing from the log: a segment file is gone"
            );
            gaps.push(OffsetGap {
                start: end,
                end: next_base,
            });
        } else if end > next_base {
            tracing::warn!(
                dir = %dir.display(),
                segment = earlier.base_offset(),
                end,
                next_base,
                "segments overlap; the later segment wins"
            );
        }
    }
    gaps
}

fn count_offsets(segments: &[Arc<Segment>]) -> u64 {
    segments
        .iter()
        .enumerate()
        .map(|(index, segment)| {
            let end = segments
                .get(index + 1)
                .map_or(segment.end_offset(), |next| {
                    segment.end_offset().min(next.base_offset())
                });
            end.saturating_sub(segment.base_offset())
        })
        .sum()
}
