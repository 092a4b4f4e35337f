//! Publish-side deduplication: an event whose CloudEvents (`source`, `id`) was appended
//! to the same topic within the topic's window is acknowledged with its first position
//! and not appended again.
//!
//! Invariants: a key is either absent, `Pending` (one publisher's [`Reservation`] owns it
//! and will complete or abandon it, also when dropped) or `Done` with the position of its
//! only append. Memory is bounded by `entries_max`: the oldest `Done` keys are forgotten
//! first. After a restart the window is rebuilt from the log tail (see `Topic::open`).
//!
//! Keys are 128-bit xxh3 hashes of (`source`, `id`), so the hot path hashes each event
//! once and copies 16 bytes, never a string. Two different events share a key with
//! probability ≈ n²/2¹²⁹ for n keys in the window (≈ 10⁻²⁹ at the default 100,000).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;
use xxhash_rust::xxh3::Xxh3;

/// The 128-bit hash of (source, id); see [`dedup_key`].
pub type DedupKey = u128;

/// The dedup key of an event: xxh3-128 over the length-prefixed source and the id (the
/// prefix keeps (`ab`, `c`) and (`a`, `bc`) apart).
pub fn dedup_key(source: &str, id: &str) -> DedupKey {
    let mut hasher = Xxh3::new();
    hasher.update(&(source.len() as u64).to_le_bytes());
    hasher.update(source.as_bytes());
    hasher.update(id.as_bytes());
    hasher.digest128()
}

/// Hashes a [`DedupKey`] for a `HashMap` by folding it: the key already is a uniform
/// hash, so hashing it again would only cost time.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u128 input (never in this module); stays correct anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, key: u128) {
        self.0 = (key as u64) ^ ((key >> 64) as u64);
    }
}

/// A map keyed by [`DedupKey`] with the folding hasher.
pub type KeyMap<V> = HashMap<DedupKey, V, BuildHasherDefault<KeyHasher>>;

/// Where the keys of one finished batch landed: `None` while it is being appended; a key
/// missing from the finished map was abandoned (its publisher failed).
pub type BatchOutcome = Option<Arc<KeyMap<(u32, u64)>>>;

enum Slot {
    Pending(watch::Receiver<BatchOutcome>),
    Done { partition: u32, offset: u64 },
}

#[derive(Default)]
struct State {
    slots: KeyMap<Slot>,
    /// `Done` keys by append time, oldest first.
    expiry: VecDeque<(i64, DedupKey)>,
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
    /// Another publisher is appending it right now; see [`wait_in_flight`].
    InFlight(watch::Receiver<BatchOutcome>),
}

/// Waits for the publisher that owns `key` and returns where it landed, or `None` if
/// that publisher failed.
pub async fn wait_in_flight(
    key: DedupKey,
    mut rx: watch::Receiver<BatchOutcome>,
) -> Option<(u32, u64)> {
    match rx.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.as_ref().and_then(|map| map.get(&key).copied()),
        Err(_) => None,
    }
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
        let (tx, rx) = watch::channel(None);
        let mut first_in_batch: KeyMap<usize> = KeyMap::default();
        first_in_batch.reserve(keys.len());
        let mut owned = Vec::with_capacity(keys.len());
        let mut claims = Vec::with_capacity(keys.len());
        let mut state = self.state.lock();
        self.expire(&mut state, now_ms);
        state.slots.reserve(keys.len());
        for (index, &key) in keys.iter().enumerate() {
            if let Some(&first) = first_in_batch.get(&key) {
                claims.push(Claim::SameAs(first));
                continue;
            }
            first_in_batch.insert(key, index);
            claims.push(match state.slots.get(&key) {
                Some(Slot::Done { partition, offset }) => Claim::Duplicate {
                    partition: *partition,
                    offset: *offset,
                },
                Some(Slot::Pending(other)) => Claim::InFlight(other.clone()),
                None => {
                    state.slots.insert(key, Slot::Pending(rx.clone()));
                    owned.push(key);
                    Claim::New
                }
            });
        }
        drop(state);
        (
            claims,
            Reservation {
                window: Arc::clone(self),
                keys: owned,
                tx,
                finished: false,
            },
        )
    }

    /// Records an already appended event (used when rebuilding the window at startup).
    pub fn remember(&self, key: DedupKey, partition: u32, offset: u64, appended_ms: i64) {
        let mut state = self.state.lock();
        state.slots.insert(key, Slot::Done { partition, offset });
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
        while let Some(&(ts, key)) = state.expiry.front() {
            if ts >= horizon && state.expiry.len() <= self.entries_max {
                break;
            }
            state.expiry.pop_front();
            if matches!(state.slots.get(&key), Some(Slot::Done { .. })) {
                state.slots.remove(&key);
            }
        }
    }

    /// Settles the keys a reservation owned: `Done` where `positions` has them, removed
    /// otherwise.
    fn finish(&self, keys: &[DedupKey], positions: &KeyMap<(u32, u64)>, now_ms: i64) {
        let mut state = self.state.lock();
        for key in keys {
            match positions.get(key) {
                Some(&(partition, offset)) => {
                    state.slots.insert(*key, Slot::Done { partition, offset });
                    state.expiry.push_back((now_ms, *key));
                }
                None => {
                    state.slots.remove(key);
                }
            }
        }
        self.expire(&mut state, now_ms);
    }
}

/// Ownership of the keys a publisher claimed `New`; one notification channel per batch
/// tells concurrent publishers of the same keys where they landed.
pub struct Reservation {
    window: Arc<DedupWindow>,
    keys: Vec<DedupKey>,
    tx: watch::Sender<BatchOutcome>,
    finished: bool,
}

impl Reservation {
    /// Marks the keys appended at `positions` (keys missing from it are abandoned).
    pub fn complete(mut self, positions: KeyMap<(u32, u64)>, now_ms: i64) {
        let positions = Arc::new(positions);
        self.window.finish(&self.keys, &positions, now_ms);
        self.finished = true;
        self.tx.send_replace(Some(positions));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.finished {
            let none = Arc::new(KeyMap::default());
            self.window.finish(&self.keys, &none, i64::MIN);
            self.tx.send_replace(Some(none));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> DedupKey {
        dedup_key("/src", id)
    }

    fn positions(entries: &[(DedupKey, (u32, u64))]) -> KeyMap<(u32, u64)> {
        entries.iter().copied().collect()
    }

    #[test]
    fn second_sighting_is_a_duplicate_until_the_window_passes() {
        let w = DedupWindow::new(1000, 100);
        let (claims, r) = w.claim_batch(&[key("a"), key("a"), key("b")], 0);
        assert!(matches!(claims[0], Claim::New));
        assert!(matches!(claims[1], Claim::SameAs(0)));
        r.complete(positions(&[(key("a"), (0, 5)), (key("b"), (1, 6))]), 0);
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
        let Some(Claim::InFlight(rx)) = claims.into_iter().next() else {
            panic!("expected in flight")
        };
        drop(first);
        let outcome = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(wait_in_flight(key("a"), rx));
        assert_eq!(outcome, None, "abandoned");
        let (claims, _third) = w.claim_batch(&[key("a")], 0);
        assert!(matches!(claims[0], Claim::New));
    }

    #[test]
    fn in_flight_claims_see_where_the_owner_appended() {
        let w = DedupWindow::new(1000, 100);
        let (_, first) = w.claim_batch(&[key("a"), key("b")], 0);
        let (claims, _second) = w.claim_batch(&[key("b")], 0);
        let Some(Claim::InFlight(rx)) = claims.into_iter().next() else {
            panic!("expected in flight")
        };
        first.complete(positions(&[(key("a"), (0, 1)), (key("b"), (2, 7))]), 0);
        let outcome = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(wait_in_flight(key("b"), rx));
        assert_eq!(outcome, Some((2, 7)));
    }

    #[test]
    fn keys_separate_source_from_id() {
        assert_ne!(dedup_key("ab", "c"), dedup_key("a", "bc"));
        assert_eq!(dedup_key("/s", "1"), dedup_key("/s", "1"));
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
