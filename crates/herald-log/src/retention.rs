//! Retention: deleting whole sealed segments from the front of the log.
//!
//! Owns: the deletion rule. Oldest first, only sealed segments (never the last,
//! active one), and only while a limit is exceeded: the log's total size is above
//! `retention_bytes`, or the oldest segment's largest record timestamp is older than
//! `now - retention_age`. A segment is removed from the segment list before its files
//! are deleted; readers that already hold it finish their read (Unix keeps an
//! unlinked file readable through an open handle).

use std::sync::Arc;

use crate::error::LogError;
use crate::segment::Segment;
use crate::state::Shared;

pub(crate) fn enforce(shared: &Shared, now_ms: i64) -> Result<usize, LogError> {
    let config = &shared.config;
    if config.retention_bytes.is_none() && config.retention_age.is_none() {
        return Ok(0);
    }
    let oldest_kept_ms = config.retention_age.map(|age| {
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        now_ms.saturating_sub(age_ms)
    });
    let victims: Vec<Arc<Segment>> = {
        let mut segments = shared.segments.write();
        let mut total_bytes: u64 = segments.iter().map(|s| s.size_bytes()).sum();
        let mut count = 0;
        for segment in segments.iter().take(segments.len().saturating_sub(1)) {
            let too_big = config.retention_bytes.is_some_and(|max| total_bytes > max);
            let too_old = oldest_kept_ms.is_some_and(|kept| segment.max_timestamp_ms() < kept);
            if !segment.is_sealed() || !(too_big || too_old) {
                break;
            }
            total_bytes -= segment.size_bytes();
            count += 1;
        }
        drain_front(shared, &mut segments, count)
    };
    delete_segments(&victims)
}

/// Deletes whole sealed segments whose every record is below `offset` (like Kafka's
/// DeleteRecords, rounded down to segment boundaries). Returns how many were deleted.
pub(crate) fn delete_before(shared: &Shared, offset: u64) -> Result<usize, LogError> {
    let victims: Vec<Arc<Segment>> = {
        let mut segments = shared.segments.write();
        let mut count = 0;
        for pair in segments.windows(2) {
            let [segment, next] = pair else { break };
            if !segment.is_sealed() || next.base_offset() > offset {
                break;
            }
            count += 1;
        }
        drain_front(shared, &mut segments, count)
    };
    delete_segments(&victims)
}

/// Removes the first `count` segments from the list and moves the start offset.
fn drain_front(
    shared: &Shared,
    segments: &mut Vec<Arc<Segment>>,
    count: usize,
) -> Vec<Arc<Segment>> {
    let victims = segments.drain(..count).collect();
    if let Some(first) = segments.first() {
        shared.set_start_offset(first.base_offset());
    }
    victims
}

fn delete_segments(victims: &[Arc<Segment>]) -> Result<usize, LogError> {
    let mut first_error = None;
    for segment in victims {
        tracing::info!(
            path = %segment.log_path().display(),
            base_offset = segment.base_offset(),
            "deleting segment"
        );
        if let Err(error) = segment.delete_files() {
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(victims.len()),
    }
}
