//! Committed group offsets shared by every gateway on one JetStream: a KV bucket
//! (`<PREFIX>_offsets`), one key per group holding all its committed offsets. A member that
//! moves to another gateway (its gateway died) resumes from the last commit made anywhere.
//! Invariants: a gateway applies a change only if its KV revision is newer than the last
//! one it wrote or applied for that group (its own writes echo back in order); every write
//! is a compare-and-set on that revision, so commits of different partitions made through
//! different gateways at the same time never undo each other.

use std::collections::HashMap;
use std::sync::Arc;

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

/// Compare-and-set attempts before a commit gives up (each lost race means another
/// gateway committed this group in between).
const UPDATE_ATTEMPTS: usize = 16;

pub struct OffsetRegistry {
    kv: kv::Store,
    /// Newest revision written or applied per group.
    revisions: Arc<Mutex<HashMap<String, u64>>>,
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
            revisions: Arc::new(Mutex::new(HashMap::new())),
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

    /// Durably applies `change` to `group`'s committed offsets for every gateway and
    /// returns the offsets now stored. `local` is this gateway's copy with `change` already
    /// applied: written if no other gateway committed since this one last saw the group,
    /// else the stored offsets are re-read and `change` applied to them. Returns the
    /// written offsets and their revision.
    pub async fn update(
        &self,
        group: &str,
        local: &CommittedOffsets,
        change: &(dyn Fn(&mut CommittedOffsets) + Sync),
    ) -> Result<(CommittedOffsets, u64), BrokerError> {
        let key = escape_key(group);
        let known = self.revision(group);
        let mut attempt = (local.clone(), known);
        for _ in 0..UPDATE_ATTEMPTS {
            let (offsets, revision) = attempt;
            let value = Bytes::from(encode(group, &offsets));
            match self.kv.update(&key, value, revision).await {
                Ok(written) => {
                    self.note(group, written);
                    return Ok((offsets, written));
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(unavailable(format_args!("committing for group {group}"), e)),
            }
            let entry = self
                .kv
                .entry(&key)
                .await
                .map_err(|e| unavailable(format_args!("re-reading group {group}"), e))?;
            let (mut stored, revision) = match entry {
                Some(e) if e.operation == Operation::Put => match decode(&e.value) {
                    Ok((_, offsets)) => (offsets, e.revision),
                    Err(_) => (CommittedOffsets::new(), e.revision),
                },
                Some(e) => (CommittedOffsets::new(), e.revision),
                None => (CommittedOffsets::new(), 0),
            };
            change(&mut stored);
            attempt = (stored, revision);
        }
        Err(BrokerError::Unavailable(format!(
            "JetStream offsets: committing for group {group}: other gateways kept committing; retry"
        )))
    }

    pub async fn remove(&self, group: &str) -> Result<(), BrokerError> {
        self.kv
            .delete(escape_key(group))
            .await
            .map_err(|e| unavailable(format_args!("removing group {group}"), e))
    }

    /// The newest revision of `group`'s offsets this gateway wrote or applied.
    pub fn revision(&self, group: &str) -> u64 {
        self.revisions.lock().get(group).copied().unwrap_or(0)
    }

    /// Records `revision` for `group`; false if a newer one was already seen.
    fn note(&self, group: &str, revision: u64) -> bool {
        note_revision(&self.revisions, group, revision)
    }

    /// Changes after `revision` that are newer than what this gateway wrote or applied.
    pub async fn watch(
        &self,
        revision: u64,
    ) -> Result<impl futures::Stream<Item = (u64, OffsetsChange)> + Send + 'static, BrokerError>
    {
        let watch = watch_entries(&self.kv, revision, "offsets").await?;
        let revisions = Arc::clone(&self.revisions);
        Ok(watch.filter_map(move |entry| {
            let revisions = Arc::clone(&revisions);
            async move {
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
            note_revision(&revisions, &change.0, entry.revision)
                .then_some((entry.revision, change))
        }
        }))
    }
}

/// Records `revision` for `group`; false if a newer one was already seen.
fn note_revision(revisions: &Mutex<HashMap<String, u64>>, group: &str, revision: u64) -> bool {
    let mut revisions = revisions.lock();
    let seen = revisions.entry(group.to_string()).or_insert(0);
    if revision <= *seen {
        return false;
    }
    *seen = revision;
    true
}
