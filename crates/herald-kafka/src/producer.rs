//! Idempotent producers: producer ids (InitProducerId) and per-partition sequence numbers
//! that turn a retried batch into its original offsets instead of a second append.
//!
//! Owns: handing out producer ids, and for every `(producer id, topic, partition)` the
//! producer epoch and the sequence ranges and base offsets of its last
//! [`BATCHES_REMEMBERED`] appended batches (Kafka clients keep at most 5 in flight).
//! [`check_sequence`] is the pure rule; [`Producers`] keeps the state.
//!
//! State lives in memory only. Producer ids are seeded from the clock, so ids are not
//! reused across restarts. After a restart every producer is unknown: a batch whose first
//! sequence is not 0 gets `UNKNOWN_PRODUCER_ID`, and the client re-initialises (new id or
//! bumped epoch) and sends again with fresh sequence numbers. A batch that was appended
//! just before the restart but whose acknowledgement was lost can therefore be appended
//! twice: exactly-once holds within one server lifetime, at-least-once across restarts.
//!
//! Invariant: a partition's sequences are changed only while its async mutex is held
//! (across check, append and record), and only after the append they describe
//! succeeded, so a failed append never advances sequences; different partitions of one
//! producer append concurrently.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use parking_lot::Mutex;

/// Batches remembered per producer and partition for duplicate detection.
pub const BATCHES_REMEMBERED: usize = 5;
/// A producer not heard from for this long is forgotten.
pub const PRODUCER_IDLE_MAX: Duration = Duration::from_secs(24 * 60 * 60);
/// Most producers remembered; the longest idle are forgotten first beyond it.
pub const PRODUCERS_MAX: usize = 100_000;
/// Producer ids handed out per millisecond of uptime before ids could meet a later run's.
const IDS_PER_MILLISECOND: i64 = 1024;

/// What to do with one produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next batch in sequence (or not idempotent): append it.
    Append,
    /// Already appended: answer with its original base offset, append nothing.
    Duplicate { base_offset: u64 },
    /// Refuse with this Kafka error code.
    Reject(i16),
}

/// One appended batch: sequence range and where it landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: u64,
}

/// Sequence state of one producer on one partition.
#[derive(Debug, Default, Clone)]
pub struct PartitionSequences {
    pub batches: VecDeque<AppendedBatch>,
}

impl PartitionSequences {
    /// Remembers an appended batch (keeping the last [`BATCHES_REMEMBERED`]).
    pub fn record(&mut self, batch: AppendedBatch) {
        if self.batches.len() == BATCHES_REMEMBERED {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
    }
}

/// The sequence after `sequence` (Kafka wraps to 0 after `i32::MAX`).
pub fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

/// Decides what to do with a batch `[first, last]` of a producer whose epoch is
/// `producer_epoch` on a partition where it has `state` (None: nothing known).
pub fn check_sequence(state: Option<&PartitionSequences>, first: i32, last: i32) -> Verdict {
    let Some(state) = state.filter(|s| !s.batches.is_empty()) else {
        return if first == 0 {
            Verdict::Append
        } else {
            Verdict::Reject(ResponseError::UnknownProducerId.code())
        };
    };
    if let Some(seen) = state
        .batches
        .iter()
        .find(|b| b.first_sequence == first && b.last_sequence == last)
    {
        return Verdict::Duplicate {
            base_offset: seen.base_offset,
        };
    }
    match state.batches.back() {
        Some(latest) if first == next_sequence(latest.last_sequence) => Verdict::Append,
        _ => Verdict::Reject(ResponseError::OutOfOrderSequenceNumber.code()),
    }
}

/// One partition's sequences, locked across check, append and record.
pub type PartitionHandle = Arc<tokio::sync::Mutex<PartitionSequences>>;

/// One producer id's state.
#[derive(Debug)]
pub struct ProducerState {
    pub epoch: i16,
    pub partitions: HashMap<(String, u32), PartitionHandle>,
    last_used: Instant,
}

impl ProducerState {
    fn new(epoch: i16) -> Self {
        Self {
            epoch,
            partitions: HashMap::new(),
            last_used: Instant::now(),
        }
    }

    /// Checks a batch's epoch (a newer epoch starts the producer afresh, from sequence
    /// 0) and returns the partition's sequences to check the batch against.
    pub fn admit(
        &mut self,
        epoch: i16,
        partition: &(String, u32),
        first: i32,
    ) -> Result<PartitionHandle, i16> {
        self.last_used = Instant::now();
        if epoch < self.epoch {
            return Err(ResponseError::InvalidProducerEpoch.code());
        }
        if epoch > self.epoch {
            if first != 0 {
                return Err(ResponseError::OutOfOrderSequenceNumber.code());
            }
            self.epoch = epoch;
            self.partitions.clear();
        }
        Ok(Arc::clone(
            self.partitions.entry(partition.clone()).or_default(),
        ))
    }
}

/// Shared handle to one producer's state; hold its lock across check, append and record.
pub type ProducerHandle = Arc<tokio::sync::Mutex<ProducerState>>;

/// All producers known to this server run.
pub struct Producers {
    next_id: AtomicI64,
    states: Mutex<HashMap<i64, ProducerHandle>>,
}

impl Default for Producers {
    fn default() -> Self {
        Self::new()
    }
}

impl Producers {
    /// Ids start at `now_ms * 1024`, above every id a previous run can have handed out
    /// unless it averaged more than 1024 InitProducerId calls per millisecond.
    pub fn new() -> Self {
        let now_ms = chrono::Utc::now().timestamp_millis().max(1);
        Self {
            next_id: AtomicI64::new(now_ms.saturating_mul(IDS_PER_MILLISECOND)),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// InitProducerId for a non-transactional producer: a new id at epoch 0, or (KIP-360)
    /// the same id with the next epoch when `current` names a known producer and epoch.
    pub async fn init(&self, current: Option<(i64, i16)>) -> (i64, i16) {
        if let Some((id, epoch)) = current {
            let handle = self.states.lock().get(&id).cloned();
            if let Some(handle) = handle {
                let mut state = handle.lock().await;
                if state.epoch == epoch && epoch < i16::MAX {
                    state.epoch = epoch + 1;
                    state.partitions.clear();
                    state.last_used = Instant::now();
                    return (id, state.epoch);
                }
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut states = self.states.lock();
        Self::evict(&mut states);
        states.insert(id, Arc::new(tokio::sync::Mutex::new(ProducerState::new(0))));
        (id, 0)
    }

    /// The state of `producer_id`, created (at `epoch`) if this run never saw it.
    pub fn handle(&self, producer_id: i64, epoch: i16) -> ProducerHandle {
        let mut states = self.states.lock();
        if let Some(handle) = states.get(&producer_id) {
            return Arc::clone(handle);
        }
        Self::evict(&mut states);
        let handle = Arc::new(tokio::sync::Mutex::new(ProducerState::new(epoch)));
        states.insert(producer_id, Arc::clone(&handle));
        handle
    }

    /// Forgets idle producers, and the longest idle beyond [`PRODUCERS_MAX`].
    fn evict(states: &mut HashMap<i64, ProducerHandle>) {
        if states.len() < PRODUCERS_MAX {
            return;
        }
        let now = Instant::now();
        let mut idle: Vec<(Instant, i64)> = states
            .iter()
            .filter_map(|(id, h)| h.try_lock().ok().map(|s| (s.last_used, *id)))
            .collect();
        idle.sort();
        let excess = states.len() + 1 - PRODUCERS_MAX;
        for (index, (last_used, id)) in idle.into_iter().enumerate() {
            if index < excess || now.duration_since(last_used) > PRODUCER_IDLE_MAX {
                states.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.states.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appended(first: i32, last: i32, base_offset: u64) -> AppendedBatch {
        AppendedBatch {
            first_sequence: first,
            last_sequence: last,
            base_offset,
        }
    }

    #[test]
    fn first_batch_must_start_at_zero() {
        assert_eq!(check_sequence(None, 0, 9), Verdict::Append);
        assert_eq!(
            check_sequence(None, 10, 19),
            Verdict::Reject(ResponseError::UnknownProducerId.code())
        );
    }

    #[test]
    fn next_in_sequence_appends_duplicates_return_original_offsets_gaps_are_refused() {
        let mut state = PartitionSequences::default();
        state.record(appended(0, 9, 100));
        state.record(appended(10, 14, 110));
        assert_eq!(check_sequence(Some(&state), 15, 20), Verdict::Append);
        assert_eq!(
            check_sequence(Some(&state), 0, 9),
            Verdict::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            check_sequence(Some(&state), 10, 14),
            Verdict::Duplicate { base_offset: 110 }
        );
        let out_of_order = Verdict::Reject(ResponseError::OutOfOrderSequenceNumber.code());
        assert_eq!(check_sequence(Some(&state), 16, 20), out_of_order, "gap");
        assert_eq!(check_sequence(Some(&state), 5, 9), out_of_order, "overlap");
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut state = PartitionSequences::default();
        for i in 0..7 {
            state.record(appended(i * 10, i * 10 + 9, (i * 10) as u64));
        }
        assert_eq!(state.batches.len(), BATCHES_REMEMBERED);
        assert_eq!(
            check_sequence(Some(&state), 20, 29),
            Verdict::Duplicate { base_offset: 20 }
        );
        assert!(matches!(
            check_sequence(Some(&state), 0, 9),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut state = PartitionSequences::default();
        state.record(appended(i32::MAX - 1, i32::MAX, 5));
        assert_eq!(check_sequence(Some(&state), 0, 3), Verdict::Append);
    }

    #[tokio::test]
    async fn epochs_fence_old_producers_and_reset_on_bump() {
        let mut state = ProducerState::new(3);
        let tp = ("t".to_string(), 0);
        let partition = state.admit(3, &tp, 0).expect("admitted");
        partition.lock().await.record(appended(0, 4, 0));
        assert_eq!(
            state.admit(2, &tp, 5).err(),
            Some(ResponseError::InvalidProducerEpoch.code())
        );
        assert_eq!(
            state.admit(4, &tp, 5).err(),
            Some(ResponseError::OutOfOrderSequenceNumber.code())
        );
        let fresh = state.admit(4, &tp, 0).expect("new epoch");
        assert_eq!(
            check_sequence(Some(&*fresh.lock().await), 0, 1),
            Verdict::Append
        );
        assert_eq!(state.epoch, 4);
    }

    #[tokio::test]
    async fn ids_are_unique_and_epochs_bump() {
        let producers = Producers::new();
        let (a, epoch_a) = producers.init(None).await;
        let (b, _) = producers.init(None).await;
        assert_ne!(a, b);
        assert_eq!(epoch_a, 0);
        assert_eq!(producers.init(Some((a, 0))).await, (a, 1));
        let (c, epoch_c) = producers.init(Some((12345, 0))).await;
        assert!(c > b);
        assert_eq!(epoch_c, 0);
        let later = Producers::new();
        let (d, _) = later.init(None).await;
        assert!(d >= a, "a later run never goes below an earlier run's ids");
    }
}
