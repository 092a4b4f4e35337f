//! The value of one record in the event store's log. Pure codec: no I/O.
//!
//! Layout (integers little-endian, strings as `u32 length + UTF-8`):
//! `format:u8 = 1 | kind:u8 | stream | body`, where body is
//! - kind 1 (event): `version:u64 | CloudEvent in herald-core's binary codec`
//! - kind 2 (metadata): `JSON of StreamMetadata` as a length-prefixed string
//! - kind 3 (soft delete): `deleted_before:u64` (versions below it become hidden)
//! - kind 4 (tombstone): nothing.
//!
//! Invariant: decoding never panics and rejects trailing bytes.

use herald_core::codec::{decode_event, encode_event};
use herald_core::CloudEvent;

use crate::index::Change;
use crate::types::StreamMetadata;

const FORMAT: u8 = 1;
const KIND_EVENT: u8 = 1;
const KIND_METADATA: u8 = 2;
const KIND_SOFT_DELETE: u8 = 3;
const KIND_TOMBSTONE: u8 = 4;

/// A decoded log record.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Event {
        stream: String,
        version: u64,
        event: Box<CloudEvent>,
    },
    Metadata {
        stream: String,
        metadata: StreamMetadata,
    },
    SoftDelete {
        stream: String,
        deleted_before: u64,
    },
    Tombstone {
        stream: String,
    },
}

impl Entry {
    pub fn stream(&self) -> &str {
        match self {
            Entry::Event { stream, .. }
            | Entry::Metadata { stream, .. }
            | Entry::SoftDelete { stream, .. }
            | Entry::Tombstone { stream } => stream,
        }
    }
}

fn header(kind: u8, stream: &str, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + 4 + stream.len() + capacity);
    out.push(FORMAT);
    out.push(kind);
    put_bytes(&mut out, stream.as_bytes());
    out
}

/// Encodes an event record around an event already encoded with
/// [`herald_core::codec::encode_event`].
pub fn encode_event_record(stream: &str, version: u64, encoded_event: &[u8]) -> Vec<u8> {
    let mut out = header(KIND_EVENT, stream, 8 + encoded_event.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(encoded_event);
    out
}

/// The binary form of `event` (what [`encode_event_record`] wraps).
pub fn encode_event_body(event: &CloudEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(event.approximate_size() + 64);
    encode_event(event, &mut out);
    out
}

pub fn encode_metadata_record(stream: &str, metadata: &StreamMetadata) -> Vec<u8> {
    // Serializing a struct of two optional integers cannot fail.
    let json = serde_json::to_vec(metadata).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = header(KIND_METADATA, stream, 4 + json.len());
    put_bytes(&mut out, &json);
    out
}

pub fn encode_soft_delete_record(stream: &str, deleted_before: u64) -> Vec<u8> {
    let mut out = header(KIND_SOFT_DELETE, stream, 8);
    out.extend_from_slice(&deleted_before.to_le_bytes());
    out
}

pub fn encode_tombstone_record(stream: &str) -> Vec<u8> {
    header(KIND_TOMBSTONE, stream, 0)
}

/// Decodes a record value; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
    let (change, body) = decode_parts(bytes)?;
    Ok(match change {
        Change::Event { stream, version } => Entry::Event {
            stream,
            version,
            event: Box::new(decode_event(body).map_err(|e| format!("event body: {e}"))?),
        },
        Change::Metadata { stream, metadata } => Entry::Metadata { stream, metadata },
        Change::SoftDelete {
            stream,
            deleted_before,
        } => Entry::SoftDelete {
            stream,
            deleted_before,
        },
        Change::Tombstone { stream } => Entry::Tombstone { stream },
    })
}

/// Decodes what a record changes in the index, without decoding an event's body (the
/// write path, which encoded the body itself, uses this).
pub fn decode_change(bytes: &[u8]) -> Result<Change, String> {
    let (change, body) = decode_parts(bytes)?;
    if matches!(change, Change::Event { .. }) && body.is_empty() {
        return Err("event record without a body".to_string());
    }
    Ok(change)
}

/// The change a record makes, and an event's still encoded body (empty otherwise).
fn decode_parts(bytes: &[u8]) -> Result<(Change, &[u8]), String> {
    let mut reader = Reader { buf: bytes, pos: 0 };
    let format = reader.u8()?;
    if format != FORMAT {
        return Err(format!("unknown record format {format}"));
    }
    let kind = reader.u8()?;
    let stream = reader.string()?;
    let change = match kind {
        KIND_EVENT => {
            let version = reader.u64()?;
            return Ok((Change::Event { stream, version }, reader.rest()));
        }
        KIND_METADATA => {
            let json = reader.bytes()?;
            let metadata =
                serde_json::from_slice(json).map_err(|e| format!("metadata JSON: {e}"))?;
            Change::Metadata { stream, metadata }
        }
        KIND_SOFT_DELETE => Change::SoftDelete {
            stream,
            deleted_before: reader.u64()?,
        },
        KIND_TOMBSTONE => Change::Tombstone { stream },
        other => return Err(format!("unknown record kind {other}")),
    };
    if reader.pos != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the record",
            bytes.len() - reader.pos
        ));
    }
    Ok((change, &[]))
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(count)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "record ends at byte {}: need {count} bytes at byte {}",
                    self.buf.len(),
                    self.pos
                )
            })?;
        let slice = self.buf.get(self.pos..end).ok_or("record bounds")?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(raw))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        let len = u32::from_le_bytes(raw) as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, String> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "stream name is not UTF-8".to_string())
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let event = CloudEvent::new("e-1", "/t", "t.happened");
        let body = encode_event_body(&event);
        let cases = [
            (
                encode_event_record("order-1", 7, &body),
                Entry::Event {
                    stream: "order-1".into(),
                    version: 7,
                    event: Box::new(event),
                },
            ),
            (
                encode_metadata_record(
                    "s",
                    &StreamMetadata {
                        max_age_ms: Some(5),
                        max_count: None,
                    },
                ),
                Entry::Metadata {
                    stream: "s".into(),
                    metadata: StreamMetadata {
                        max_age_ms: Some(5),
                        max_count: None,
                    },
                },
            ),
            (
                encode_soft_delete_record("s", 3),
                Entry::SoftDelete {
                    stream: "s".into(),
                    deleted_before: 3,
                },
            ),
            (
                encode_tombstone_record("s"),
                Entry::Tombstone { stream: "s".into() },
            ),
        ];
        for (bytes, entry) in cases {
            assert_eq!(decode(&bytes), Ok(entry));
        }
    }

    #[test]
    fn truncated_or_padded_records_are_rejected() {
        let bytes = encode_soft_delete_record("stream", 9);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode(&padded).is_err());
        let mut bad_kind = bytes;
        bad_kind[1] = 99;
        assert!(decode(&bad_kind).is_err());
    }
}
