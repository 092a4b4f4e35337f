//! [`Shared`]: the state of one partition log that the writer thread and the API
//! (readers, retention, flush) share.
//!
//! Owns: the segment list, the visible end offset and its watch channel, the poison
//! flag, the fsync counter, and (in tests) fault injection.
//!
//! Lock order: `segments` is the only lock held across more than one statement, and
//! no other lock or I/O is taken while it is held, except the writer's push of a
//! freshly created segment and retention's removal from the front.
//!
//! Invariants: `next_offset` only grows; the segment list is sorted by base offset,
//! never empty, and only its last segment is written to.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::config::LogConfig;
use crate::error::LogError;
use crate::segment::Segment;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) config: LogConfig,
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    next_offset: AtomicU64,
    start_offset: AtomicU64,
    watch: watch::Sender<u64>,
    poison: Mutex<Option<String>>,
    fsync_count: AtomicU64,
    #[cfg(test)]
    pub(crate) faults: crate::fault::Faults,
}

impl Shared {
    pub(crate) fn new(
        dir: PathBuf,
        config: LogConfig,
        segments: Vec<Arc<Segment>>,
        next_offset: u64,
    ) -> Self {
        let start_offset = segments.first().map_or(next_offset, |s| s.base_offset());
        Self {
            dir,
            config,
            segments: RwLock::new(segments),
            next_offset: AtomicU64::new(next_offset),
            start_offset: AtomicU64::new(start_offset),
            watch: watch::channel(next_offset).0,
            poison: Mutex::new(None),
            fsync_count: AtomicU64::new(0),
            #[cfg(test)]
            faults: crate::fault::Faults::default(),
        }
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub(crate) fn start_offset(&self) -> u64 {
        self.start_offset.load(Ordering::Acquire)
    }

    pub(crate) fn set_start_offset(&self, start_offset: u64) {
        self.start_offset.store(start_offset, Ordering::Release);
    }

    /// Raises the visible end and wakes watchers. The segment's own state must
    /// already be published.
    pub(crate) fn publish(&self, next_offset: u64) {
        self.next_offset.fetch_max(next_offset, Ordering::AcqRel);
        self.watch.send_if_modified(|current| {
            let changed = *current < next_offset;
            *current = (*current).max(next_offset);
            changed
        });
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.watch.subscribe()
    }

    pub(crate) fn fsync_count(&self) -> u64 {
        self.fsync_count.load(Ordering::Relaxed)
    }

    /// Refuses all later writes; the first reason sticks.
    pub(crate) fn poison(&self, reason: String) {
        let mut poison = self.poison.lock();
        if poison.is_none() {
            tracing::error!(dir = %self.dir.display(), %reason, "partition log poisoned: refusing writes");
            *poison = Some(reason);
        }
    }

    pub(crate) fn poisoned(&self) -> Option<String> {
        self.poison.lock().clone()
    }

    /// `Poisoned` if poisoned, otherwise `Closed`: why a request got no answer.
    pub(crate) fn closed_error(&self) -> LogError {
        match self.poisoned() {
            Some(reason) => LogError::Poisoned(reason),
            None => LogError::Closed,
        }
    }

    /// fdatasync of `file`; a failure poisons the log (the page cache state after a
    /// failed fsync is unknown, so retrying it proves nothing).
    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> Result<(), LogError> {
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        let result = self
            .faults
            .take_sync_fault()
            .map_or_else(|| file.sync_data(), Err);
        #[cfg(not(test))]
        let result = file.sync_data();
        result.map_err(|e| {
            self.poison(format!("fdatasync of `{}` failed: {e}", path.display()));
            LogError::io("fdatasync", path, e)
        })
    }

    /// fsync of the partition directory, so created files survive power failure.
    pub(crate) fn sync_dir(&self) -> Result<(), LogError> {
        let dir =
            File::open(&self.dir).map_err(|e| LogError::io("open directory", &self.dir, e))?;
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        dir.sync_all().map_err(|e| {
            self.poison(format!(
                "fsync of directory `{}` failed: {e}",
                self.dir.display()
            ));
            LogError::io("fsync directory", &self.dir, e)
        })
    }

    /// The segment being written (the last one).
    pub(crate) fn active_segment(&self) -> Option<Arc<Segment>> {
        self.segments.read().last().cloned()
    }
}
