//! What the benchmark sends: a payload whose first 8 bytes are its send time (ns since
//! this process's [`epoch`], little-endian), then filler. Producers and consumers run
//! in the same process, so publish→deliver latency needs no clock sync.
//!
//! All messages of one batch share one payload (and so one send time): the batch is
//! what is scheduled and sent as a unit.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// Bytes of the send timestamp at the start of each payload.
pub const STAMP_BYTES: usize = 8;

/// The instant all timestamps count from.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`] at `at`.
pub fn stamp_of(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since [`epoch`] now.
pub fn now_stamp() -> u64 {
    stamp_of(Instant::now())
}

/// The send time written in `payload`, if it is long enough.
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let head: [u8; STAMP_BYTES] = payload.get(..STAMP_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// Latency from the stamp in `payload` to now, in ns.
pub fn latency_since_stamp(payload: &[u8]) -> Option<u64> {
    read_stamp(payload).map(|s| now_stamp().saturating_sub(s))
}

/// One batch to publish: `count` messages numbered from `first_seq`, all carrying `payload`.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Index of the producer (for unique ids).
    pub producer: usize,
    pub first_seq: u64,
    pub count: usize,
    /// Key cardinality; 0 = no keys.
    pub keys: u64,
    pub payload: Bytes,
    /// When the batch was due: latency counts from here.
    pub scheduled: Instant,
}

impl Batch {
    /// The key of message `i` of this batch (`k<n>`), if keys are on.
    pub fn key(&self, i: usize) -> Option<String> {
        (self.keys > 0).then(|| format!("k{}", (self.first_seq + i as u64) % self.keys))
    }

    /// Age of this batch since it was due.
    pub fn age(&self) -> Duration {
        self.scheduled.elapsed()
    }
}

/// A payload of `size` bytes stamped with `scheduled`. The filler is a fixed
/// non-repeating pattern, so nothing compresses it away.
pub fn payload(size: usize, scheduled: Instant) -> Bytes {
    let mut buf = BytesMut::with_capacity(size);
    buf.extend_from_slice(&stamp_of(scheduled).to_le_bytes());
    let mut x: u32 = 0x9e37_79b9;
    while buf.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf.extend_from_slice(&x.to_le_bytes()[..(size - buf.len()).min(4)]);
    }
    buf.truncate(size.max(STAMP_BYTES));
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_size_is_exact() {
        let at = Instant::now();
        for size in [8, 9, 100, 1024] {
            let p = payload(size, at);
            assert_eq!(p.len(), size);
            assert_eq!(read_stamp(&p), Some(stamp_of(at)));
        }
        assert_eq!(read_stamp(&[1, 2, 3]), None);
    }

    #[test]
    fn keys_cycle() {
        let b = Batch {
            producer: 0,
            first_seq: 9,
            count: 2,
            keys: 10,
            payload: payload(8, Instant::now()),
            scheduled: Instant::now(),
        };
        assert_eq!(b.key(0).as_deref(), Some("k9"));
        assert_eq!(b.key(1).as_deref(), Some("k0"));
    }
}
