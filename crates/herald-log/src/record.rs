//! The values that cross the log's API: [`Record`] in, [`StoredRecord`] out,
//! [`AppendOutcome`] as the receipt of an append.
//!
//! Records are opaque to the log: a timestamp (chosen by the caller, milliseconds
//! since the Unix epoch by convention), an optional key and a value.

use bytes::Bytes;

/// One record to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
}

/// One record read back, with the offset the log gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
}

impl StoredRecord {
    /// Bytes this record counts against a read's `max_bytes`: key plus value.
    pub fn payload_bytes(&self) -> usize {
        self.key.as_ref().map_or(0, Bytes::len) + self.value.len()
    }
}

/// Offsets given to the records of one appended batch (both inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: u64,
    pub last_offset: u64,
}
