//! Where a topic partition's records live: the embedded [`PartitionLog`] (default) or a
//! JetStream stream ([`jetstream`]). [`PartitionStore`] is the one handle the broker and
//! the front-ends use. Invariants for both: offsets are dense per partition, an append
//! resolves only once its records are durable, and `next_offset()` never moves back.

pub mod delayed_registry;
pub mod jetstream;
pub mod kv;
pub mod member_registry;
pub mod node_registry;
pub mod offset_registry;
pub mod shared_definitions;
pub mod shared_schemas;
pub mod topic_registry;
pub mod work_queue;

use std::sync::Arc;

use herald_log::{AppendOutcome, PartitionLog, Record, StoredRecord};
use tokio::sync::watch;

use crate::error::BrokerError;

pub use delayed_registry::{DelayedRegistry, LeaseState};
pub use jetstream::{JetStreamBackend, JetStreamConfig, JetStreamPartition};
pub use member_registry::{MemberAnnouncement, MemberChange, MemberRegistry};
pub use node_registry::{KafkaNode, NodeRegistry};
pub use offset_registry::{OffsetRegistry, OffsetsChange};
pub use shared_definitions::{DefinitionChange, SharedDefinitions};
pub use shared_schemas::SharedSchemas;
pub use topic_registry::{TopicChange, TopicRegistry};
pub use work_queue::{
    LeaseOutcome, LeaseTable, LeasedRecord, ReceiptInfo, WorkQueue, WorkQueueConfig,
    WorkQueueCounts,
};

/// The storage of one topic partition.
#[derive(Clone)]
pub enum PartitionStore {
    /// Herald's own segmented log on the local disk.
    Local(Arc<PartitionLog>),
    /// One JetStream stream on a NATS server or cluster.
    JetStream(Arc<JetStreamPartition>),
}

/// The offsets an append gave its records, in the order they were passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Appended {
    /// A contiguous run (the embedded log appends a batch atomically).
    Range(AppendOutcome),
    /// One offset per record (JetStream: other gateways may interleave). `duplicates[i]`
    /// says the store already held record `i` (same dedup id) at that offset.
    Each {
        offsets: Vec<u64>,
        duplicates: Vec<bool>,
    },
}

impl Appended {
    /// The offset of the `i`-th record of the append.
    pub fn offset(&self, i: usize) -> Option<u64> {
        match self {
            Appended::Range(r) => {
                let offset = r.base_offset.checked_add(i as u64)?;
                (offset <= r.last_offset).then_some(offset)
            }
            Appended::Each { offsets, .. } => offsets.get(i).copied(),
        }
    }

    /// Whether record `i` was a duplicate the store recognised by its dedup id.
    pub fn is_duplicate(&self, i: usize) -> bool {
        match self {
            Appended::Range(_) => false,
            Appended::Each { duplicates, .. } => duplicates.get(i).copied().unwrap_or(false),
        }
    }
}

impl PartitionStore {
    /// Appends `records`; resolves once they are durable (embedded: per the fsync policy;
    /// JetStream: once the stream acknowledged them, i.e. stored on its replicas).
    /// `dedup_ids` (one per record, or empty) let JetStream drop a record it already holds
    /// from any gateway within the stream's duplicate window; the embedded log ignores
    /// them (the broker's dedup window covers its single process).
    pub async fn append(
        &self,
        records: Vec<Record>,
        dedup_ids: Vec<String>,
    ) -> Result<Appended, BrokerError> {
        match self {
            PartitionStore::Local(log) => Ok(Appended::Range(log.append(records).await?)),
            PartitionStore::JetStream(p) => {
                let (offsets, duplicates) = p.append(records, dedup_ids).await?;
                Ok(Appended::Each {
                    offsets,
                    duplicates,
                })
            }
        }
    }

    /// Whether this partition lives in JetStream.
    pub fn is_jetstream(&self) -> bool {
        matches!(self, PartitionStore::JetStream(_))
    }

    /// Records from `offset` on, at most `max_records` and about `max_bytes` (the first
    /// record is returned whatever its size). `offset == next_offset()` gives nothing;
    /// an offset outside `[start_offset(), next_offset()]` is `OffsetOutOfRange`.
    pub async fn read(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BrokerError> {
        match self {
            PartitionStore::Local(log) => Ok(log.read(offset, max_records, max_bytes)?),
            PartitionStore::JetStream(p) => p.read(offset, max_records, max_bytes).await,
        }
    }

    /// Where a reader goes on after `read(offset, ..)` met damaged data.
    pub fn offset_after_damage(&self, offset: u64) -> u64 {
        match self {
            PartitionStore::Local(log) => log.offset_after_damage(offset),
            PartitionStore::JetStream(_) => offset.saturating_add(1),
        }
    }

    /// The first offset whose record timestamp is >= `timestamp_ms`, or `next_offset()`.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64, BrokerError> {
        match self {
            PartitionStore::Local(log) => Ok(log.offset_for_timestamp(timestamp_ms)?),
            PartitionStore::JetStream(p) => p.offset_for_timestamp(timestamp_ms).await,
        }
    }

    /// First offset still stored (retention moves it forward).
    pub fn start_offset(&self) -> u64 {
        match self {
            PartitionStore::Local(log) => log.start_offset(),
            PartitionStore::JetStream(p) => p.start_offset(),
        }
    }

    /// The offset the next record will get; everything below it is readable.
    pub fn next_offset(&self) -> u64 {
        match self {
            PartitionStore::Local(log) => log.next_offset(),
            PartitionStore::JetStream(p) => p.next_offset(),
        }
    }

    /// A receiver of `next_offset()`, updated whenever it advances (long polls).
    pub fn watch(&self) -> watch::Receiver<u64> {
        match self {
            PartitionStore::Local(log) => log.watch(),
            PartitionStore::JetStream(p) => p.watch(),
        }
    }

    /// Bytes stored for the partition.
    pub fn size_bytes(&self) -> u64 {
        match self {
            PartitionStore::Local(log) => log.size_bytes(),
            PartitionStore::JetStream(p) => p.size_bytes(),
        }
    }

    /// Re-reads the partition's start offset, end and size from the backend (JetStream;
    /// the embedded log is always current). A failure is logged and the old values stay.
    pub async fn refresh(&self) {
        if let PartitionStore::JetStream(p) = self {
            p.refresh().await;
        }
    }

    /// [`Self::refresh`], unless the figures were refreshed within `max_age`.
    pub async fn refresh_within(&self, max_age: std::time::Duration) {
        if let PartitionStore::JetStream(p) = self {
            p.refresh_within(max_age).await;
        }
    }

    /// Applies time/size retention (embedded log only: JetStream enforces `max_age` and
    /// `max_bytes` itself). Returns the segments deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, BrokerError> {
        match self {
            PartitionStore::Local(log) => Ok(log.enforce_retention(now_ms)?),
            PartitionStore::JetStream(_) => Ok(0),
        }
    }

    /// Drops records below `offset` (whole segments on the embedded log; a purge that runs
    /// in the background on JetStream). Returns the segments deleted (0 for JetStream).
    pub fn delete_records_before(&self, offset: u64) -> Result<usize, BrokerError> {
        match self {
            PartitionStore::Local(log) => Ok(log.delete_records_before(offset)?),
            PartitionStore::JetStream(p) => {
                p.purge_before(offset);
                Ok(0)
            }
        }
    }

    /// Where the partition lives, for error messages: its directory, or `jetstream:<stream>`.
    pub fn location(&self) -> std::path::PathBuf {
        match self {
            PartitionStore::Local(log) => log.dir().to_path_buf(),
            PartitionStore::JetStream(p) => p.location(),
        }
    }

    /// The embedded log, if this partition lives in one.
    pub fn local(&self) -> Option<&Arc<PartitionLog>> {
        match self {
            PartitionStore::Local(log) => Some(log),
            PartitionStore::JetStream(_) => None,
        }
    }

    /// Stops taking writes and releases the partition (embedded: drain and fsync).
    pub fn close(&self) -> Result<(), BrokerError> {
        match self {
            PartitionStore::Local(log) => Ok(log.close()?),
            PartitionStore::JetStream(p) => {
                p.close();
                Ok(())
            }
        }
    }
}
