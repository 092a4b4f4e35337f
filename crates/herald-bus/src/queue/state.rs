//! [`QueueState`]: the pure state machine of one subscription queue (no I/O, no clock:
//! times are passed in), so every rule is unit-testable and replayable.
//!
//! The queue's messages are the offsets of its queue log. State:
//! - `floor`: every offset below it is done (acknowledged or dead-lettered);
//! - `scanned`: offsets in `[floor, scanned)` are tracked (ready, delayed, leased,
//!   pending dead-lettering or done); offsets at or past it have not been looked at;
//! - durable facts (journaled, see [`JournalEntry`]): done offsets, delivery counts,
//!   nack delays; everything else (leases, receipts, reasons) is in memory only.
//!
//! Invariants: a tracked offset is in exactly one of ready / delayed / leased /
//! dead-pending / done; a message is leased to at most one receipt at a time; a done
//! offset is never leased again; `scanned - floor <= tracked_max` (the memory bound:
//! per tracked message at most a few map entries).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// A durable fact about a message, as written to the queue's journal. Replaying a
/// journal applies them in order; each is idempotent and `Done` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalEntry {
    /// The message was handed out for the `count`-th time.
    Delivered { offset: u64, count: u32 },
    /// Acknowledged or dead-lettered: never delivered again.
    Done { offset: u64 },
    /// Not to be delivered before `until_ms` (a nack with delay).
    Delay { offset: u64, until_ms: i64 },
}

/// A handle for one lease of one message: `<offset>.<nonce hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub offset: u64,
    pub nonce: u64,
}

impl Receipt {
    pub fn encode(&self) -> String {
        format!("{}.{:016x}", self.offset, self.nonce)
    }

    pub fn parse(text: &str) -> Option<Receipt> {
        let (offset, nonce) = text.split_once('.')?;
        Some(Receipt {
            offset: offset.parse().ok()?,
            nonce: u64::from_str_radix(nonce, 16).ok()?,
        })
    }
}

/// One message handed out by [`QueueState::lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leased {
    pub receipt: Receipt,
    pub delivery_count: u32,
}

/// What became of one receipt in an ack, nack or extend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptOutcome {
    Acked,
    Released,
    Delayed,
    Extended,
    /// The message will be moved to the dead-letter topic.
    DeadLettered,
    /// It was already acknowledged or dead-lettered.
    AlreadyDone,
    /// The lease expired and the message was handed out again (or the server
    /// restarted): this receipt no longer owns it.
    LeaseLost,
    /// Not a receipt of this queue.
    Invalid,
}

#[derive(Debug, Clone, Copy)]
struct Delivery {
    count: u32,
    /// Nonce of the latest lease (0: none since startup).
    nonce: u64,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    nonce: u64,
    expires_ms: i64,
}

/// A snapshot of the durable part, written when the journal is compacted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableState {
    pub floor: u64,
    pub done: Vec<u64>,
    pub deliveries: Vec<(u64, u32)>,
    pub delays: Vec<(u64, i64)>,
}

/// Counts for describe / metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub ack_floor: u64,
    pub scanned: u64,
    pub ready: usize,
    pub delayed: usize,
    pub leased: usize,
    pub dead_pending: usize,
}

#[derive(Debug)]
pub struct QueueState {
    floor: u64,
    scanned: u64,
    tracked_max: usize,
    max_deliveries: u32,
    done: BTreeSet<u64>,
    deliveries: HashMap<u64, Delivery>,
    not_before: HashMap<u64, i64>,
    ready: BTreeSet<u64>,
    delayed: BTreeSet<(i64, u64)>,
    leases: HashMap<u64, Lease>,
    expiries: BTreeSet<(i64, u64)>,
    dead_pending: BTreeSet<u64>,
    reasons: HashMap<u64, String>,
}

impl QueueState {
    /// Applies `op` to each receipt at `now_ms`; a receipt that does not parse gets
    /// `invalid` without reaching `op`. Returns each receipt's outcome and the journal
    /// entries `op` produced (to append before answering).
    pub fn apply_receipts<O>(
        &mut self,
        receipts: &[String],
        now_ms: i64,
        invalid: O,
        mut op: impl FnMut(&mut QueueState, Receipt, i64) -> (O, Option<JournalEntry>),
    ) -> (Vec<(String, O)>, Vec<JournalEntry>)
    where
        O: Clone,
    {
        let mut entries = Vec::new();
        let outcomes = receipts
            .iter()
            .map(|text| {
                let outcome = match Receipt::parse(text) {
                    None => invalid.clone(),
                    Some(receipt) => {
                        let (outcome, entry) = op(self, receipt, now_ms);
                        entries.extend(entry);
                        outcome
                    }
                };
                (text.clone(), outcome)
            })
            .collect();
        (outcomes, entries)
    }

    pub fn new(durable: DurableState, max_deliveries: u32, tracked_max: usize) -> Self {
        let mut state = Self {
            floor: durable.floor,
            scanned: durable.floor,
            tracked_max: tracked_max.max(1),
            max_deliveries: max_deliveries.max(1),
            done: BTreeSet::new(),
            deliveries: HashMap::new(),
            not_before: HashMap::new(),
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            leases: HashMap::new(),
            expiries: BTreeSet::new(),
            dead_pending: BTreeSet::new(),
            reasons: HashMap::new(),
        };
        for offset in durable.done {
            state.apply(JournalEntry::Done { offset });
        }
        for (offset, count) in durable.deliveries {
            state.apply(JournalEntry::Delivered { offset, count });
        }
        for (offset, until_ms) in durable.delays {
            state.apply(JournalEntry::Delay { offset, until_ms });
        }
        state
    }

    /// Replays one journal entry (before any message is tracked).
    pub fn apply(&mut self, entry: JournalEntry) {
        match entry {
            JournalEntry::Delivered { offset, count } if offset >= self.floor => {
                let d = self
                    .deliveries
                    .entry(offset)
                    .or_insert(Delivery { count: 0, nonce: 0 });
                d.count = d.count.max(count);
            }
            JournalEntry::Done { offset } if offset >= self.floor => {
                self.done.insert(offset);
                self.advance_floor();
            }
            JournalEntry::Delay { offset, until_ms } if offset >= self.floor => {
                self.not_before.insert(offset, until_ms);
            }
            _ => {}
        }
        self.scanned = self.scanned.max(self.floor);
    }

    /// The durable part, for a snapshot.
    pub fn durable(&self) -> DurableState {
        DurableState {
            floor: self.floor,
            done: self.done.iter().copied().collect(),
            deliveries: self
                .deliveries
                .iter()
                .filter(|(_, d)| d.count > 0)
                .map(|(o, d)| (*o, d.count))
                .collect(),
            delays: self.not_before.iter().map(|(o, t)| (*o, *t)).collect(),
        }
    }

    pub fn counts(&self) -> QueueCounts {
        QueueCounts {
            ack_floor: self.floor,
            scanned: self.scanned,
            ready: self.ready.len(),
            delayed: self.delayed.len(),
            leased: self.leases.len(),
            dead_pending: self.dead_pending.len(),
        }
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    fn advance_floor(&mut self) {
        while self.done.remove(&self.floor) {
            self.deliveries.remove(&self.floor);
            self.not_before.remove(&self.floor);
            self.reasons.remove(&self.floor);
            self.floor += 1;
        }
        self.scanned = self.scanned.max(self.floor);
    }

    fn delivery_count(&self, offset: u64) -> u32 {
        self.deliveries.get(&offset).map_or(0, |d| d.count)
    }

    /// Puts a message that is not leased (any more) where it belongs.
    fn place(&mut self, offset: u64, now_ms: i64) {
        if self.delivery_count(offset) >= self.max_deliveries {
            self.reasons
                .entry(offset)
                .or_insert_with(|| "delivery attempts exhausted".to_string());
            self.dead_pending.insert(offset);
        } else {
            match self.not_before.get(&offset) {
                Some(&until) if until > now_ms => {
                    self.delayed.insert((until, offset));
                }
                _ => {
                    self.ready.insert(offset);
                }
            }
        }
    }

    /// Starts tracking queue offsets up to `end` (exclusive), within the bound.
    pub fn fill(&mut self, end: u64, now_ms: i64) {
        let limit = end.min(self.floor.saturating_add(self.tracked_max as u64));
        while self.scanned < limit {
            let offset = self.scanned;
            self.scanned += 1;
            if !self.done.contains(&offset) {
                self.place(offset, now_ms);
            }
        }
    }

    /// Returns expired leases and due delays to the ready set (or to dead-lettering).
    /// Returns true if anything became ready.
    pub fn release_due(&mut self, now_ms: i64) -> bool {
        let mut any = false;
        while let Some(&(expires, offset)) = self.expiries.first() {
            if expires > now_ms {
                break;
            }
            self.expiries.pop_first();
            if self.leases.remove(&offset).is_some() {
                self.reasons
                    .insert(offset, "visibility timeout expired without an ack".into());
                self.place(offset, now_ms);
                any = true;
            }
        }
        while let Some(&(until, offset)) = self.delayed.first() {
            if until > now_ms {
                break;
            }
            self.delayed.pop_first();
            self.ready.insert(offset);
            any = true;
        }
        any
    }

    /// The earliest time something leased or delayed becomes ready again.
    pub fn next_wakeup_ms(&self) -> Option<i64> {
        let lease = self.expiries.first().map(|(t, _)| *t);
        let delay = self.delayed.first().map(|(t, _)| *t);
        match (lease, delay) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Leases up to `max` ready messages, oldest first. `nonces` yields fresh non-zero
    /// nonces. The caller journals a `Delivered` entry per result.
    pub fn lease(
        &mut self,
        now_ms: i64,
        max: usize,
        visibility_ms: u64,
        mut nonces: impl FnMut() -> u64,
    ) -> Vec<Leased> {
        let expires_ms = now_ms.saturating_add(i64::try_from(visibility_ms).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        while out.len() < max {
            let Some(offset) = self.ready.pop_first() else {
                break;
            };
            let nonce = nonces().max(1);
            let d = self
                .deliveries
                .entry(offset)
                .or_insert(Delivery { count: 0, nonce: 0 });
            d.count += 1;
            d.nonce = nonce;
            let count = d.count;
            self.not_before.remove(&offset);
            self.leases.insert(offset, Lease { nonce, expires_ms });
            self.expiries.insert((expires_ms, offset));
            out.push(Leased {
                receipt: Receipt { offset, nonce },
                delivery_count: count,
            });
        }
        out
    }

    /// Whether `receipt` currently owns its message (or owned it last and nobody took
    /// it since), and the message is not done.
    fn owns(&self, receipt: Receipt) -> Result<bool, ReceiptOutcome> {
        let offset = receipt.offset;
        if offset < self.floor || self.done.contains(&offset) {
            return Err(ReceiptOutcome::AlreadyDone);
        }
        match self.leases.get(&offset) {
            Some(lease) if lease.nonce == receipt.nonce => Ok(true),
            Some(_) => Err(ReceiptOutcome::LeaseLost),
            None => match self.deliveries.get(&offset) {
                Some(d) if d.nonce == receipt.nonce && offset < self.scanned => Ok(false),
                _ => Err(ReceiptOutcome::LeaseLost),
            },
        }
    }

    fn untrack(&mut self, offset: u64) {
        if let Some(lease) = self.leases.remove(&offset) {
            self.expiries.remove(&(lease.expires_ms, offset));
        }
        self.ready.remove(&offset);
        if let Some(until) = self.not_before.get(&offset) {
            self.delayed.remove(&(*until, offset));
        }
        self.dead_pending.remove(&offset);
    }

    /// Acknowledges a message. On `Acked` the caller journals `Done`.
    pub fn ack(&mut self, receipt: Receipt) -> ReceiptOutcome {
        match self.owns(receipt) {
            Err(outcome) => outcome,
            Ok(_) => {
                self.mark_done(receipt.offset);
                ReceiptOutcome::Acked
            }
        }
    }

    /// Marks a message done (acked, or moved to the dead-letter topic).
    pub fn mark_done(&mut self, offset: u64) {
        if offset < self.floor {
            return;
        }
        self.untrack(offset);
        self.done.insert(offset);
        self.advance_floor();
    }

    /// Gives a leased message back: ready again, after `delay_ms`, or (deliveries
    /// exhausted) to dead-lettering. On `Delayed` the caller journals a `Delay`.
    pub fn nack(
        &mut self,
        receipt: Receipt,
        delay_ms: u64,
        now_ms: i64,
        reason: Option<&str>,
    ) -> ReceiptOutcome {
        match self.owns(receipt) {
            Err(outcome) => outcome,
            Ok(false) => ReceiptOutcome::LeaseLost,
            Ok(true) => {
                let offset = receipt.offset;
                self.untrack(offset);
                if let Some(reason) = reason {
                    self.reasons.insert(offset, reason.to_string());
                }
                if delay_ms > 0 {
                    let until = now_ms.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX));
                    self.not_before.insert(offset, until);
                } else {
                    self.not_before.remove(&offset);
                }
                self.place(offset, now_ms);
                if self.dead_pending.contains(&offset) {
                    ReceiptOutcome::DeadLettered
                } else if delay_ms > 0 {
                    ReceiptOutcome::Delayed
                } else {
                    ReceiptOutcome::Released
                }
            }
        }
    }

    /// Extends a lease to `now + visibility_ms`.
    pub fn extend(&mut self, receipt: Receipt, visibility_ms: u64, now_ms: i64) -> ReceiptOutcome {
        match self.owns(receipt) {
            Err(outcome) => outcome,
            Ok(false) => ReceiptOutcome::LeaseLost,
            Ok(true) => {
                let offset = receipt.offset;
                if let Some(lease) = self.leases.get_mut(&offset) {
                    self.expiries.remove(&(lease.expires_ms, offset));
                    lease.expires_ms =
                        now_ms.saturating_add(i64::try_from(visibility_ms).unwrap_or(i64::MAX));
                    self.expiries.insert((lease.expires_ms, offset));
                }
                ReceiptOutcome::Extended
            }
        }
    }

    /// Counts another delivery attempt of a message the caller keeps leased (a push
    /// deliverer retrying in place). Returns the new count, or `None` if the receipt
    /// does not own the message. The caller journals `Delivered`.
    pub fn redeliver_in_place(
        &mut self,
        receipt: Receipt,
        visibility_ms: u64,
        now_ms: i64,
    ) -> Option<u32> {
        if self.owns(receipt) != Ok(true) {
            return None;
        }
        self.extend(receipt, visibility_ms, now_ms);
        let d = self.deliveries.get_mut(&receipt.offset)?;
        d.count += 1;
        Some(d.count)
    }

    /// Sends a leased message straight to dead-lettering (a push deliverer gave up).
    pub fn give_up(&mut self, receipt: Receipt, reason: &str) -> ReceiptOutcome {
        match self.owns(receipt) {
            Err(outcome) => outcome,
            Ok(_) => {
                self.untrack(receipt.offset);
                self.reasons.insert(receipt.offset, reason.to_string());
                self.dead_pending.insert(receipt.offset);
                ReceiptOutcome::DeadLettered
            }
        }
    }

    /// Takes up to `max` messages waiting to be dead-lettered, with their delivery
    /// count and failure reason. The caller moves each one and then calls
    /// [`QueueState::mark_done`], or [`QueueState::return_dead`] if that failed.
    pub fn take_dead(&mut self, max: usize) -> Vec<(u64, u32, String)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(offset) = self.dead_pending.pop_first() else {
                break;
            };
            let reason = self
                .reasons
                .get(&offset)
                .cloned()
                .unwrap_or_else(|| "delivery attempts exhausted".into());
            out.push((offset, self.delivery_count(offset), reason));
        }
        out
    }

    pub fn return_dead(&mut self, offset: u64) {
        if offset >= self.floor && !self.done.contains(&offset) {
            self.dead_pending.insert(offset);
        }
    }

    pub fn has_dead_pending(&self) -> bool {
        !self.dead_pending.is_empty()
    }

    /// Maps of pending state sizes, for the memory bound check in tests.
    pub fn tracked_entries(&self) -> usize {
        self.done.len() + self.deliveries.len() + self.not_before.len() + self.reasons.len()
    }
}

/// Reasons and receipts collected for a batch operation.
pub type Outcomes = BTreeMap<String, ReceiptOutcome>;

#[cfg(test)]
mod tests {
    use super::*;

    fn state(max_deliveries: u32) -> QueueState {
        QueueState::new(DurableState::default(), max_deliveries, 1000)
    }

    fn counter() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    #[test]
    fn lease_ack_advances_the_floor() {
        let mut s = state(3);
        s.fill(5, 0);
        let mut nonces = counter();
        let leased = s.lease(0, 2, 1000, &mut nonces);
        assert_eq!(leased.len(), 2);
        assert_eq!(leased[0].receipt.offset, 0);
        assert_eq!(s.ack(leased[1].receipt), ReceiptOutcome::Acked);
        assert_eq!(s.floor(), 0);
        assert_eq!(s.ack(leased[0].receipt), ReceiptOutcome::Acked);
        assert_eq!(s.floor(), 2);
        assert_eq!(s.ack(leased[0].receipt), ReceiptOutcome::AlreadyDone);
    }

    #[test]
    fn a_message_is_leased_to_one_receipt_at_a_time() {
        let mut s = state(5);
        s.fill(1, 0);
        let mut nonces = counter();
        let first = s.lease(0, 1, 100, &mut nonces)[0];
        assert!(s.lease(50, 1, 100, &mut nonces).is_empty());
        assert!(s.release_due(100));
        let second = s.lease(100, 1, 100, &mut nonces)[0];
        assert_eq!(second.delivery_count, 2);
        assert_eq!(s.ack(first.receipt), ReceiptOutcome::LeaseLost);
        assert_eq!(s.ack(second.receipt), ReceiptOutcome::Acked);
    }

    #[test]
    fn a_late_ack_of_an_expired_lease_still_counts_if_nobody_took_it() {
        let mut s = state(5);
        s.fill(1, 0);
        let mut nonces = counter();
        let first = s.lease(0, 1, 100, &mut nonces)[0];
        s.release_due(200);
        assert_eq!(s.ack(first.receipt), ReceiptOutcome::Acked);
        assert!(s.lease(300, 1, 100, &mut nonces).is_empty());
    }

    #[test]
    fn nack_with_delay_then_dead_letter_after_max_deliveries() {
        let mut s = state(2);
        s.fill(1, 0);
        let mut nonces = counter();
        let a = s.lease(0, 1, 100, &mut nonces)[0];
        assert_eq!(
            s.nack(a.receipt, 500, 0, Some("boom")),
            ReceiptOutcome::Delayed
        );
        assert!(s.lease(100, 1, 100, &mut nonces).is_empty());
        s.release_due(500);
        let b = s.lease(500, 1, 100, &mut nonces)[0];
        assert_eq!(b.delivery_count, 2);
        assert_eq!(
            s.nack(b.receipt, 0, 500, Some("still boom")),
            ReceiptOutcome::DeadLettered
        );
        let dead = s.take_dead(10);
        assert_eq!(dead, vec![(0, 2, "still boom".to_string())]);
        s.mark_done(0);
        assert_eq!(s.floor(), 1);
    }

    #[test]
    fn replay_restores_done_counts_and_delays() {
        let mut s = state(5);
        s.apply(JournalEntry::Done { offset: 0 });
        s.apply(JournalEntry::Delivered {
            offset: 1,
            count: 2,
        });
        s.apply(JournalEntry::Delay {
            offset: 2,
            until_ms: 1000,
        });
        s.apply(JournalEntry::Done { offset: 3 });
        s.fill(4, 0);
        let mut nonces = counter();
        let leased = s.lease(0, 10, 100, &mut nonces);
        assert_eq!(leased.len(), 1);
        assert_eq!(leased[0].receipt.offset, 1);
        assert_eq!(leased[0].delivery_count, 3);
        let restored = QueueState::new(s.durable(), 5, 1000);
        assert_eq!(restored.floor(), 1);
    }

    #[test]
    fn tracking_is_bounded() {
        let mut s = QueueState::new(DurableState::default(), 5, 10);
        s.fill(1_000_000, 0);
        assert_eq!(s.counts().ready, 10);
        let mut nonces = counter();
        let leased = s.lease(0, 100, 100, &mut nonces);
        assert_eq!(leased.len(), 10);
        for l in &leased[1..] {
            s.ack(l.receipt);
        }
        s.fill(1_000_000, 0);
        assert_eq!(
            s.counts().ready,
            0,
            "the oldest unacked message holds the window"
        );
        s.ack(leased[0].receipt);
        s.fill(1_000_000, 0);
        assert_eq!(s.counts().ready, 10);
        assert!(s.tracked_entries() <= 30);
    }

    #[test]
    fn receipts_round_trip() {
        let r = Receipt {
            offset: 42,
            nonce: 0xdead_beef,
        };
        assert_eq!(Receipt::parse(&r.encode()), Some(r));
        assert_eq!(Receipt::parse("x"), None);
        assert_eq!(Receipt::parse("1.zz"), None);
    }
}
