//! Publish-side deduplication: an event whose CloudEvents (`source`, `id`) was appended
//! to the same topic within the topic's window is acknowledged with its first position
//! and not appended again.
//!
//! Invariants: a key is either absent, `Pending` (one publisher owns it and will complete
//! or abandon it, also when dropped) or `Done` with the position of its only append.
//! Memory is bounded by `entries_max`: the oldest `Done` keys are forgotten first. After a
//! restart the window is rebuilt from the log tail (see `Topic::open`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// (source, id).
pub type DedupKey = (String, String);

/// Where a key's event landed, or `None` if its publisher failed.
pub type PendingOutcome = Option<Option<(u32, u64)>>;

enum Slot {
    Pending(watch::Receiver<PendingOutcome>),
    Done { partition: u32, offset: u64 },
}

#[derive(Default)]
struct State {
    slots: HashMap<DedupKey, Slot>,
    /// `Done` keys by append time, oldest first.
    expiry: VecDeque<(i64, DedupKey)>,
    senders: HashMap<DedupKey, watch::Sender<PendingOutcome>>,
}

/// The dedup window of one topic.
pub struct DedupWindow {
    window_ms: i64,
    entries_max: usize,
    state: Mutex<State>,
}

/// What a publisher learns about each event of its batch.
pub enum Claim {
    /// First sighting: this publisher appends it.
    New,
    /// Already appended at this position.
    Duplicate { partition: u32, offset: u64 },
    /// The same key appeared earlier in this batch (at that index).
    SameAs(usize),
    /// Another publisher is appending it right now.
    InFlight(watch::Receiver<PendingOutcome>),
}

impl DedupWindow {
    pub fn new(window_ms: u64, entries_max: usize) -> Arc<Self> {
        Arc::new(Self {
            window_ms: i64::try_from(window_ms).unwrap_or(i64::MAX),
            entries_max: entries_max.max(1),
            state: Mutex::new(State::default()),
        })
    }

    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// Claims every key of a batch at once. Keys claimed `New` are owned by the returned
    /// [`Reservation`], which abandons them if dropped before `complete`.
    pub fn claim_batch(
        self: &Arc<Self>,
        keys: &[DedupKey],
        now_ms: i64,
    ) -> (Vec<Claim>, Reservation) {
        let mut state = self.state.lock();
        self.expire(&mut state, now_ms);
        let mut first_in_batch: HashMap<&DedupKey, usize> = HashMap::new();
        let mut owned = Vec::new();
        let claims = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                if let Some(&first) = first_in_batch.get(key) {
                    return Claim::SameAs(first);
                }
                first_in_batch.insert(key, index);
                match state.slots.get(key) {
                    Some(Slot::Done { partition, offset }) => Claim::Duplicate {
                        partition: *partition,
                        offset: *offset,
                    },
                    Some(Slot::Pending(rx)) => Claim::InFlight(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        state.slots.insert(key.clone(), Slot::Pending(rx));
                        state.senders.insert(key.clone(), tx);
                        owned.push(key.clone());
                        Claim::New
                    }
                }
            })
            .collect();
        (
            claims,
            Reservation {
                window: Arc::clone(self),
                keys: owned,
                finished: false,
            },
        )
    }

    /// Records an already appended event (used when rebuilding the window at startup).
    pub fn remember(&self, key: DedupKey, partition: u32, offset: u64, appended_ms: i64) {
        let mut state = self.state.lock();
        state
            .slots
            .insert(key.clone(), Slot::Done { partition, offset });
        state.expiry.push_back((appended_ms, key));
        self.expire(&mut state, appended_ms);
    }

    /// Number of keys held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&self, state: &mut State, now_ms: i64) {
        let horizon = now_ms.saturating_sub(self.window_ms);
        while let Some((ts, key)) = state.expiry.front() {
            if *ts >= horizon && state.expiry.len() <= self.entries_max {
                break;
            }
            let key = key.clone();
            state.expiry.pop_front();
            if matches!(state.slots.get(&key), Some(Slot::Done { .. })) {
                state.slots.remove(&key);
            }
        }
    }

    fn finish(
        &self,
        keys: &[DedupKey],
        positions: Option<&HashMap<DedupKey, (u32, u64)>>,
        now_ms: i64,
    ) {
        let mut state = self.state.lock();
        for key in keys {
            let sender = state.senders.remove(key);
            match positions.and_then(|p| p.get(key)) {
                Some(&(partition, offset)) => {
                    state
                        .slots
                        .insert(key.clone(), Slot::Done { partition, offset });
                    state.expiry.push_back((now_ms, key.clone()));
                    if let Some(tx) = sender {
                        tx.send_replace(Some(Some((partition, offset))));
                    }
                }
                None => {
                    state.slots.remove(key);
                    if let Some(tx) = sender {
                        tx.send_replace(Some(None));
                    }
                }
            }
        }
        self.expire(&mut state, now_ms);
    }
}

/// Ownership of the keys a publisher claimed `New`.
pub struct Reservation {
    window: Arc<DedupWindow>,
    keys: Vec<DedupKey>,
    finished: bool,
}

impl Reservation {
    /// Marks the keys appended at `positions` (keys missing from it are abandoned).
    pub fn complete(mut self, positions: &HashMap<DedupKey, (u32, u64)>, now_ms: i64) {
        self.window.finish(&self.keys, Some(positions), now_ms);
        self.finished = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.finished {
            self.window.finish(&self.keys, None, i64::MIN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> DedupKey {
        ("/src".to_string(), id.to_string())
    }

    #[test]
    fn second_sighting_is_a_duplicate_until_the_window_passes() {
        let w = DedupWindow::new(1000, 100);
        let (claims, r) = w.claim_batch(&[key("a"), key("a"), key("b")], 0);
        assert!(matches!(claims[0], Claim::New));
        assert!(matches!(claims[1], Claim::SameAs(0)));
        let positions = HashMap::from([(key("a"), (0, 5)), (key("b"), (1, 6))]);
        r.complete(&positions, 0);
        let (claims, _r) = w.claim_batch(&[key("a")], 500);
        assert!(matches!(
            claims[0],
            Claim::Duplicate {
                partition: 0,
                offset: 5
            }
        ));
        let (claims, _r) = w.claim_batch(&[key("b")], 5000);
        assert!(matches!(claims[0], Claim::New), "expired after the window");
    }

    #[test]
    fn in_flight_claims_see_the_outcome_and_drops_abandon() {
        let w = DedupWindow::new(1000, 100);
        let (_, first) = w.claim_batch(&[key("a")], 0);
        let (claims, _second) = w.claim_batch(&[key("a")], 0);
        let Claim::InFlight(rx) = &claims[0] else {
            panic!("expected in flight")
        };
        drop(first);
        assert_eq!(*rx.borrow(), Some(None), "abandoned");
        let (claims, _third) = w.claim_batch(&[key("a")], 0);
        assert!(matches!(claims[0], Claim::New));
    }

    #[test]
    fn memory_is_bounded() {
        let w = DedupWindow::new(u64::MAX / 2, 10);
        for i in 0..100 {
            w.remember(key(&i.to_string()), 0, i, 0);
        }
        assert!(w.len() <= 11, "{}", w.len());
    }
}
