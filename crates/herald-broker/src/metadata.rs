//! The data directory's layout and durable metadata files.
//!
//! ```text
//! <data_dir>/.lock                         exclusive lock: one server per data dir
//! <data_dir>/topics/<topic>/topic.json     TopicMeta (written atomically)
//! <data_dir>/topics/<topic>/<partition>/   the partition's log segments
//! <data_dir>/groups/<group>.offsets.json   committed offsets (written atomically)
//! ```
//! Invariant: metadata files are replaced only by write-to-temp + fsync + rename +
//! fsync(dir), so after a crash each holds either its old or its new content.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::TopicConfig;
use crate::error::BrokerError;

pub const TOPIC_META_FILE: &str = "topic.json";
const DELETED_SUFFIX: &str = ".deleted";

/// What is stored about a topic.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub config: TopicConfig,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

pub fn topics_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("topics")
}

pub fn groups_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("groups")
}

pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    topics_dir(data_dir).join(topic)
}

pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    topic_dir(data_dir, topic).join(partition.to_string())
}

/// Takes the data directory's exclusive lock (held for the life of the returned file).
pub fn lock_data_dir(data_dir: &Path) -> Result<File, BrokerError> {
    fs::create_dir_all(data_dir).map_err(|e| BrokerError::io(data_dir, e))?;
    let path = data_dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BrokerError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BrokerError::DataDirLocked {
            path: data_dir.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(BrokerError::io(&path, e)),
    }
}

/// Replaces `path` atomically with `bytes` (temp file, fsync, rename, fsync dir).
/// This data directory's gateway id (created once, then stable): names the per-gateway
/// internal topics when several gateways share one JetStream.
pub fn gateway_id(data_dir: &Path) -> Result<String, BrokerError> {
    let path = data_dir.join("gateway-id");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_string();
            herald_core::name::validate_name("gateway-id", &id)?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            write_atomically(&path, id.as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(BrokerError::io(&path, e)),
    }
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BrokerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| BrokerError::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(|e| BrokerError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| BrokerError::io(&tmp, e))?;
        f.sync_all().map_err(|e| BrokerError::io(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| BrokerError::io(path, e))?;
    sync_dir(dir)
}

/// fsyncs a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), BrokerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BrokerError::io(dir, e))
}

/// Writes a topic's metadata file durably.
pub fn store_topic_meta(data_dir: &Path, meta: &TopicMeta) -> Result<(), BrokerError> {
    let dir = topic_dir(data_dir, &meta.name);
    fs::create_dir_all(&dir).map_err(|e| BrokerError::io(&dir, e))?;
    sync_dir(&topics_dir(data_dir))?;
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| BrokerError::Io {
        path: dir.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    write_atomically(&dir.join(TOPIC_META_FILE), &bytes)
}

/// Loads every topic's metadata. Directories without a valid `topic.json` (a create that
/// crashed half-way, or a delete that did not finish) are removed.
pub fn load_topic_metas(data_dir: &Path) -> Result<Vec<TopicMeta>, BrokerError> {
    let dir = topics_dir(data_dir);
    fs::create_dir_all(&dir).map_err(|e| BrokerError::io(&dir, e))?;
    let mut metas = Vec::new();
    let entries = fs::read_dir(&dir).map_err(|e| BrokerError::io(&dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BrokerError::io(&dir, e))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(DELETED_SUFFIX) {
            remove_dir_logged(&path);
            continue;
        }
        let meta_path = path.join(TOPIC_META_FILE);
        let parsed = fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<TopicMeta>(&b).ok());
        match parsed {
            Some(meta) if meta.name == name => metas.push(meta),
            _ => {
                tracing::warn!(path = %path.display(), "removing topic directory without valid metadata (incomplete create)");
                remove_dir_logged(&path);
            }
        }
    }
    metas.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(metas)
}

/// Deletes a topic's directory: first renamed (atomic, so a crash never leaves half a
/// topic that looks alive), then removed.
pub fn delete_topic_dir(data_dir: &Path, topic: &str) -> Result<(), BrokerError> {
    let dir = topic_dir(data_dir, topic);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tomb = topics_dir(data_dir).join(format!("{topic}.{nanos}{DELETED_SUFFIX}"));
    fs::rename(&dir, &tomb).map_err(|e| BrokerError::io(&dir, e))?;
    sync_dir(&topics_dir(data_dir))?;
    remove_dir_logged(&tomb);
    Ok(())
}

fn remove_dir_logged(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove directory");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_meta_round_trips_and_incomplete_dirs_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = TopicMeta {
            name: "orders".into(),
            config: TopicConfig::with_partitions(3),
            created_at_ms: 7,
        };
        store_topic_meta(dir.path(), &meta).expect("store");
        fs::create_dir_all(topic_dir(dir.path(), "half-made")).expect("mkdir");
        assert_eq!(load_topic_metas(dir.path()).expect("load"), vec![meta]);
        assert!(!topic_dir(dir.path(), "half-made").exists());
        delete_topic_dir(dir.path(), "orders").expect("delete");
        assert!(load_topic_metas(dir.path()).expect("load").is_empty());
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _held = lock_data_dir(dir.path()).expect("first lock");
        assert!(matches!(
            lock_data_dir(dir.path()),
            Err(BrokerError::DataDirLocked { .. })
        ));
    }
}
