//! Delayed delivery: an event published with a future delivery time waits in the internal
//! topic [`DELAYED_TOPIC`] and is appended to its target topic once due.
//!
//! Durability: the delayed copy is appended (fsynced) before the publish is acknowledged;
//! which delayed offsets were delivered is kept in `<data_dir>/delayed.json` (atomic
//! replace; on JetStream in the KV bucket `<PREFIX>_delayed`, written by the one gateway
//! that delivers, see `broker/shared.rs`), so after a restart every undelivered event is
//! scheduled again. Crash window:
//! an event appended to its target just before a crash, but not yet recorded as delivered,
//! is delivered again after restart — the target topic's dedup window absorbs it when the
//! restart comes within that window. Memory: 16 bytes per pending event (time, offset).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::PathBuf;

use bytes::Bytes;
use herald_core::{CloudEvent, ExtensionValue};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;

/// The internal topic holding events that wait for their delivery time.
pub const DELAYED_TOPIC: &str = "__herald.delayed";
/// Extension naming the target topic of a delayed event (removed on delivery).
pub const EXT_DELAY_TOPIC: &str = "heralddelaytopic";
/// Extension with the delivery time in ms since the epoch (removed on delivery).
pub const EXT_DELAY_AT: &str = "heralddelayat";
/// Extension with the forced target partition, if any (removed on delivery).
pub const EXT_DELAY_PARTITION: &str = "heralddelaypartition";
/// Longest accepted delay.
pub const DELAY_MS_MAX: i64 = 365 * 24 * 3600 * 1000;

/// Where a delayed event will go, read back from its stored copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayedTarget {
    pub topic: String,
    pub partition: Option<u32>,
    pub deliver_at_ms: i64,
}

/// Marks `event` for delayed delivery to `target`.
pub fn mark(event: &mut CloudEvent, target: &DelayedTarget) {
    event.extensions.insert(
        EXT_DELAY_TOPIC.into(),
        ExtensionValue::String(target.topic.clone()),
    );
    event.extensions.insert(
        EXT_DELAY_AT.into(),
        ExtensionValue::Integer(target.deliver_at_ms),
    );
    if let Some(p) = target.partition {
        event.extensions.insert(
            EXT_DELAY_PARTITION.into(),
            ExtensionValue::Integer(i64::from(p)),
        );
    }
}

/// Removes the delay marks, returning the target (None if the event carries none).
pub fn unmark(event: &mut CloudEvent) -> Option<DelayedTarget> {
    let topic = match event.extensions.remove(EXT_DELAY_TOPIC) {
        Some(ExtensionValue::String(t)) => t,
        _ => return None,
    };
    let deliver_at_ms = match event.extensions.remove(EXT_DELAY_AT) {
        Some(ExtensionValue::Integer(t)) => t,
        _ => return None,
    };
    let partition = match event.extensions.remove(EXT_DELAY_PARTITION) {
        Some(ExtensionValue::Integer(p)) => u32::try_from(p).ok(),
        _ => None,
    };
    Some(DelayedTarget {
        topic,
        partition,
        deliver_at_ms,
    })
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Every delayed offset below this was delivered.
    pub floor: u64,
    /// Delivered offsets at or above `floor`.
    delivered: BTreeSet<u64>,
}

/// The schedule of pending delayed events.
pub(crate) struct DelaySchedule {
    path: PathBuf,
    state: Mutex<ScheduleState>,
    pub(crate) wake: tokio::sync::Notify,
}

struct ScheduleState {
    pending: BinaryHeap<Reverse<(i64, u64)>>,
    checkpoint: Checkpoint,
}

impl DelaySchedule {
    /// Loads the checkpoint (missing file = nothing delivered yet).
    pub fn load(path: PathBuf) -> Result<Self, BrokerError> {
        let checkpoint = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::io(&path, std::io::Error::other(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(BrokerError::io(&path, e)),
        };
        Ok(Self {
            path,
            state: Mutex::new(ScheduleState {
                pending: BinaryHeap::new(),
                checkpoint,
            }),
            wake: tokio::sync::Notify::new(),
        })
    }

    /// The first delayed offset that may still be undelivered.
    pub fn floor(&self) -> u64 {
        self.state.lock().checkpoint.floor
    }

    /// Schedules a stored delayed event unless it was delivered already.
    pub fn schedule(&self, offset: u64, deliver_at_ms: i64) {
        let mut state = self.state.lock();
        if offset < state.checkpoint.floor || state.checkpoint.delivered.contains(&offset) {
            return;
        }
        state.pending.push(Reverse((deliver_at_ms, offset)));
    }

    /// Pending count.
    pub fn len(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// When the next event is due, if any.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.state.lock().pending.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes up to `max` events due at `now_ms`, in (time, offset) order.
    pub fn take_due(&self, now_ms: i64, max: usize) -> Vec<(i64, u64)> {
        let mut state = self.state.lock();
        let mut due = Vec::new();
        while due.len() < max {
            match state.pending.peek() {
                Some(Reverse((t, _))) if *t <= now_ms => {
                    if let Some(Reverse(entry)) = state.pending.pop() {
                        due.push(entry);
                    }
                }
                _ => break,
            }
        }
        due
    }

    /// Puts events back (delivery failed for a retryable reason).
    pub fn retry_at(&self, entries: &[u64], at_ms: i64) {
        let mut state = self.state.lock();
        for &offset in entries {
            state.pending.push(Reverse((at_ms, offset)));
        }
    }

    /// Replaces the checkpoint (one read from the shared store) and forgets every pending
    /// event: the caller schedules them again from the new floor.
    pub fn reset(&self, checkpoint: Checkpoint) {
        let mut state = self.state.lock();
        state.checkpoint = checkpoint;
        state.pending.clear();
    }

    /// Records deliveries durably in the checkpoint file (blocking I/O).
    pub fn mark_delivered(&self, offsets: &[u64], end_offset: u64) -> Result<(), BrokerError> {
        let bytes = self.record_delivered(offsets, end_offset)?;
        crate::metadata::write_atomically(&self.path, &bytes)
    }

    /// Records deliveries in memory and returns the checkpoint to store.
    pub fn record_delivered(
        &self,
        offsets: &[u64],
        end_offset: u64,
    ) -> Result<Vec<u8>, BrokerError> {
        let bytes = {
            let mut state = self.state.lock();
            let pending: BTreeSet<u64> = state.pending.iter().map(|Reverse((_, o))| *o).collect();
            let checkpoint = &mut state.checkpoint;
            checkpoint.delivered.extend(offsets.iter().copied());
            // Advance the floor over delivered offsets, never past one still pending.
            let limit = pending
                .first()
                .copied()
                .unwrap_or(end_offset)
                .min(end_offset);
            while checkpoint.floor < limit && checkpoint.delivered.remove(&checkpoint.floor) {
                checkpoint.floor += 1;
            }
            let floor = checkpoint.floor;
            checkpoint.delivered.retain(|o| *o >= floor);
            serde_json::to_vec(checkpoint)
                .map_err(|e| BrokerError::io(&self.path, std::io::Error::other(e)))?
        };
        Ok(bytes)
    }
}

/// Groups due events by (topic, forced partition), keeping order.
pub(crate) type DeliveryBatches =
    BTreeMap<(String, Option<u32>), Vec<(u64, Option<Bytes>, CloudEvent)>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip() {
        let mut e = CloudEvent::new("1", "/s", "t");
        let target = DelayedTarget {
            topic: "orders".into(),
            partition: Some(2),
            deliver_at_ms: 77,
        };
        mark(&mut e, &target);
        assert_eq!(unmark(&mut e), Some(target));
        assert!(e.extensions.is_empty());
    }

    #[test]
    fn schedule_orders_by_time_and_checkpoint_skips_delivered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("delayed.json");
        let s = DelaySchedule::load(path.clone()).expect("load");
        s.schedule(0, 300);
        s.schedule(1, 100);
        s.schedule(2, 200);
        assert_eq!(s.take_due(250, 10), vec![(100, 1), (200, 2)]);
        s.mark_delivered(&[1, 2], 3).expect("persist");
        let reloaded = DelaySchedule::load(path).expect("reload");
        assert_eq!(reloaded.floor(), 0, "offset 0 is still pending");
        for (offset, at) in [(0, 300), (1, 100), (2, 200)] {
            reloaded.schedule(offset, at);
        }
        assert_eq!(reloaded.len(), 1);
    }
}
