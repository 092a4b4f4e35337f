//! Broker-wide and per-topic configuration. Per-topic settings are stored with the
//! topic's metadata, so they survive restarts unchanged.

use std::path::PathBuf;
use std::time::Duration;

use herald_core::ValidationError;
use herald_log::{FsyncPolicy, LogConfig};
use serde::{Deserialize, Serialize};

/// Largest partition count a topic may have.
pub const PARTITIONS_MAX: u32 = 1024;

/// Broker-wide settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Largest encoded event accepted (default 1 MiB).
    pub max_event_bytes: usize,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// How often expired group members are evicted.
    pub session_check_interval: Duration,
    /// Per-partition writer queue depth before publishes get backpressure.
    pub partition_queue_depth_max: usize,
    /// Where topic partitions are stored.
    pub storage: StorageBackend,
}

/// Where topic partitions live. Metadata, group offsets and schedules stay in `data_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageBackend {
    /// Herald's own log under `data_dir` (the default).
    #[default]
    Local,
    /// One JetStream stream per partition on a NATS server or cluster.
    JetStream(crate::storage::JetStreamConfig),
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            max_event_bytes: 1024 * 1024,
            retention_check_interval: Duration::from_secs(30),
            session_check_interval: Duration::from_millis(250),
            partition_queue_depth_max: 4096,
            storage: StorageBackend::Local,
        }
    }
}

/// When a topic's appends are fsynced (see `herald_log::FsyncPolicy` for what each loses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Acknowledge only after fdatasync (group commit). The default.
    #[default]
    Always,
    /// fsync every `fsync_interval_ms`; acknowledged data of the last interval may be lost on power failure.
    Interval,
    /// Leave it to the OS; everything not yet written back may be lost on power failure.
    Never,
}

/// Per-topic settings, as given at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    #[serde(default)]
    pub fsync: FsyncMode,
    #[serde(default = "default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    #[serde(default)]
    pub retention_ms: Option<u64>,
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    #[serde(default)]
    pub segment_ms: Option<u64>,
    #[serde(default)]
    pub max_event_bytes: Option<usize>,
    /// Publishes repeating a (source, id) seen within this window are acknowledged but not
    /// appended again; 0 turns deduplication off. Default 2 minutes.
    #[serde(default = "default_dedup_window_ms")]
    pub dedup_window_ms: u64,
    /// Most (source, id) keys remembered per topic; past it the oldest are forgotten first,
    /// which shortens the effective window under very high rates.
    #[serde(default = "default_dedup_entries_max")]
    pub dedup_entries_max: usize,
}

fn default_partitions() -> u32 {
    1
}
fn default_fsync_interval_ms() -> u64 {
    100
}
fn default_dedup_window_ms() -> u64 {
    120_000
}
fn default_dedup_entries_max() -> usize {
    100_000
}
fn default_segment_bytes() -> u64 {
    64 * 1024 * 1024
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            partitions: default_partitions(),
            fsync: FsyncMode::Always,
            fsync_interval_ms: default_fsync_interval_ms(),
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: default_segment_bytes(),
            segment_ms: None,
            max_event_bytes: None,
            dedup_window_ms: default_dedup_window_ms(),
            dedup_entries_max: default_dedup_entries_max(),
        }
    }
}

impl TopicConfig {
    pub fn with_partitions(partitions: u32) -> Self {
        Self {
            partitions,
            ..Self::default()
        }
    }

    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return Err(ValidationError::new(
                "partitions",
                format!(
                    "must be between 1 and {PARTITIONS_MAX}, got {}",
                    self.partitions
                ),
            ));
        }
        if self.fsync == FsyncMode::Interval && self.fsync_interval_ms == 0 {
            return Err(ValidationError::new(
                "fsync_interval_ms",
                "must be at least 1",
            ));
        }
        if self.segment_bytes < 1024 {
            return Err(ValidationError::new(
                "segment_bytes",
                "must be at least 1024",
            ));
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return Err(ValidationError::new("segment_bytes", "must be below 4 GiB"));
        }
        if self.dedup_entries_max == 0 {
            return Err(ValidationError::new(
                "dedup_entries_max",
                "must be at least 1",
            ));
        }
        if self.max_event_bytes == Some(0) {
            return Err(ValidationError::new(
                "max_event_bytes",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The storage settings for one of this topic's partitions.
    pub fn log_config(&self, queue_depth_max: usize) -> LogConfig {
        let fsync = match self.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => {
                FsyncPolicy::Interval(Duration::from_millis(self.fsync_interval_ms))
            }
            FsyncMode::Never => FsyncPolicy::Never,
        };
        LogConfig {
            segment_bytes_max: self.segment_bytes,
            segment_age_max: self.segment_ms.map(Duration::from_millis),
            fsync,
            retention_bytes: self.retention_bytes,
            retention_age: self.retention_ms.map(Duration::from_millis),
            queue_depth_max,
            ..LogConfig::default()
        }
    }
}
