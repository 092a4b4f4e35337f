//! [`LogConfig`] and [`FsyncPolicy`]: how a partition log sizes, syncs and expires data.
//!
//! Owns: the tunables, their defaults, and their validation ([`LogConfig::validate`]).
//! Invariant: a config that passed validation never makes the log allocate or queue
//! without a bound.

use std::time::Duration;

use crate::error::LogError;

/// When appended data is fdatasync'd, and therefore what a power failure can lose.
///
/// A process crash (the OS keeps running) loses nothing that was acknowledged under
/// any policy: acknowledged data is already in the OS page cache. The policies differ
/// only for a power failure or kernel crash. In every mode a batch is atomic:
/// recovery truncates a torn batch, so a batch is either wholly present or wholly gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is acknowledged, and becomes visible to readers, only after the
    /// fdatasync that covers it. Power failure loses nothing that was acknowledged;
    /// appends still in flight may be lost (each wholly). Concurrent appends share
    /// one fdatasync (group commit).
    Always,
    /// Appends are acknowledged and visible as soon as they are written; a
    /// fdatasync runs at most this long after the first unsynced write. Power
    /// failure loses up to one interval of acknowledged appends (plus the time the
    /// fdatasync itself takes), and those offsets are then reused by later appends,
    /// so a consumer may have seen records that no longer exist.
    Interval(Duration),
    /// Appends are acknowledged and visible as soon as they are written; data is
    /// fdatasync'd only when a segment is sealed (rolled), on `flush()` and on
    /// `close()`. Power failure can lose everything appended to the active segment
    /// since it was created or last flushed (up to `segment_bytes_max`), with the
    /// same offset reuse as `Interval`.
    Never,
}

/// Tunables of one partition log. `Default` gives the documented defaults.
///
/// Memory bound per partition: the writer queue holds at most `queue_depth_max`
/// encoded batches of at most `batch_bytes_max` bytes each, and the writer works on at
/// most as many more at a time; a read holds its result plus one 64 KiB read chunk (or
/// one batch, if larger); recovery holds one 1 MiB chunk (or one batch) and 64 KiB of
/// index entries.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Roll the active segment when the next batch would take it past this many
    /// bytes (a batch larger than this gets a segment of its own). At most
    /// `u32::MAX`, since index entries hold 32-bit file positions. Default 64 MiB.
    pub segment_bytes_max: u64,
    /// Roll the active segment on the first append after its first append became
    /// this old. Checked on append only: an idle partition does not roll. Default none.
    pub segment_age_max: Option<Duration>,
    /// One sparse-index entry per this many bytes of log (and one time-index entry at
    /// most this often). Default 4096.
    pub index_interval_bytes: u32,
    /// When data is fdatasync'd. Default [`FsyncPolicy::Always`].
    pub fsync: FsyncPolicy,
    /// Delete the oldest sealed segments while the log (all segment files) is bigger
    /// than this. Default none (keep all).
    pub retention_bytes: Option<u64>,
    /// Delete the oldest sealed segments whose newest record timestamp is older than
    /// this. Default none.
    pub retention_age: Option<Duration>,
    /// Largest encoded batch (header included) one append may write. Default 16 MiB.
    pub batch_bytes_max: u32,
    /// Appends that may wait for the writer before `append` fails with
    /// `Backpressure`. Default 4096.
    pub queue_depth_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 * 1024 * 1024,
            segment_age_max: None,
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::Always,
            retention_bytes: None,
            retention_age: None,
            batch_bytes_max: 16 * 1024 * 1024,
            queue_depth_max: 4096,
        }
    }
}

/// Smallest accepted `segment_bytes_max`: one header plus one tiny record.
pub const SEGMENT_BYTES_MIN: u64 = 64;

impl LogConfig {
    /// Checks every field; `open()` calls this.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |field, reason: &str| {
            Err(LogError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.segment_bytes_max < SEGMENT_BYTES_MIN {
            return invalid("segment_bytes_max", "must be at least 64 bytes");
        }
        if self.segment_bytes_max > u64::from(u32::MAX) {
            return invalid("segment_bytes_max", "must be below 4 GiB");
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes", "must be at least 1");
        }
        if u64::from(self.batch_bytes_max) < crate::batch::HEADER_BYTES as u64 {
            return invalid(
                "batch_bytes_max",
                "must be at least 40 bytes (one batch header)",
            );
        }
        if self.queue_depth_max == 0 {
            return invalid("queue_depth_max", "must be at least 1");
        }
        if self.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return invalid("fsync", "interval must be longer than zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let config = LogConfig::default();
        assert_eq!(config.segment_bytes_max, 64 << 20);
        assert_eq!(config.index_interval_bytes, 4096);
        assert_eq!(config.fsync, FsyncPolicy::Always);
        assert_eq!(config.batch_bytes_max, 16 << 20);
        assert_eq!(config.queue_depth_max, 4096);
        assert!(config.segment_age_max.is_none());
        assert!(config.retention_bytes.is_none() && config.retention_age.is_none());
        config.validate().expect("defaults are valid");
    }

    #[test]
    fn rejects_unworkable_values() {
        let bad = [
            LogConfig {
                segment_bytes_max: 10,
                ..LogConfig::default()
            },
            LogConfig {
                segment_bytes_max: 1 << 33,
                ..LogConfig::default()
            },
            LogConfig {
                index_interval_bytes: 0,
                ..LogConfig::default()
            },
            LogConfig {
                queue_depth_max: 0,
                ..LogConfig::default()
            },
            LogConfig {
                batch_bytes_max: 8,
                ..LogConfig::default()
            },
        ];
        for config in bad {
            assert!(matches!(
                config.validate(),
                Err(LogError::InvalidConfig { .. })
            ));
        }
    }
}
