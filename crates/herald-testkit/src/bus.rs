//! The in-memory bus and the virtual clock. Invariant: positions are the 0-based index of
//! an event in the bus, so they are dense and strictly increasing.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald_core::CloudEvent;
use herald_flow::source::{Batch, EventSource, SourcedEvent};
use herald_flow::{Clock, CommandSink, FlowError};
use parking_lot::Mutex;

/// An in-memory, ordered event log shared by clones of the handle.
#[derive(Clone, Default)]
pub struct InMemoryBus {
    events: Arc<Mutex<Vec<SourcedEvent>>>,
    clock: VirtualClock,
}

impl InMemoryBus {
    /// An empty bus whose record times come from a new virtual clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty bus stamping records with `clock`.
    pub fn with_clock(clock: VirtualClock) -> Self {
        Self {
            events: Arc::default(),
            clock,
        }
    }

    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// Appends an event (no stream); returns its position.
    pub fn publish(&self, event: CloudEvent) -> u64 {
        self.append(None, event)
    }

    /// Appends an event to a named stream (its version is counted per stream).
    pub fn publish_to(&self, stream: &str, event: CloudEvent) -> u64 {
        self.append(Some(stream.to_string()), event)
    }

    fn append(&self, stream: Option<String>, event: CloudEvent) -> u64 {
        let mut events = self.events.lock();
        let position = events.len() as u64;
        let version = stream.as_ref().map(|s| {
            events
                .iter()
                .filter(|e| e.stream.as_ref() == Some(s))
                .count() as u64
        });
        events.push(SourcedEvent {
            position,
            stream,
            version,
            recorded_at_ms: self.clock.now_ms(),
            event,
        });
        position
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<CloudEvent> {
        self.events.lock().iter().map(|e| e.event.clone()).collect()
    }

    /// Events of one type, in order.
    pub fn events_of_type(&self, ty: &str) -> Vec<CloudEvent> {
        self.events
            .lock()
            .iter()
            .filter(|e| e.event.ty == ty)
            .map(|e| e.event.clone())
            .collect()
    }

    /// The events of one stream, in version order.
    pub fn stream_events(&self, stream: &str) -> Vec<CloudEvent> {
        self.events
            .lock()
            .iter()
            .filter(|e| e.stream.as_deref() == Some(stream))
            .map(|e| e.event.clone())
            .collect()
    }

    /// Every record (position, stream, version, time, event), in order.
    pub fn records(&self) -> Vec<SourcedEvent> {
        self.events.lock().clone()
    }

    /// Events appended at or after `position` (to see what a step produced).
    pub fn events_since(&self, position: u64) -> Vec<CloudEvent> {
        let events = self.events.lock();
        let start = usize::try_from(position)
            .unwrap_or(usize::MAX)
            .min(events.len());
        events[start..].iter().map(|e| e.event.clone()).collect()
    }

    /// The number of events (= the next position).
    pub fn len(&self) -> u64 {
        self.events.lock().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.events.lock().is_empty()
    }
}

impl EventSource for InMemoryBus {
    async fn read_after(&self, after: Option<u64>, max: usize) -> Result<Batch, FlowError> {
        let events = self.events.lock();
        let start = after.map_or(0, |a| a.saturating_add(1));
        let start = usize::try_from(start)
            .unwrap_or(usize::MAX)
            .min(events.len());
        let end = start.saturating_add(max).min(events.len());
        let page: Vec<SourcedEvent> = events[start..end].to_vec();
        let scanned_to = page.last().map(|e| e.position).or(after);
        Ok(Batch {
            events: page,
            scanned_to,
        })
    }

    async fn head(&self) -> Result<Option<u64>, FlowError> {
        Ok((self.events.lock().len() as u64).checked_sub(1))
    }

    fn describe(&self) -> String {
        "in-memory bus".to_string()
    }
}

impl CommandSink for InMemoryBus {
    async fn send(&self, command: CloudEvent) -> Result<(), FlowError> {
        self.publish(command);
        Ok(())
    }
}

/// A clock that only moves when told. Clones share the time.
#[derive(Clone, Debug)]
pub struct VirtualClock {
    now_ms: Arc<AtomicI64>,
}

impl Default for VirtualClock {
    /// Starts at 2026-01-01T00:00:00Z.
    fn default() -> Self {
        Self::starting_at(1_767_225_600_000)
    }
}

impl VirtualClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn starting_at(now_ms: i64) -> Self {
        Self {
            now_ms: Arc::new(AtomicI64::new(now_ms)),
        }
    }

    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now_ms.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}
