//! A segment's two sparse indexes: the offset index (`.index`) and the time index
//! (`.timeindex`), their entry codecs, their files and the rule that builds them.
//!
//! Entry layouts (little-endian, fixed size, no header):
//!
//! ```text
//! .index      8 bytes: relative_offset u32 | position u32
//! .timeindex 12 bytes: timestamp_ms i64    | relative_offset u32
//! ```
//!
//! `relative_offset` is a batch's base offset minus the segment's base offset and
//! `position` the batch's byte position in the `.log` file. An offset entry is written
//! for the first batch of a segment and then for the first batch after every
//! `index_interval_bytes` of log. A time entry `(T, r)` says: the largest record
//! timestamp in the segment up to and including batch `r` is `T`, and every record
//! before batch `r` is older than `T`. Time entries are written when that maximum
//! grows, at most once per `index_interval_bytes`, plus one when the segment is sealed,
//! so a sealed segment's last time entry holds its largest timestamp.
//!
//! Invariants: in both files entries strictly increase in every field; an index only
//! ever points at batch starts. Index files are a cache: recovery rebuilds any that
//! look wrong, and readers re-verify the batch an entry points to.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::batch::BatchHeader;

/// Size of one `.index` entry.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Size of one `.timeindex` entry.
pub const TIME_ENTRY_BYTES: usize = 12;

/// One `.index` entry: the batch at `relative_offset` starts at byte `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetIndexEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One `.timeindex` entry (see the module docs for its meaning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeIndexEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

/// Decodes the `.index` entry at the start of `bytes`; `None` if fewer than 8 bytes.
pub fn decode_offset_entry(bytes: &[u8]) -> Option<OffsetIndexEntry> {
    let relative_offset = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    let position = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    Some(OffsetIndexEntry {
        relative_offset,
        position,
    })
}

/// Decodes the `.timeindex` entry at the start of `bytes`; `None` if fewer than 12 bytes.
pub fn decode_time_entry(bytes: &[u8]) -> Option<TimeIndexEntry> {
    let timestamp_ms = i64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let relative_offset = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    Some(TimeIndexEntry {
        timestamp_ms,
        relative_offset,
    })
}

/// A fixed-size index entry.
pub trait IndexEntry: Copy + Sized {
    const BYTES: usize;
    fn decode(bytes: &[u8]) -> Option<Self>;
    fn encode_into(&self, out: &mut Vec<u8>);
    /// Whether `self` may follow `previous` (every field strictly increases).
    fn follows(&self, previous: &Self) -> bool;
    fn relative_offset(&self) -> u32;
}

impl IndexEntry for OffsetIndexEntry {
    const BYTES: usize = OFFSET_ENTRY_BYTES;
    fn decode(bytes: &[u8]) -> Option<Self> {
        decode_offset_entry(bytes)
    }
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
    fn follows(&self, previous: &Self) -> bool {
        self.relative_offset > previous.relative_offset && self.position > previous.position
    }
    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }
}

impl IndexEntry for TimeIndexEntry {
    const BYTES: usize = TIME_ENTRY_BYTES;
    fn decode(bytes: &[u8]) -> Option<Self> {
        decode_time_entry(bytes)
    }
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
    }
    fn follows(&self, previous: &Self) -> bool {
        self.timestamp_ms > previous.timestamp_ms && self.relative_offset > previous.relative_offset
    }
    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }
}

/// An index file shared by the writer (appends) and readers (positioned reads).
/// Only the first `len()` entries are ever read; the writer publishes a new length
/// after the entries are written.
#[derive(Debug)]
pub(crate) struct IndexFile<E> {
    file: File,
    path: PathBuf,
    entries: AtomicU64,
    _entry: PhantomData<E>,
}

impl<E: IndexEntry> IndexFile<E> {
    pub(crate) fn new(file: File, path: PathBuf, entries: u64) -> Self {
        Self {
            file,
            path,
            entries: AtomicU64::new(entries),
            _entry: PhantomData,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Number of published entries.
    pub(crate) fn len(&self) -> u64 {
        self.entries.load(Ordering::Acquire)
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.len() * E::BYTES as u64
    }

    pub(crate) fn entry(&self, index: u64) -> io::Result<E> {
        let mut raw = [0u8; 16];
        let slot = raw
            .get_mut(..E::BYTES)
            .ok_or_else(|| io::Error::other("entry too large"))?;
        self.file.read_exact_at(slot, index * E::BYTES as u64)?;
        E::decode(slot).ok_or_else(|| io::Error::other("short index entry"))
    }

    /// The last entry for which `at_or_before` holds, given that it holds for a
    /// prefix of the entries (binary search with positioned reads).
    pub(crate) fn floor(&self, at_or_before: impl Fn(&E) -> bool) -> io::Result<Option<E>> {
        Ok(self.floor_at(at_or_before)?.map(|(_, entry)| entry))
    }

    /// [`IndexFile::floor`] with the entry's position in the file.
    pub(crate) fn floor_at(
        &self,
        at_or_before: impl Fn(&E) -> bool,
    ) -> io::Result<Option<(u64, E)>> {
        let (mut low, mut high) = (0u64, self.len());
        let mut found = None;
        while low < high {
            let middle = low + (high - low) / 2;
            let entry = self.entry(middle)?;
            if at_or_before(&entry) {
                found = Some((middle, entry));
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        Ok(found)
    }

    /// Writes `encoded` (whole entries) after the published ones, then publishes them.
    pub(crate) fn append(&self, encoded: &[u8]) -> io::Result<()> {
        if encoded.is_empty() {
            return Ok(());
        }
        let count = (encoded.len() / E::BYTES) as u64;
        debug_assert_eq!(encoded.len() % E::BYTES, 0);
        self.file.write_all_at(encoded, self.size_bytes())?;
        self.entries.fetch_add(count, Ordering::AcqRel);
        Ok(())
    }

    /// Declares the first `entries` entries of the file valid (recovery checked them).
    pub(crate) fn assume_entries(&self, entries: u64) {
        self.entries.store(entries, Ordering::Release);
    }

    /// Drops everything past the first `entries` entries.
    pub(crate) fn truncate(&self, entries: u64) -> io::Result<()> {
        self.file.set_len(entries * E::BYTES as u64)?;
        self.entries.store(entries, Ordering::Release);
        Ok(())
    }
}

/// Why an index file failed its sanity check.
pub(crate) type InsaneReason = String;

/// Checks a whole index file at open: size a multiple of the entry size, entries
/// strictly increasing, every relative offset below `span_offsets`, and each entry
/// accepted by `accept`. Streams the file in bounded chunks. Returns the entry
/// count and the last entry.
pub(crate) fn check_index_file<E: IndexEntry>(
    file: &File,
    span_offsets: u64,
    mut accept: impl FnMut(&E) -> Result<(), InsaneReason>,
) -> io::Result<Result<(u64, Option<E>), InsaneReason>> {
    let size = file.metadata()?.len();
    if size % E::BYTES as u64 != 0 {
        return Ok(Err(format!(
            "size {size} is not a multiple of {} bytes",
            E::BYTES
        )));
    }
    let entries = size / E::BYTES as u64;
    let chunk_entries = 4096u64;
    let mut buffer = vec![0u8; (chunk_entries as usize) * E::BYTES];
    let mut previous: Option<E> = None;
    let mut done = 0u64;
    while done < entries {
        let count = chunk_entries.min(entries - done);
        let bytes = buffer
            .get_mut(..count as usize * E::BYTES)
            .unwrap_or_default();
        file.read_exact_at(bytes, done * E::BYTES as u64)?;
        for raw in bytes.chunks_exact(E::BYTES) {
            let Some(entry) = E::decode(raw) else {
                return Ok(Err("undecodable entry".to_string()));
            };
            if previous.is_some_and(|p| !entry.follows(&p)) {
                return Ok(Err(format!("entry {done} does not increase")));
            }
            if u64::from(entry.relative_offset()) >= span_offsets {
                return Ok(Err(format!("entry {done} points past the segment")));
            }
            if let Err(reason) = accept(&entry) {
                return Ok(Err(reason));
            }
            previous = Some(entry);
            done += 1;
        }
    }
    Ok(Ok((entries, previous)))
}

/// The rule that decides which index entries a sequence of batches gets. Used alike
/// by the writer, by tail recovery and by index rebuilds, so all three agree.
#[derive(Clone, Debug)]
pub(crate) struct Indexer {
    base_offset: u64,
    interval_bytes: u64,
    bytes_since_offset_entry: Option<u64>,
    bytes_since_time_entry: Option<u64>,
    last_time_entry_ms: Option<i64>,
    max_timestamp_ms: Option<i64>,
    offset_of_max: u64,
}

impl Indexer {
    pub(crate) fn new(base_offset: u64, interval_bytes: u32) -> Self {
        Self {
            base_offset,
            interval_bytes: u64::from(interval_bytes.max(1)),
            bytes_since_offset_entry: None,
            bytes_since_time_entry: None,
            last_time_entry_ms: None,
            max_timestamp_ms: None,
            offset_of_max: base_offset,
        }
    }

    /// Largest record timestamp seen so far.
    pub(crate) fn max_timestamp_ms(&self) -> Option<i64> {
        self.max_timestamp_ms
    }

    fn relative(&self, offset: u64) -> Option<u32> {
        u32::try_from(offset.checked_sub(self.base_offset)?).ok()
    }

    /// Accounts for the batch `header` written at byte `position`; returns the index
    /// entries it earns.
    pub(crate) fn on_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
    ) -> (Option<OffsetIndexEntry>, Option<TimeIndexEntry>) {
        let length = u64::from(header.length);
        let mut offset_entry = None;
        if self
            .bytes_since_offset_entry
            .is_none_or(|b| b >= self.interval_bytes)
        {
            if let (Some(relative_offset), Ok(position)) =
                (self.relative(header.base_offset), u32::try_from(position))
            {
                offset_entry = Some(OffsetIndexEntry {
                    relative_offset,
                    position,
                });
                self.bytes_since_offset_entry = Some(0);
            }
        }
        if let Some(bytes) = self.bytes_since_offset_entry.as_mut() {
            *bytes += length;
        }
        if self
            .max_timestamp_ms
            .is_none_or(|m| header.max_timestamp_ms > m)
        {
            self.max_timestamp_ms = Some(header.max_timestamp_ms);
            self.offset_of_max = header.base_offset;
        }
        let mut time_entry = None;
        if self
            .bytes_since_time_entry
            .is_none_or(|b| b >= self.interval_bytes)
        {
            time_entry = self.take_time_entry();
        }
        if let Some(bytes) = self.bytes_since_time_entry.as_mut() {
            *bytes += length;
        }
        (offset_entry, time_entry)
    }

    /// The time entry for the current maximum, if it is not indexed yet. Called per
    /// batch (at the interval) and once when the segment is sealed.
    pub(crate) fn take_time_entry(&mut self) -> Option<TimeIndexEntry> {
        let max = self.max_timestamp_ms?;
        if self.last_time_entry_ms.is_some_and(|last| last >= max) {
            return None;
        }
        let relative_offset = self.relative(self.offset_of_max)?;
        self.last_time_entry_ms = Some(max);
        self.bytes_since_time_entry = Some(0);
        Some(TimeIndexEntry {
            timestamp_ms: max,
            relative_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(base_offset: u64, length: u32, max_timestamp_ms: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            length,
            crc: 0,
            magic: 1,
            flags: 0,
            record_count: 1,
            first_timestamp_ms: max_timestamp_ms,
            max_timestamp_ms,
        }
    }

    #[test]
    fn entry_codecs_round_trip() {
        let entry = OffsetIndexEntry {
            relative_offset: 7,
            position: 4096,
        };
        let mut out = Vec::new();
        entry.encode_into(&mut out);
        assert_eq!(out.len(), OFFSET_ENTRY_BYTES);
        assert_eq!(decode_offset_entry(&out), Some(entry));
        assert_eq!(decode_offset_entry(&out[..7]), None);
        let entry = TimeIndexEntry {
            timestamp_ms: -5,
            relative_offset: 3,
        };
        let mut out = Vec::new();
        entry.encode_into(&mut out);
        assert_eq!(out.len(), TIME_ENTRY_BYTES);
        assert_eq!(decode_time_entry(&out), Some(entry));
        assert_eq!(decode_time_entry(&out[..11]), None);
    }

    #[test]
    fn indexer_spaces_entries_by_interval() {
        let mut indexer = Indexer::new(100, 100);
        let mut offsets = Vec::new();
        let mut position = 0;
        for i in 0..10u64 {
            let (entry, _) = indexer.on_batch(&header(100 + i, 60, 0), position);
            offsets.extend(entry.map(|e| e.relative_offset));
            position += 60;
        }
        // First batch, then every batch that starts >= 100 bytes after the last entry.
        assert_eq!(offsets, vec![0, 2, 4, 6, 8]);
    }

    #[test]
    fn indexer_time_entries_only_when_the_max_grows() {
        let mut indexer = Indexer::new(0, 1);
        let stamps = [10, 5, 20, 20, 15, 30];
        let mut entries = Vec::new();
        for (i, ts) in stamps.iter().enumerate() {
            let (_, entry) = indexer.on_batch(&header(i as u64, 60, *ts), i as u64 * 60);
            entries.extend(entry);
        }
        let got: Vec<(i64, u32)> = entries
            .iter()
            .map(|e| (e.timestamp_ms, e.relative_offset))
            .collect();
        assert_eq!(got, vec![(10, 0), (20, 2), (30, 5)]);
        assert_eq!(indexer.take_time_entry(), None);
    }

    #[test]
    fn sealing_indexes_a_deferred_maximum() {
        let mut indexer = Indexer::new(0, 1_000_000);
        indexer.on_batch(&header(0, 60, 10), 0);
        let (_, deferred) = indexer.on_batch(&header(1, 60, 50), 60);
        assert_eq!(deferred, None);
        assert_eq!(
            indexer.take_time_entry(),
            Some(TimeIndexEntry {
                timestamp_ms: 50,
                relative_offset: 1
            })
        );
    }

    #[test]
    fn index_file_floor_and_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.index");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        let index: IndexFile<OffsetIndexEntry> = IndexFile::new(file, path, 0);
        let mut encoded = Vec::new();
        for i in 0..100u32 {
            OffsetIndexEntry {
                relative_offset: i * 10,
                position: i * 1000,
            }
            .encode_into(&mut encoded);
        }
        index.append(&encoded).expect("append");
        assert_eq!(index.len(), 100);
        let floor = |rel: u32| {
            index
                .floor(|e| e.relative_offset <= rel)
                .expect("floor")
                .map(|e| e.relative_offset)
        };
        assert_eq!(floor(0), Some(0));
        assert_eq!(floor(9), Some(0));
        assert_eq!(floor(10), Some(10));
        assert_eq!(floor(555), Some(550));
        assert_eq!(floor(5_000), Some(990));
        let check = check_index_file::<OffsetIndexEntry>(index.file(), 1_000, |_| Ok(()));
        assert_eq!(check.expect("io").map(|(n, _)| n), Ok(100));
        let too_short = check_index_file::<OffsetIndexEntry>(index.file(), 500, |_| Ok(()));
        assert!(too_short.expect("io").is_err());
        index.file().set_len(99 * 8 + 3).expect("set_len");
        let torn = check_index_file::<OffsetIndexEntry>(index.file(), 1_000, |_| Ok(()));
        assert!(torn.expect("io").is_err());
    }
}
