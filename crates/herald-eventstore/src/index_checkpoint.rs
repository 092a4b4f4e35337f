//! The durable index checkpoint: the stream index as of a log position, so opening the
//! store scans only the log after it instead of the whole log.
//!
//! Owns: `<dir>/index.checkpoint` (encode, atomic write, load and validation).
//! Format (little-endian): magic `HERALDIX` · version u32 · end u64 (records below it are
//! in the checkpoint) · fingerprint u32 (crc32c of the record at `end - 1`, 0 if none) ·
//! stream count u64 · per stream: name (u32 length + bytes), deleted_before u64,
//! tombstoned u8, metadata JSON (u32 length + bytes), position count u64, positions as
//! varint deltas · crc32c of everything before it.
//! Invariants: a checkpoint is used only if its checksum holds, its end is within the
//! log and the record before its end has the recorded fingerprint (the same log it was
//! taken from); anything else falls back to the full scan. It is written only when the
//! index holds exactly the records below `end` (no append between log and index).

use std::collections::BTreeMap;
use std::path::Path;

use herald_log::PartitionLog;

use crate::error::EventStoreError;
use crate::index::{Index, StreamState};
use crate::types::StreamMetadata;

pub(crate) const FILE: &str = "index.checkpoint";
const MAGIC: &[u8; 8] = b"HERALDIX";
const VERSION: u32 = 1;

/// The crc32c of the log record at `end - 1` (0 for an empty prefix).
pub(crate) fn fingerprint(log: &PartitionLog, end: u64) -> Result<u32, EventStoreError> {
    let Some(last) = end.checked_sub(1) else {
        return Ok(0);
    };
    let records = log.read(last, 1, usize::MAX)?;
    match records.first() {
        Some(r) if r.offset == last => Ok(crc32c::crc32c(&r.value)),
        _ => Err(EventStoreError::Corrupt {
            position: last,
            reason: "no record for the index checkpoint fingerprint".into(),
        }),
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), EventStoreError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| EventStoreError::invalid("index", "a field is over 4 GiB"))?;
    put_u32(out, len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Encodes `index` as of log position `end` with the given fingerprint.
pub(crate) fn encode(
    index: &Index,
    end: u64,
    fingerprint: u32,
) -> Result<Vec<u8>, EventStoreError> {
    let positions: usize = index.streams.values().map(|s| s.positions.len()).sum();
    let mut out = Vec::with_capacity(64 + index.streams.len() * 64 + positions * 2);
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, VERSION);
    put_u64(&mut out, end);
    put_u32(&mut out, fingerprint);
    put_u64(&mut out, index.streams.len() as u64);
    for (name, state) in &index.streams {
        put_bytes(&mut out, name.as_bytes())?;
        put_u64(&mut out, state.deleted_before);
        out.push(u8::from(state.tombstoned));
        let metadata = serde_json::to_vec(&state.metadata)
            .map_err(|e| EventStoreError::invalid("metadata", e.to_string()))?;
        put_bytes(&mut out, &metadata)?;
        put_u64(&mut out, state.positions.len() as u64);
        let mut previous = 0u64;
        for &position in &state.positions {
            put_varint(&mut out, position - previous);
            previous = position;
        }
    }
    let crc = crc32c::crc32c(&out);
    put_u32(&mut out, crc);
    Ok(out)
}

/// A cursor over checkpoint bytes; every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err("truncated".into());
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        self.take(1)?
            .first()
            .copied()
            .ok_or_else(|| "truncated".into())
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(
            bytes.try_into().map_err(|_| "truncated")?,
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| "truncated")?,
        ))
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// A decoded checkpoint: the index as of `end`, and the fingerprint of record `end - 1`.
pub(crate) struct Checkpoint {
    pub index: Index,
    pub end: u64,
    pub fingerprint: u32,
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let Some(body_len) = bytes.len().checked_sub(4) else {
        return Err("shorter than a checksum".into());
    };
    let (body, crc) = bytes.split_at(body_len);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| "truncated")?);
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".into());
    }
    let mut r = Reader { bytes: body };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not an index checkpoint".into());
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let end = r.u64()?;
    let fingerprint = r.u32()?;
    let count = r.u64()?;
    let mut streams = BTreeMap::new();
    for _ in 0..count {
        let name = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| "stream name not UTF-8")?;
        let deleted_before = r.u64()?;
        let tombstoned = r.u8()? != 0;
        let metadata: StreamMetadata =
            serde_json::from_slice(r.bytes()?).map_err(|e| format!("metadata: {e}"))?;
        let len = r.u64()?;
        // Each position takes at least one byte: bounds the allocation.
        if len > r.bytes.len() as u64 {
            return Err("position count past the end".into());
        }
        let mut positions = Vec::with_capacity(len as usize);
        let mut previous = 0u64;
        for i in 0..len {
            let delta = r.varint()?;
            if i > 0 && delta == 0 {
                return Err("positions do not increase".into());
            }
            previous = previous.checked_add(delta).ok_or("position overflow")?;
            if previous >= end {
                return Err("a position at or past the checkpoint's end".into());
            }
            positions.push(previous);
        }
        streams.insert(
            name,
            StreamState {
                positions,
                metadata,
                deleted_before,
                tombstoned,
            },
        );
    }
    if !r.bytes.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(Checkpoint {
        index: Index {
            streams,
            last_sequences: Default::default(),
        },
        end,
        fingerprint,
    })
}

/// Loads the checkpoint in `dir` if it is usable for `log`; `None` (with the reason
/// logged) means: scan the whole log.
pub(crate) fn load(dir: &Path, log: &PartitionLog) -> Option<Checkpoint> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "index checkpoint unreadable; full scan");
            return None;
        }
    };
    let checkpoint = match decode(&bytes) {
        Ok(c) => c,
        Err(reason) => {
            tracing::warn!(path = %path.display(), %reason, "index checkpoint damaged; full scan");
            return None;
        }
    };
    if checkpoint.end > log.next_offset() || checkpoint.end < log.start_offset() {
        tracing::warn!(
            end = checkpoint.end,
            log_end = log.next_offset(),
            "index checkpoint is past the log's end (stale); full scan"
        );
        return None;
    }
    match fingerprint(log, checkpoint.end) {
        Ok(f) if f == checkpoint.fingerprint => Some(checkpoint),
        _ => {
            tracing::warn!(
                end = checkpoint.end,
                "index checkpoint does not match the log; full scan"
            );
            None
        }
    }
}

/// Writes `bytes` as the checkpoint in `dir` (temp file, fsync, rename, fsync dir).
pub(crate) fn write(dir: &Path, bytes: &[u8]) -> Result<(), EventStoreError> {
    crate::snapshot::write_atomically(dir, &dir.join(FILE), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let mut index = Index::default();
        index.streams.insert(
            "a".into(),
            StreamState {
                positions: vec![0, 5, 300, 70_000],
                metadata: StreamMetadata {
                    max_count: Some(3),
                    max_age_ms: None,
                },
                deleted_before: 1,
                tombstoned: false,
            },
        );
        index.streams.insert(
            "b".into(),
            StreamState {
                tombstoned: true,
                ..StreamState::default()
            },
        );
        let bytes = encode(&index, 70_001, 42).expect("encode");
        let back = decode(&bytes).expect("decode");
        assert_eq!((back.end, back.fingerprint), (70_001, 42));
        assert_eq!(back.index.streams.len(), 2);
        assert_eq!(back.index.streams["a"].positions, [0, 5, 300, 70_000]);
        assert_eq!(back.index.streams["a"].metadata.max_count, Some(3));
        assert!(back.index.streams["b"].tombstoned);
        for i in [0, 9, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode(&[]).is_err());
    }
}
