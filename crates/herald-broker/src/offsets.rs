//! Durable committed offsets: one JSON file per group, replaced atomically on each commit.
//!
//! Invariant: when `store` returns Ok, the file holds a state at least as new as the
//! caller's snapshot (commits of one group are serialized by the caller).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::metadata::{groups_dir, write_atomically};

/// (topic, partition) → next offset to read.
pub type CommittedOffsets = BTreeMap<(String, u32), u64>;

const SUFFIX: &str = ".offsets.json";

#[derive(Serialize, Deserialize)]
struct OffsetsFile {
    group: String,
    offsets: Vec<OffsetEntry>,
}

#[derive(Serialize, Deserialize)]
struct OffsetEntry {
    topic: String,
    partition: u32,
    offset: u64,
}

#[derive(Debug, Clone)]
pub struct OffsetStore {
    dir: PathBuf,
}

impl OffsetStore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: groups_dir(data_dir),
        }
    }

    fn path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{group}{SUFFIX}"))
    }

    /// Loads all groups' committed offsets. A file that does not parse is reported and skipped.
    pub fn load_all(&self) -> Result<HashMap<String, CommittedOffsets>, BrokerError> {
        fs::create_dir_all(&self.dir).map_err(|e| BrokerError::io(&self.dir, e))?;
        let mut groups = HashMap::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| BrokerError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| BrokerError::io(&self.dir, e))?;
            let path = entry.path();
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .map(str::to_string)
            else {
                continue;
            };
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| decode(&b));
            match parsed {
                Ok((_, offsets)) => {
                    groups.insert(name, offsets);
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable offsets file skipped")
                }
            }
        }
        Ok(groups)
    }

    /// Durably replaces `group`'s committed offsets.
    pub fn store(&self, group: &str, offsets: &CommittedOffsets) -> Result<(), BrokerError> {
        write_atomically(&self.path(group), &encode(group, offsets))
    }

    /// Removes a group's offsets file.
    pub fn remove(&self, group: &str) -> Result<(), BrokerError> {
        let path = self.path(group);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BrokerError::io(&path, e)),
        }
    }
}

/// The stored form of a group's committed offsets (files and the JetStream KV bucket).
pub(crate) fn encode(group: &str, offsets: &CommittedOffsets) -> Vec<u8> {
    let file = OffsetsFile {
        group: group.to_string(),
        offsets: offsets
            .iter()
            .map(|((topic, partition), offset)| OffsetEntry {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect(),
    };
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Parses [`encode`]'s output: the group's name and its offsets.
pub(crate) fn decode(bytes: &[u8]) -> Result<(String, CommittedOffsets), String> {
    let file = serde_json::from_slice::<OffsetsFile>(bytes).map_err(|e| e.to_string())?;
    let offsets = file
        .offsets
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.offset))
        .collect();
    Ok((file.group, offsets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = OffsetStore::new(dir.path());
        let mut offsets = CommittedOffsets::new();
        offsets.insert(("orders".into(), 2), 42);
        store.store("billing", &offsets).expect("store");
        let loaded = store.load_all().expect("load");
        assert_eq!(loaded.get("billing"), Some(&offsets));
        store.remove("billing").expect("remove");
        assert!(store.load_all().expect("load").is_empty());
    }
}
