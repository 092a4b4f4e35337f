//! Herald's storage layer: one segmented, append-only, CRC32C-checked log per partition.
//!
//! Owns: the on-disk batch format, segments and their sparse offset/time indexes,
//! group-committed fsync, crash recovery and retention. It knows nothing about events,
//! topics or consumers: records are opaque `(timestamp, key, value)` triples.
//! It is not a replicated log and does not compact by key.
//!
//! Modules:
//! - [`batch`]: the batch codec (byte layout in its docs). Pure; a fuzz target.
//! - [`index`]: offset and time index entries, their files and the indexing rule.
//! - [`segment`]: one segment's files, visibility state and read-side scanning.
//! - [`recovery`]: what `open()` checks, truncates and rebuilds; [`RecoveryReport`].
//! - `writer`: the per-partition writer thread (group commit, rolls, fsync policy).
//! - `log`: [`PartitionLog`], the API: append, read, lookups, retention, close.
//! - `retention`: which sealed segments to delete.
//! - `state`: what the writer thread and the API share (lock order documented there).
//! - [`config`], [`error`], [`record`]: settings, errors, and the record types.
//!
//! On disk, a partition is a directory of segments named by zero-padded base offset:
//! `00000000000000000000.log` (batches), `.index` (sparse offset index) and
//! `.timeindex` (time index).
//!
//! Invariants: offsets are dense and strictly increasing; a record is readable only
//! once it is durable under the log's [`FsyncPolicy`]; a batch whose CRC does not
//! verify is never returned to a reader.

#![deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
#![warn(clippy::expect_used)]
#![cfg_attr(
    test,
    allow(
        clippy::expect_used,
        clippy::unwrap_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod batch;
pub mod config;
pub mod error;
pub mod index;
mod log;
pub mod record;
pub mod recovery;
mod retention;
pub mod segment;
mod state;
mod writer;

#[cfg(test)]
mod fault;
#[cfg(test)]
mod tests;

pub use batch::{decode_batch, encode_batch, BatchError, BatchHeader, DecodedBatch, RecordRef};
pub use config::{FsyncPolicy, LogConfig};
pub use error::LogError;
pub use index::{decode_offset_entry, decode_time_entry, OffsetIndexEntry, TimeIndexEntry};
pub use log::PartitionLog;
pub use record::{AppendOutcome, Record, StoredRecord};
pub use recovery::{OffsetGap, RecoveryReport};

/// Histogram (seconds) of the group-commit `fdatasync` of `always` partitions, recorded
/// through the `metrics` facade (a no-op unless the process installed a recorder).
pub const FSYNC_SECONDS_METRIC: &str = "herald_log_fsync_duration_seconds";

/// Counter of reads and timestamp lookups that met stored data failing verification
/// (`LogError::Corrupt`): a damaged segment, never served. Through the `metrics` facade.
pub const CORRUPT_READS_METRIC: &str = "herald_log_corrupt_reads_total";
