//! Durable subscription definitions: `<data_dir>/subscriptions/<name>.json`, one
//! [`SubscriptionRecord`] per file, replaced atomically (temp, fsync, rename, fsync
//! dir); per-queue state lives in `<data_dir>/subscriptions/<name>.state/`.
//!
//! Invariant: a subscription exists iff its definition file exists; creation writes
//! the definition last, deletion removes it first, and startup removes state
//! directories without a definition.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BusError;
use crate::spec::SubscriptionSpec;

const DEFINITION_SUFFIX: &str = ".json";
const STATE_SUFFIX: &str = ".state";

/// Where a subscription starts reading one topic that existed when it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicStart {
    /// The topic's creation time, to tell a re-created topic of the same name apart.
    pub created_at_ms: i64,
    /// Per partition: the first offset the subscription receives.
    pub offsets: Vec<u64>,
}

/// What is stored about a subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub spec: SubscriptionSpec,
    pub created_at_ms: i64,
    /// Source topics that existed at creation and their end offsets then (a new
    /// subscription starts at the end, like an EventBridge rule); topics created
    /// later are read from their beginning.
    pub start: BTreeMap<String, TopicStart>,
}

impl SubscriptionRecord {
    /// The first offset of `topic`/`partition` this subscription receives.
    pub fn start_offset(&self, topic: &str, created_at_ms: i64, partition: u32) -> u64 {
        match self.start.get(topic) {
            Some(s) if s.created_at_ms == created_at_ms => {
                s.offsets.get(partition as usize).copied().unwrap_or(0)
            }
            _ => 0,
        }
    }
}

pub fn subscriptions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("subscriptions")
}

pub fn definition_path(data_dir: &Path, name: &str) -> PathBuf {
    subscriptions_dir(data_dir).join(format!("{name}{DEFINITION_SUFFIX}"))
}

pub fn state_dir(data_dir: &Path, name: &str) -> PathBuf {
    subscriptions_dir(data_dir).join(format!("{name}{STATE_SUFFIX}"))
}

/// Writes a definition durably. Blocking.
pub fn store(data_dir: &Path, record: &SubscriptionRecord) -> Result<(), BusError> {
    let path = definition_path(data_dir, &record.spec.name);
    let bytes = serde_json::to_vec_pretty(record)
        .map_err(|e| BusError::io(&path, std::io::Error::other(e)))?;
    herald_broker::metadata::write_atomically(&path, &bytes)?;
    Ok(())
}

/// Removes a definition (durably) and then the subscription's state. Blocking.
pub fn remove(data_dir: &Path, name: &str) -> Result<(), BusError> {
    let path = definition_path(data_dir, name);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(BusError::io(&path, e)),
    }
    let dir = subscriptions_dir(data_dir);
    // JetStream storage keeps definitions in KV: there may be no directory.
    if dir.exists() {
        herald_broker::metadata::sync_dir(&dir)?;
    }
    let state = state_dir(data_dir, name);
    if state.exists() {
        std::fs::remove_dir_all(&state).map_err(|e| BusError::io(&state, e))?;
    }
    Ok(())
}

/// Loads every definition; removes leftover temp files and orphaned state. Blocking.
pub fn load_all(data_dir: &Path) -> Result<Vec<SubscriptionRecord>, BusError> {
    let dir = subscriptions_dir(data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| BusError::io(&dir, e))?;
    let mut records = Vec::new();
    let mut state_dirs = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| BusError::io(&dir, e))? {
        let entry = entry.map_err(|e| BusError::io(&dir, e))?;
        let path = entry.path();
        let file_name = entry.file_name().to_string_lossy().to_string();
        if let Some(name) = file_name.strip_suffix(STATE_SUFFIX) {
            state_dirs.push((name.to_string(), path));
        } else if file_name.ends_with(DEFINITION_SUFFIX) {
            let bytes = std::fs::read(&path).map_err(|e| BusError::io(&path, e))?;
            let record: SubscriptionRecord = serde_json::from_slice(&bytes)
                .map_err(|e| BusError::io(&path, std::io::Error::other(e)))?;
            records.push(record);
        } else if file_name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path);
        }
    }
    for (name, path) in state_dirs {
        if !records.iter().any(|r| r.spec.name == name) {
            tracing::warn!(path = %path.display(), "removing queue state of a deleted subscription");
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    records.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(records)
}
