//! [`CatchUpSubscription`]: history first, then live events, through one cursor.
//!
//! Owns: the read loop of a subscription. There is no separate "live" channel: the
//! subscription always reads after the last position it delivered and, when nothing
//! is there, waits for the store to move (the log's end for `$all`/categories, the
//! index for one stream), marking the watch as seen *before* it reads. So an event is
//! delivered once, in `$all` order, whether it was appended before or during the switch.
//! Events hidden when read (stream metadata, soft delete, tombstone) are skipped, as
//! stream reads skip them. Invariant: delivered positions strictly increase.

use std::collections::VecDeque;

use tokio::sync::watch;

use crate::error::EventStoreError;
use crate::store::EventStore;
use crate::types::{RecordedEvent, SubscriptionTarget};

/// Events fetched per read step.
const PAGE_EVENTS: usize = 256;

/// A catch-up subscription; see the module docs.
pub struct CatchUpSubscription {
    store: EventStore,
    target: SubscriptionTarget,
    /// Category prefix (`order-`), for `Category`.
    prefix: String,
    /// Position of the last event delivered (or the start point given).
    last_position: Option<u64>,
    /// Next log offset to scan (`$all` and categories).
    scan_from: u64,
    /// Position of the last event of the stream read (delivered or hidden), `Stream` only.
    examined: Option<u64>,
    buffer: VecDeque<RecordedEvent>,
    log_end: watch::Receiver<u64>,
    index_changes: watch::Receiver<u64>,
}

impl CatchUpSubscription {
    pub(crate) fn new(
        store: EventStore,
        target: SubscriptionTarget,
        from_position_exclusive: Option<u64>,
    ) -> Self {
        let prefix = match &target {
            SubscriptionTarget::Category(c) => SubscriptionTarget::category_prefix(c),
            _ => String::new(),
        };
        let log_end = store.inner.log.watch();
        let index_changes = store.inner.changes.subscribe();
        Self {
            store,
            target,
            prefix,
            last_position: from_position_exclusive,
            scan_from: from_position_exclusive.map_or(0, |p| p.saturating_add(1)),
            examined: from_position_exclusive,
            buffer: VecDeque::new(),
            log_end,
            index_changes,
        }
    }

    /// The position of the last event delivered (a checkpoint to resume from).
    pub fn last_position(&self) -> Option<u64> {
        self.last_position
    }

    /// The next event, waiting for one to be appended if the subscription is caught
    /// up. Fails with `Closed` once the store is closed.
    pub async fn next(&mut self) -> Result<RecordedEvent, EventStoreError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.last_position = Some(event.position);
                return Ok(event);
            }
            // Mark the current state seen before reading, so a change during the read
            // wakes the wait below.
            self.log_end.borrow_and_update();
            self.index_changes.borrow_and_update();
            self.fill()?;
            if !self.buffer.is_empty() || self.behind() {
                continue;
            }
            let changed = match self.target {
                SubscriptionTarget::Stream(_) => self.index_changes.changed().await,
                _ => self.log_end.changed().await,
            };
            if changed.is_err() {
                return Err(EventStoreError::Closed);
            }
        }
    }

    /// The next event if one is available now, without waiting.
    pub fn try_next(&mut self) -> Result<Option<RecordedEvent>, EventStoreError> {
        self.fill()?;
        while self.buffer.is_empty() && self.behind() {
            self.fill()?;
        }
        Ok(self.buffer.pop_front().inspect(|event| {
            self.last_position = Some(event.position);
        }))
    }

    /// Whether a scan stopped before the log's end (its read budget ran out on records
    /// of other streams), so there is more to scan without waiting.
    /// For one stream: whether the stream has events after the last one read (a page
    /// of hidden events was skipped).
    fn behind(&self) -> bool {
        match &self.target {
            SubscriptionTarget::Stream(stream) => {
                let index = self.store.inner.index.read();
                let last = index.streams.get(stream).and_then(|s| s.positions.last());
                match (last, self.examined) {
                    (Some(last), Some(examined)) => *last > examined,
                    (Some(_), None) => true,
                    (None, _) => false,
                }
            }
            _ => self.scan_from < self.store.end_position(),
        }
    }

    fn fill(&mut self) -> Result<(), EventStoreError> {
        if !self.buffer.is_empty() {
            return Ok(());
        }
        match &self.target {
            SubscriptionTarget::Stream(stream) => {
                let positions = self.stream_positions_after(stream);
                let events = self
                    .store
                    .read_positions(&positions, PAGE_EVENTS, |_| true)?;
                // Positions past the page's last event are not skipped: the next fill
                // starts after the last *delivered* one, so advance past hidden ones.
                if let Some(last) = events.last() {
                    self.examined = Some(last.position);
                }
                self.buffer.extend(self.store.visible_only(events));
            }
            SubscriptionTarget::All | SubscriptionTarget::Category(_) => {
                let prefix = self.prefix.clone();
                let all = matches!(self.target, SubscriptionTarget::All);
                let (events, next) =
                    self.store
                        .scan_forwards(self.scan_from, PAGE_EVENTS, |stream| {
                            all || stream.starts_with(&prefix)
                        })?;
                self.scan_from = next;
                self.buffer.extend(self.store.visible_only(events));
            }
        }
        Ok(())
    }

    /// Positions of the stream's events after the last one read (one page).
    fn stream_positions_after(&self, stream: &str) -> Vec<u64> {
        let index = self.store.inner.index.read();
        let Some(state) = index.streams.get(stream) else {
            return Vec::new();
        };
        let start = match self.examined {
            Some(last) => state.positions.partition_point(|p| *p <= last),
            None => 0,
        };
        state
            .positions
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take(PAGE_EVENTS)
            .copied()
            .collect()
    }
}
