//! [`Journal`]: the durable record of one queue's [`JournalEntry`]s, with snapshots.
//!
//! Layout under the queue's state directory:
//! ```text
//! snapshot.json        {"generation": G, "state": DurableState}   (atomic replace)
//! journal-<G>/         a herald-log PartitionLog of entry batches (fsync always,
//!                      group commit: concurrent appends share one fdatasync)
//! ```
//! Recovery loads the snapshot, replays every journal of generation >= G in order and
//! removes older ones. Compaction (when [`COMPACT_ENTRIES`] entries were appended since
//! the last snapshot): the caller takes a snapshot of its state and, under the same
//! lock, [`Journal::rotate`]s to generation G+1; then [`Journal::finish_compaction`]
//! writes the snapshot naming G+1 and deletes generation G. A crash at any point
//! leaves a snapshot plus journals whose replay gives the state back, because every
//! entry is idempotent and an entry appended to either journal is replayed.
//!
//! Record format: one log record per append, its value the entries back to back,
//! 17 bytes each: tag u8 (1 Delivered, 2 Done, 3 Delay) · offset u64 LE · value i64 LE.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use herald_log::{FsyncPolicy, LogConfig, LogError, PartitionLog, Record};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::BusError;
use crate::queue::state::{DurableState, JournalEntry};

/// Entries appended since the last snapshot that trigger a compaction.
pub const COMPACT_ENTRIES: u64 = 200_000;
const ENTRY_BYTES: usize = 17;
const SNAPSHOT_FILE: &str = "snapshot.json";
const JOURNAL_PREFIX: &str = "journal-";
/// Records read per step while replaying.
const REPLAY_RECORDS: usize = 4096;

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    generation: u64,
    state: DurableState,
}

pub struct Journal {
    dir: PathBuf,
    /// The generation being appended to, and its log.
    current: Mutex<(u64, Arc<PartitionLog>)>,
    since_snapshot: AtomicU64,
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 * 1024 * 1024,
        fsync: FsyncPolicy::Always,
        ..LogConfig::default()
    }
}

pub fn encode(entries: &[JournalEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for entry in entries {
        let (tag, offset, value) = match *entry {
            JournalEntry::Delivered { offset, count } => (1u8, offset, i64::from(count)),
            JournalEntry::Done { offset } => (2, offset, 0),
            JournalEntry::Delay { offset, until_ms } => (3, offset, until_ms),
        };
        out.push(tag);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    out
}

pub fn decode(bytes: &[u8]) -> Result<Vec<JournalEntry>, String> {
    if !bytes.chunks_exact(ENTRY_BYTES).remainder().is_empty() {
        return Err(format!(
            "record of {} bytes is not a whole number of entries",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(bytes.len() / ENTRY_BYTES);
    for chunk in bytes.chunks_exact(ENTRY_BYTES) {
        let (tag, rest) = chunk.split_first().ok_or("empty entry")?;
        let (offset, value) = rest.split_at(8);
        let offset = u64::from_le_bytes(offset.try_into().map_err(|_| "short entry")?);
        let value = i64::from_le_bytes(value.try_into().map_err(|_| "short entry")?);
        out.push(match tag {
            1 => JournalEntry::Delivered {
                offset,
                count: u32::try_from(value).map_err(|_| "bad delivery count")?,
            },
            2 => JournalEntry::Done { offset },
            3 => JournalEntry::Delay {
                offset,
                until_ms: value,
            },
            other => return Err(format!("unknown entry tag {other}")),
        });
    }
    Ok(out)
}

fn journal_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{JOURNAL_PREFIX}{generation:020}"))
}

fn generations(dir: &Path) -> Result<Vec<u64>, BusError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| BusError::io(dir, e))? {
        let entry = entry.map_err(|e| BusError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(g) = name
            .strip_prefix(JOURNAL_PREFIX)
            .and_then(|g| g.parse().ok())
        {
            out.push(g);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn replay(log: &PartitionLog, apply: &mut impl FnMut(JournalEntry)) -> Result<u64, BusError> {
    let mut offset = log.start_offset();
    let mut entries = 0u64;
    while offset < log.next_offset() {
        let records = log.read(offset, REPLAY_RECORDS, 8 * 1024 * 1024)?;
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        for record in records {
            let decoded = decode(&record.value).map_err(|reason| {
                BusError::Storage(LogError::Corrupt {
                    path: log.dir().to_path_buf(),
                    position: record.offset,
                    reason,
                })
            })?;
            entries += decoded.len() as u64;
            decoded.into_iter().for_each(&mut *apply);
        }
    }
    Ok(entries)
}

impl Journal {
    /// Opens (creating) the journal in `dir` and recovers: returns the snapshot state;
    /// `apply` receives every journaled entry after it, in order. Blocking.
    pub fn open(
        dir: &Path,
        mut apply: impl FnMut(JournalEntry),
    ) -> Result<(Journal, DurableState), BusError> {
        std::fs::create_dir_all(dir).map_err(|e| BusError::io(dir, e))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = match std::fs::read(&snapshot_path) {
            Ok(bytes) => serde_json::from_slice::<Snapshot>(&bytes)
                .map_err(|e| BusError::io(&snapshot_path, std::io::Error::other(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot {
                generation: 0,
                state: DurableState::default(),
            },
            Err(e) => return Err(BusError::io(&snapshot_path, e)),
        };
        let mut current = None;
        let mut replayed = 0;
        // The snapshot's state first, then the journals after it: callers build their
        // state from the returned snapshot and then receive entries, so collect first.
        let mut pending = Vec::new();
        for generation in generations(dir)? {
            let path = journal_dir(dir, generation);
            if generation < snapshot.generation {
                std::fs::remove_dir_all(&path).map_err(|e| BusError::io(&path, e))?;
                continue;
            }
            let log = PartitionLog::open(&path, log_config())?;
            replayed += replay(&log, &mut |e| pending.push(e))?;
            if let Some((_, old)) = current.replace((generation, log)) {
                let old: Arc<PartitionLog> = old;
                old.close()?;
            }
        }
        let current = match current {
            Some(c) => c,
            None => {
                let generation = snapshot.generation;
                (
                    generation,
                    PartitionLog::open(journal_dir(dir, generation), log_config())?,
                )
            }
        };
        pending.into_iter().for_each(&mut apply);
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                current: Mutex::new(current),
                since_snapshot: AtomicU64::new(replayed),
            },
            snapshot.state,
        ))
    }

    /// Appends `entries` as one record; resolves once it is durable.
    pub async fn append(&self, entries: &[JournalEntry]) -> Result<(), BusError> {
        if entries.is_empty() {
            return Ok(());
        }
        let value = Bytes::from(encode(entries));
        let record = || Record {
            timestamp_ms: chrono::Utc::now().timestamp_millis(),
            key: None,
            value: value.clone(),
        };
        let mut attempts = 0;
        loop {
            let log = self.current.lock().1.clone();
            match log.append(vec![record()]).await {
                Ok(_) => break,
                // Rotated away under us (compaction): append to the new generation.
                Err(LogError::Closed) if attempts == 0 => attempts += 1,
                Err(LogError::Backpressure) if attempts < 50 => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(2 * attempts)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.since_snapshot
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    pub fn needs_compaction(&self) -> bool {
        self.since_snapshot.load(Ordering::Relaxed) >= COMPACT_ENTRIES
    }

    /// Starts generation G+1 (call while holding the lock the snapshot was taken
    /// under). Returns the new generation and the old log. Blocking.
    pub fn rotate(&self) -> Result<(u64, Arc<PartitionLog>), BusError> {
        let mut current = self.current.lock();
        let generation = current.0 + 1;
        let log = PartitionLog::open(journal_dir(&self.dir, generation), log_config())?;
        let old = std::mem::replace(&mut *current, (generation, log));
        self.since_snapshot.store(0, Ordering::Relaxed);
        Ok((generation, old.1))
    }

    /// Writes the snapshot naming `generation` and deletes the older journal. Blocking.
    pub fn finish_compaction(
        &self,
        generation: u64,
        state: DurableState,
        old: Arc<PartitionLog>,
    ) -> Result<(), BusError> {
        let bytes = serde_json::to_vec(&Snapshot { generation, state })
            .map_err(|e| BusError::io(&self.dir, std::io::Error::other(e)))?;
        herald_broker::metadata::write_atomically(&self.dir.join(SNAPSHOT_FILE), &bytes)?;
        old.close()?;
        let path = old.dir().to_path_buf();
        drop(old);
        std::fs::remove_dir_all(&path).map_err(|e| BusError::io(&path, e))?;
        Ok(())
    }

    /// Flushes and stops the current log. Blocking.
    pub fn close(&self) {
        let log = self.current.lock().1.clone();
        if let Err(e) = log.close() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "closing a queue journal failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let entries = vec![
            JournalEntry::Delivered {
                offset: 7,
                count: 3,
            },
            JournalEntry::Done { offset: u64::MAX },
            JournalEntry::Delay {
                offset: 1,
                until_ms: -5,
            },
        ];
        assert_eq!(decode(&encode(&entries)), Ok(entries));
        assert!(decode(&[1, 2, 3]).is_err());
        let mut bad = encode(&[JournalEntry::Done { offset: 1 }]);
        bad[0] = 9;
        assert!(decode(&bad).is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn replays_across_compaction_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let (journal, state) = Journal::open(&path, |_| {}).expect("open");
        assert_eq!(state, DurableState::default());
        journal
            .append(&[JournalEntry::Done { offset: 0 }])
            .await
            .expect("append");
        let (generation, old) = journal.rotate().expect("rotate");
        journal
            .append(&[JournalEntry::Done { offset: 1 }])
            .await
            .expect("append");
        // Crash before the snapshot: both generations replay.
        let mut seen = Vec::new();
        {
            let path = path.clone();
            let old = old.clone();
            tokio::task::spawn_blocking(move || {
                old.close().expect("close");
            })
            .await
            .expect("join");
            let _ = path;
        }
        journal.close();
        drop(journal);
        drop(old);
        let (journal, _) =
            tokio::task::block_in_place(|| Journal::open(&path, |e| seen.push(e))).expect("reopen");
        assert_eq!(
            seen,
            vec![
                JournalEntry::Done { offset: 0 },
                JournalEntry::Done { offset: 1 }
            ]
        );
        let _ = generation;
        // Compaction completes: only the newest journal is replayed.
        let (generation, old) = tokio::task::block_in_place(|| journal.rotate()).expect("rotate");
        let state = DurableState {
            floor: 2,
            ..DurableState::default()
        };
        tokio::task::block_in_place(|| journal.finish_compaction(generation, state.clone(), old))
            .expect("finish");
        journal
            .append(&[JournalEntry::Done { offset: 5 }])
            .await
            .expect("append");
        tokio::task::block_in_place(|| journal.close());
        drop(journal);
        let mut seen = Vec::new();
        let (_, restored) =
            tokio::task::block_in_place(|| Journal::open(&path, |e| seen.push(e))).expect("reopen");
        assert_eq!(restored, state);
        assert_eq!(seen, vec![JournalEntry::Done { offset: 5 }]);
        assert_eq!(generations(&path).expect("list").len(), 1);
    }
}
