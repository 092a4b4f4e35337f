//! Snapshots, the latest per stream: files `<dir>/<stream>.json` on the embedded store,
//! or a JetStream KV bucket `<PREFIX>_snapshots` (key: the escaped stream name) shared by
//! every gateway when the store is on JetStream.
//!
//! Owns: durable save (files: write temp, fsync, rename, fsync dir, so a crash leaves the
//! old or the new snapshot, never half of one; KV: a compare-and-set on the key's
//! revision), load and removal.
//! Invariants: stream names are validated before any path or key is built; a saved
//! snapshot never replaces one at a higher version (in KV, whichever gateway saved it).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::EventStoreError;
use crate::types::Snapshot;

/// Saves of one snapshot retried after losing a compare-and-set to another gateway.
const KV_SAVE_ATTEMPTS: usize = 16;

pub(crate) enum SnapshotStore {
    Files(FileSnapshots),
    Kv(Box<KvSnapshots>),
}

impl SnapshotStore {
    pub async fn save(&self, snapshot: Snapshot) -> Result<(), EventStoreError> {
        match self {
            SnapshotStore::Files(files) => files.save(snapshot).await,
            SnapshotStore::Kv(kv) => kv.save(snapshot).await,
        }
    }

    pub async fn load(&self, stream: &str) -> Result<Option<Snapshot>, EventStoreError> {
        match self {
            SnapshotStore::Files(files) => files.load(stream).await,
            SnapshotStore::Kv(kv) => kv.load(stream).await,
        }
    }

    pub async fn remove(&self, stream: &str) -> Result<(), EventStoreError> {
        match self {
            SnapshotStore::Files(files) => files.remove(stream).await,
            SnapshotStore::Kv(kv) => kv.remove(stream).await,
        }
    }
}

fn encode(snapshot: &Snapshot, max_bytes: usize) -> Result<Vec<u8>, EventStoreError> {
    let bytes = serde_json::to_vec(snapshot)
        .map_err(|e| EventStoreError::invalid("data", e.to_string()))?;
    if bytes.len() > max_bytes {
        return Err(EventStoreError::AppendTooLarge {
            size: bytes.len() as u64,
            max: max_bytes as u64,
        });
    }
    Ok(bytes)
}

fn decode(bytes: &[u8], at: impl std::fmt::Display) -> Result<Snapshot, EventStoreError> {
    serde_json::from_slice(bytes).map_err(|e| EventStoreError::Corrupt {
        position: 0,
        reason: format!("snapshot {at}: {e}"),
    })
}

/// Snapshots in a JetStream KV bucket.
pub(crate) struct KvSnapshots {
    kv: async_nats::jetstream::kv::Store,
    max_bytes: usize,
}

fn kv_unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> EventStoreError {
    EventStoreError::Unavailable(format!("JetStream snapshots: {what}: {error}"))
}

impl KvSnapshots {
    pub async fn open(
        backend: &herald_broker::storage::JetStreamBackend,
        max_bytes: usize,
    ) -> Result<Self, EventStoreError> {
        let bucket = format!("{}_snapshots", backend.config().prefix);
        let kv = backend
            .key_value(
                &bucket,
                "Herald event store: the latest snapshot of each stream",
            )
            .await
            .map_err(|e| EventStoreError::Unavailable(e.to_string()))?;
        Ok(Self { kv, max_bytes })
    }

    fn key(stream: &str) -> String {
        herald_broker::storage::kv::escape_key(stream)
    }

    async fn save(&self, snapshot: Snapshot) -> Result<(), EventStoreError> {
        let bytes = bytes::Bytes::from(encode(&snapshot, self.max_bytes)?);
        let key = Self::key(&snapshot.stream);
        for _ in 0..KV_SAVE_ATTEMPTS {
            let current = self
                .kv
                .entry(key.as_str())
                .await
                .map_err(|e| kv_unavailable(format_args!("reading {key}"), e))?;
            let written = match current {
                Some(entry) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                    if decode(&entry.value, &key)?.version > snapshot.version {
                        return Ok(());
                    }
                    self.kv
                        .update(key.as_str(), bytes.clone(), entry.revision)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                // Absent, or deleted (`create` accepts a deleted key).
                _ => self
                    .kv
                    .create(key.as_str(), bytes.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => return Ok(()),
                // Another gateway saved meanwhile: compare with its snapshot again.
                Err(error) => tracing::debug!(%error, %key, "snapshot save raced; retrying"),
            }
        }
        Err(kv_unavailable(
            format_args!("saving {key}"),
            format_args!("{KV_SAVE_ATTEMPTS} attempts lost the race with other gateways"),
        ))
    }

    async fn load(&self, stream: &str) -> Result<Option<Snapshot>, EventStoreError> {
        let key = Self::key(stream);
        let value = self
            .kv
            .get(key.as_str())
            .await
            .map_err(|e| kv_unavailable(format_args!("reading {key}"), e))?;
        value.map(|bytes| decode(&bytes, &key)).transpose()
    }

    async fn remove(&self, stream: &str) -> Result<(), EventStoreError> {
        let key = Self::key(stream);
        let exists = self
            .kv
            .get(key.as_str())
            .await
            .map_err(|e| kv_unavailable(format_args!("reading {key}"), e))?
            .is_some();
        if exists {
            self.kv
                .delete(key.as_str())
                .await
                .map_err(|e| kv_unavailable(format_args!("deleting {key}"), e))?;
        }
        Ok(())
    }
}

/// Snapshot files in one directory.
pub(crate) struct FileSnapshots {
    dir: PathBuf,
    max_bytes: usize,
    /// Serializes writers so "never replace a newer one" is a real check.
    write: Arc<tokio::sync::Mutex<()>>,
}

impl FileSnapshots {
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

    async fn save(&self, snapshot: Snapshot) -> Result<(), EventStoreError> {
        let bytes = encode(&snapshot, self.max_bytes)?;
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

    async fn load(&self, stream: &str) -> Result<Option<Snapshot>, EventStoreError> {
        let path = self.path(stream);
        blocking(move || read(&path)).await
    }

    async fn remove(&self, stream: &str) -> Result<(), EventStoreError> {
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
        Ok(bytes) => decode(&bytes, format_args!("file {}", path.display())).map(Some),
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
