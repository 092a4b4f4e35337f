//! [`StreamHub`]: the live connections (SSE / WebSocket) of one `stream` subscription.
//!
//! The dispatcher hands every matching event to [`StreamHub::broadcast`], which never
//! waits: each connection has a bounded buffer of `buffer_events`; when it is full the
//! subscription's [`SlowSubscriberPolicy`] applies: `disconnect` closes that
//! connection (counted in `disconnected`), `drop` discards the event for that
//! connection (counted in `dropped`). So memory per connection is bounded by
//! `buffer_events` events, and a slow client never slows the dispatcher.
//!
//! Lock: `connections` is a leaf lock held only to push into the buffers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::spec::{SlowSubscriberPolicy, StreamTarget};

/// Most concurrent connections per stream subscription.
pub const CONNECTIONS_MAX: usize = 1024;

struct Connection {
    sender: mpsc::Sender<Arc<str>>,
    dropped: Arc<AtomicU64>,
    too_slow: Arc<AtomicBool>,
}

/// Counters of a stream subscription.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StreamCounts {
    pub connections: usize,
    pub delivered: u64,
    pub dropped: u64,
    pub disconnected: u64,
}

pub struct StreamHub {
    target: StreamTarget,
    connections: Mutex<Vec<Connection>>,
    delivered: AtomicU64,
    dropped: AtomicU64,
    disconnected: AtomicU64,
}

/// The receiving end of one connection.
pub struct StreamReceiver {
    pub events: mpsc::Receiver<Arc<str>>,
    /// Events dropped for this connection (policy `drop`).
    pub dropped: Arc<AtomicU64>,
    /// Set when the hub closed this connection because it fell behind.
    pub too_slow: Arc<AtomicBool>,
}

impl StreamHub {
    pub fn new(target: StreamTarget) -> Self {
        Self {
            target,
            connections: Mutex::new(Vec::new()),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            disconnected: AtomicU64::new(0),
        }
    }

    /// A new connection, or `None` at [`CONNECTIONS_MAX`].
    pub fn connect(&self) -> Option<StreamReceiver> {
        let mut connections = self.connections.lock();
        connections.retain(|c| !c.sender.is_closed());
        if connections.len() >= CONNECTIONS_MAX {
            return None;
        }
        let (sender, events) = mpsc::channel(self.target.buffer_events.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let too_slow = Arc::new(AtomicBool::new(false));
        connections.push(Connection {
            sender,
            dropped: Arc::clone(&dropped),
            too_slow: Arc::clone(&too_slow),
        });
        Some(StreamReceiver {
            events,
            dropped,
            too_slow,
        })
    }

    /// True if anyone is connected (the dispatcher skips rendering otherwise).
    pub fn has_connections(&self) -> bool {
        !self.connections.lock().is_empty()
    }

    /// Offers `payload` to every connection without waiting.
    pub fn broadcast(&self, payload: &Arc<str>) {
        let mut connections = self.connections.lock();
        connections.retain(|c| match c.sender.try_send(Arc::clone(payload)) {
            Ok(()) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => match self.target.slow_subscriber {
                SlowSubscriberPolicy::Drop => {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    true
                }
                SlowSubscriberPolicy::Disconnect => {
                    c.too_slow.store(true, Ordering::Release);
                    self.disconnected.fetch_add(1, Ordering::Relaxed);
                    false
                }
            },
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Closes every connection (subscription deleted, shutdown).
    pub fn close_all(&self) {
        self.connections.lock().clear();
    }

    pub fn counts(&self) -> StreamCounts {
        let mut connections = self.connections.lock();
        connections.retain(|c| !c.sender.is_closed());
        StreamCounts {
            connections: connections.len(),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            disconnected: self.disconnected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(policy: SlowSubscriberPolicy) -> StreamHub {
        StreamHub::new(StreamTarget {
            buffer_events: 2,
            slow_subscriber: policy,
        })
    }

    #[test]
    fn drop_policy_counts_and_keeps_the_connection() {
        let hub = hub(SlowSubscriberPolicy::Drop);
        let mut rx = hub.connect().expect("connect");
        let payload: Arc<str> = Arc::from("e");
        for _ in 0..5 {
            hub.broadcast(&payload);
        }
        let counts = hub.counts();
        assert_eq!(
            (counts.delivered, counts.dropped, counts.connections),
            (2, 3, 1)
        );
        assert_eq!(rx.dropped.load(Ordering::Relaxed), 3);
        assert!(rx.events.try_recv().is_ok());
    }

    #[test]
    fn disconnect_policy_closes_the_slow_connection() {
        let hub = hub(SlowSubscriberPolicy::Disconnect);
        let mut rx = hub.connect().expect("connect");
        let payload: Arc<str> = Arc::from("e");
        for _ in 0..3 {
            hub.broadcast(&payload);
        }
        assert!(rx.too_slow.load(Ordering::Acquire));
        assert_eq!(hub.counts().disconnected, 1);
        assert!(rx.events.try_recv().is_ok());
        assert!(rx.events.try_recv().is_ok());
        assert!(matches!(
            rx.events.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
