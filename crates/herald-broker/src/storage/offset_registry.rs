//! Committed group offsets shared by every gateway on one JetStream: a KV bucket
//! (`<PREFIX>_offsets`), one key per group holding all its committed offsets. A member that
//! moves to another gateway (its gateway died) resumes from the last commit made anywhere.
//! Invariant: a gateway applies a change only if its KV revision is newer than the last
//! one it wrote or applied for that group (its own writes echo back in order).

use std::collections::HashMap;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;

use crate::error::BrokerError;
use crate::offsets::{decode, encode, CommittedOffsets};
use crate::storage::kv::{escape_key, load_entries, unescape_key, watch_entries};
use crate::storage::JetStreamBackend;

/// A change seen in the bucket: a group's offsets, or `None` when they were removed.
pub type OffsetsChange = (String, Option<CommittedOffsets>);

pub struct OffsetRegistry {
    kv: kv::Store,
    /// Newest revision written or applied per group.
    revisions: Mutex<HashMap<String, u64>>,
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("JetStream offsets: {what}: {error}"))
}

impl OffsetRegistry {
    pub async fn open(backend: &JetStreamBackend) -> Result<Self, BrokerError> {
        let bucket = format!("{}_offsets", backend.config().prefix);
        let kv = backend
            .key_value(&bucket, "Herald committed group offsets")
            .await?;
        Ok(Self {
            kv,
            revisions: Mutex::new(HashMap::new()),
        })
    }

    /// Every group's offsets, and the revision to follow changes from (exclusive).
    pub async fn load_all(&self) -> Result<(HashMap<String, CommittedOffsets>, u64), BrokerError> {
        let (entries, revision) = load_entries(&self.kv, "offsets").await?;
        let mut groups = HashMap::new();
        for entry in entries {
            match decode(&entry.value) {
                Ok((group, offsets)) if escape_key(&group) == entry.key => {
                    self.revisions.lock().insert(group.clone(), entry.revision);
                    groups.insert(group, offsets);
                }
                Ok(_) | Err(_) => {
                    tracing::error!(key = %entry.key, "committed offsets entry does not parse; skipped")
                }
            }
        }
        Ok((groups, revision))
    }

    /// Durably replaces `group`'s committed offsets for every gateway.
    pub async fn store(&self, group: &str, offsets: &CommittedOffsets) -> Result<(), BrokerError> {
        let revision = self
            .kv
            .put(escape_key(group), Bytes::from(encode(group, offsets)))
            .await
            .map_err(|e| unavailable(format_args!("committing for group {group}"), e))?;
        self.note(group, revision);
        Ok(())
    }

    pub async fn remove(&self, group: &str) -> Result<(), BrokerError> {
        self.kv
            .purge(escape_key(group))
            .await
            .map_err(|e| unavailable(format_args!("removing group {group}"), e))
    }

    /// Records `revision` for `group`; false if a newer one was already seen.
    fn note(&self, group: &str, revision: u64) -> bool {
        let mut revisions = self.revisions.lock();
        let seen = revisions.entry(group.to_string()).or_insert(0);
        if revision <= *seen {
            return false;
        }
        *seen = revision;
        true
    }

    /// Changes after `revision` that are newer than what this gateway wrote or applied.
    pub async fn watch(
        &self,
        revision: u64,
    ) -> Result<impl futures::Stream<Item = (u64, OffsetsChange)> + Send + '_, BrokerError> {
        let watch = watch_entries(&self.kv, revision, "offsets").await?;
        Ok(watch.filter_map(move |entry| async move {
            let change = match entry.operation {
                Operation::Delete | Operation::Purge => (unescape_key(&entry.key), None),
                Operation::Put => match decode(&entry.value) {
                    Ok((group, offsets)) if escape_key(&group) == entry.key => (group, Some(offsets)),
                    _ => {
                        tracing::error!(key = %entry.key, "committed offsets entry does not parse; ignored");
                        return None;
                    }
                },
            };
            self.note(&change.0, entry.revision)
                .then_some((entry.revision, change))
        }))
    }
}
