//! The in-memory per-stream index: version → `$all` position, metadata, deletion state.
//!
//! Owns: applying log entries to stream state (the same code rebuilds the index on open
//! and updates it after each durable append) and the expected-version rule.
//! Invariants: `positions[v]` is the position of version `v`, so versions are dense
//! from 0 and positions strictly increase with the version; a tombstoned stream never
//! takes another event.

use std::collections::{BTreeMap, HashMap};

use crate::error::EventStoreError;
use crate::record::Entry;
use crate::types::{ExpectedVersion, StreamDescription, StreamInfo, StreamMetadata};

/// One stream's state.
#[derive(Debug, Clone, Default)]
pub struct StreamState {
    /// `$all` position of each version.
    pub positions: Vec<u64>,
    pub metadata: StreamMetadata,
    /// Versions below this were soft-deleted.
    pub deleted_before: u64,
    pub tombstoned: bool,
}

impl StreamState {
    /// The version the next event gets.
    pub fn next_version(&self) -> u64 {
        self.positions.len() as u64
    }

    /// Whether the stream holds an event written since its last soft delete.
    pub fn exists(&self) -> bool {
        !self.tombstoned && self.next_version() > self.deleted_before
    }

    /// The last version, if the stream exists.
    pub fn current(&self) -> Option<u64> {
        if self.exists() {
            self.next_version().checked_sub(1)
        } else {
            None
        }
    }

    /// Checks `expected` for an append or delete on `stream`.
    pub fn check(&self, stream: &str, expected: ExpectedVersion) -> Result<(), EventStoreError> {
        if self.tombstoned {
            return Err(EventStoreError::StreamDeleted {
                stream: stream.to_string(),
            });
        }
        let current = self.current();
        let ok = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current.is_none(),
            ExpectedVersion::StreamExists => current.is_some(),
            ExpectedVersion::Exact(n) => current == Some(n),
        };
        if ok {
            Ok(())
        } else {
            Err(EventStoreError::WrongExpectedVersion {
                stream: stream.to_string(),
                expected,
                current,
            })
        }
    }

    /// The first version a read may return, ignoring `max_age_ms` (checked per event).
    pub fn first_visible_version(&self) -> u64 {
        let by_count = self
            .metadata
            .max_count
            .map_or(0, |count| self.next_version().saturating_sub(count));
        by_count.max(self.deleted_before)
    }

    /// Whether a read may return version `version` recorded at `recorded_at_ms`: not
    /// tombstoned, not soft-deleted, within `max_count` and (at `now_ms`) `max_age_ms`.
    pub fn is_visible(&self, version: u64, recorded_at_ms: i64, now_ms: i64) -> bool {
        !self.tombstoned
            && version >= self.first_visible_version()
            && self.metadata.max_age_ms.is_none_or(|age| {
                recorded_at_ms >= now_ms.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX))
            })
    }

    pub fn describe(&self, stream: &str) -> StreamDescription {
        StreamDescription {
            stream: stream.to_string(),
            metadata: self.metadata.clone(),
            last_version: self.next_version().checked_sub(1),
            deleted_before: self.deleted_before,
            deleted: !self.tombstoned && !self.exists() && self.deleted_before > 0,
            tombstoned: self.tombstoned,
        }
    }

    pub fn info(&self, stream: &str) -> Option<StreamInfo> {
        let last_version = self.current()?;
        let last_position = *self.positions.last()?;
        Some(StreamInfo {
            stream: stream.to_string(),
            last_version,
            last_position,
        })
    }
}

/// What one record changes in the index: an [`Entry`] without the event's body,
/// which the index never needs (so a write path can skip decoding it).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Event {
        stream: String,
        version: u64,
    },
    Metadata {
        stream: String,
        metadata: StreamMetadata,
    },
    SoftDelete {
        stream: String,
        deleted_before: u64,
    },
    Tombstone {
        stream: String,
    },
}

impl Change {
    pub fn stream(&self) -> &str {
        match self {
            Change::Event { stream, .. }
            | Change::Metadata { stream, .. }
            | Change::SoftDelete { stream, .. }
            | Change::Tombstone { stream } => stream,
        }
    }
}

impl From<Entry> for Change {
    fn from(entry: Entry) -> Self {
        match entry {
            Entry::Event {
                stream, version, ..
            } => Change::Event { stream, version },
            Entry::Metadata { stream, metadata } => Change::Metadata { stream, metadata },
            Entry::SoftDelete {
                stream,
                deleted_before,
            } => Change::SoftDelete {
                stream,
                deleted_before,
            },
            Entry::Tombstone { stream } => Change::Tombstone { stream },
        }
    }
}

/// Every stream, by name (sorted, for listing).
#[derive(Debug, Default)]
pub struct Index {
    pub streams: BTreeMap<String, StreamState>,
    /// On JetStream: per stream, the sequence of the last message on its subject (the
    /// expected last subject sequence of its next write), skipped messages included.
    pub last_sequences: HashMap<String, u64>,
}

impl Index {
    /// Applies one durable entry found at `position`. Fails if the entry contradicts
    /// the state (a version out of sequence, an event after a tombstone): the log
    /// would then hold something the store never writes.
    pub fn apply(
        &mut self,
        position: u64,
        change: impl Into<Change>,
    ) -> Result<(), EventStoreError> {
        let corrupt = |reason: String| EventStoreError::Corrupt { position, reason };
        match change.into() {
            Change::Event { stream, version } => {
                let state = self.streams.entry(stream).or_default();
                if state.tombstoned {
                    return Err(corrupt("an event after the stream's tombstone".into()));
                }
                if version != state.next_version() {
                    return Err(corrupt(format!(
                        "version {version} out of sequence: expected {}",
                        state.next_version()
                    )));
                }
                if state.positions.last().is_some_and(|last| *last >= position) {
                    return Err(corrupt("position does not increase".into()));
                }
                state.positions.push(position);
            }
            Change::Metadata { stream, metadata } => {
                self.streams.entry(stream).or_default().metadata = metadata;
            }
            Change::SoftDelete {
                stream,
                deleted_before,
            } => {
                let state = self.streams.entry(stream).or_default();
                state.deleted_before = state.deleted_before.max(deleted_before);
            }
            Change::Tombstone { stream } => {
                self.streams.entry(stream).or_default().tombstoned = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::CloudEvent;

    fn event(stream: &str, version: u64) -> Entry {
        Entry::Event {
            stream: stream.into(),
            version,
            event: Box::new(CloudEvent::new("i", "/s", "t")),
        }
    }

    #[test]
    fn expected_versions_follow_the_stream_lifecycle() {
        let mut index = Index::default();
        let fresh = StreamState::default();
        assert!(fresh.check("s", ExpectedVersion::NoStream).is_ok());
        assert!(fresh.check("s", ExpectedVersion::StreamExists).is_err());
        index.apply(0, event("s", 0)).expect("first");
        index.apply(3, event("s", 1)).expect("second");
        let state = &index.streams["s"];
        assert!(state.check("s", ExpectedVersion::Exact(1)).is_ok());
        match state.check("s", ExpectedVersion::Exact(0)) {
            Err(EventStoreError::WrongExpectedVersion { current, .. }) => {
                assert_eq!(current, Some(1))
            }
            other => panic!("{other:?}"),
        }
        index
            .apply(
                4,
                Entry::SoftDelete {
                    stream: "s".into(),
                    deleted_before: 2,
                },
            )
            .expect("delete");
        let state = &index.streams["s"];
        assert!(state.check("s", ExpectedVersion::NoStream).is_ok());
        assert!(state.describe("s").deleted);
        index
            .apply(5, event("s", 2))
            .expect("recreated, versions continue");
        assert_eq!(index.streams["s"].current(), Some(2));
        assert_eq!(index.streams["s"].first_visible_version(), 2);
        index
            .apply(6, Entry::Tombstone { stream: "s".into() })
            .expect("tombstone");
        assert!(matches!(
            index.streams["s"].check("s", ExpectedVersion::Any),
            Err(EventStoreError::StreamDeleted { .. })
        ));
        assert!(index.apply(7, event("s", 3)).is_err());
    }

    #[test]
    fn out_of_sequence_versions_are_corruption() {
        let mut index = Index::default();
        index.apply(0, event("s", 0)).expect("first");
        assert!(index.apply(1, event("s", 2)).is_err());
        assert!(index.apply(0, event("s", 1)).is_err());
    }

    #[test]
    fn max_count_hides_old_versions() {
        let mut state = StreamState {
            positions: vec![0, 1, 2, 3, 4],
            ..StreamState::default()
        };
        state.metadata.max_count = Some(2);
        assert_eq!(state.first_visible_version(), 3);
    }
}
