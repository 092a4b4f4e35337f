//! Snapshot files: `<dir>/<stream>.json`, one per stream, the latest only.
//!
//! Owns: durable save (write temp, fsync, rename, fsync dir: a crash leaves the old or
//! the new snapshot, never half of one), load and removal.
//! Invariants: stream names are validated before any path is built; a saved snapshot
//! never replaces one at a higher version.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::EventStoreError;
use crate::types::Snapshot;

pub(crate) struct SnapshotStore {
    dir: PathBuf,
    max_bytes: usize,
    /// Serializes writers so "never replace a newer one" is a real check.
    write: Arc<tokio::sync::Mutex<()>>,
}

impl SnapshotStore {
    pub fn open(dir: PathBuf, max_bytes: usize) -> Result<Self, EventStoreError> {
        fs::create_dir_all(&dir).map_err(|e| EventStoreError::io(&dir, e))?;
        // Leftovers of a save interrupted by a crash.
        let entries = fs::read_dir(&dir).map_err(|e| EventStoreError::io(&dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(Self {
            dir,
            max_bytes,
            write: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn path(&self, stream: &str) -> PathBuf {
        self.dir.join(format!("{stream}.json"))
    }

    pub async fn save(&self, snapshot: Snapshot) -> Result<(), EventStoreError> {
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(|e| EventStoreError::invalid("data", e.to_string()))?;
        if bytes.len() > self.max_bytes {
            return Err(EventStoreError::AppendTooLarge {
                size: bytes.len() as u64,
                max: self.max_bytes as u64,
            });
        }
        let path = self.path(&snapshot.stream);
        let _guard = self.write.lock().await;
        let dir = self.dir.clone();
        let version = snapshot.version;
        blocking(move || {
            if let Some(existing) = read(&path)? {
                if existing.version > version {
                    return Ok(());
                }
            }
            write_atomically(&dir, &path, &bytes)
        })
        .await
    }

    pub async fn load(&self, stream: &str) -> Result<Option<Snapshot>, EventStoreError> {
        let path = self.path(stream);
        blocking(move || read(&path)).await
    }

    pub async fn remove(&self, stream: &str) -> Result<(), EventStoreError> {
        let path = self.path(stream);
        let dir = self.dir.clone();
        let _guard = self.write.lock().await;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => sync_dir(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(EventStoreError::io(&path, e)),
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EventStoreError> + Send + 'static,
) -> Result<T, EventStoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or(Err(EventStoreError::Closed))
}

fn read(path: &Path) -> Result<Option<Snapshot>, EventStoreError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| EventStoreError::Corrupt {
                    position: 0,
                    reason: format!("snapshot file {}: {e}", path.display()),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EventStoreError::io(path, e)),
    }
}

pub(crate) fn write_atomically(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<(), EventStoreError> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp).map_err(|e| EventStoreError::io(&tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| EventStoreError::io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| EventStoreError::io(path, e))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), EventStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| EventStoreError::io(dir, e))
}
