//! The batch codec: how one `append()` call is laid out on disk. Pure: no I/O.
//!
//! Owns: encoding, header parsing and full verification of a batch. It does not
//! know about files, segments or offsets beyond the ones written in a batch.
//!
//! # Byte layout (version 1, all integers little-endian)
//!
//! A segment's `.log` file is a sequence of batches, one per append. A batch is a
//! 40-byte header followed by `record_count` records:
//!
//! ```text
//! offset size field
//!      0    8 base_offset        u64  offset of the first record
//!      8    4 length             u32  whole batch in bytes, header included
//!     12    4 crc                u32  CRC-32C (Castagnoli) of bytes [16, length)
//!     16    1 magic              u8   format version, = 1
//!     17    1 flags              u8   = 0 (no compression, nothing else defined)
//!     18    2 reserved           u16  = 0
//!     20    4 record_count       u32  >= 1
//!     24    8 first_timestamp_ms i64  timestamp of the first record
//!     32    8 max_timestamp_ms   i64  largest record timestamp in the batch
//!     40      records, each:
//!               timestamp_ms i64
//!               key_len      i32  -1 = no key, else the key's length in bytes
//!               key          [key_len bytes]
//!               value_len    u32
//!               value        [value_len bytes]
//! ```
//!
//! The CRC leaves out `base_offset` and `length`, so the writer can stamp offsets on
//! a batch encoded (and checksummed) by the appending task. Those two fields are
//! checked by their context instead: offsets must continue the previous batch and
//! the length must fit the file.
//!
//! Invariants: [`decode_batch`] never panics and never allocates; it accepts a batch
//! only if the header, the CRC, every record, the record count, both header
//! timestamps and the absence of trailing bytes inside `length` all check out.

use std::fmt;

use thiserror::Error;

use crate::record::Record;

/// Size of the fixed batch header.
pub const HEADER_BYTES: usize = 40;
/// Current (and only) batch format version.
pub const MAGIC: u8 = 1;
/// Bytes every record takes besides its key and value.
pub const RECORD_OVERHEAD_BYTES: usize = 16;
/// First byte covered by the CRC.
const CRC_START: usize = 16;

/// A malformed batch, or records that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error("batch truncated: need {need} bytes, have {have}")]
    Truncated { need: u64, have: u64 },
    #[error("batch length {length} is impossible for {record_count} records")]
    BadLength { length: u32, record_count: u32 },
    #[error("unknown batch format version {magic}")]
    BadMagic { magic: u8 },
    #[error("unsupported batch flags {flags:#04x}")]
    BadFlags { flags: u8 },
    #[error("reserved header bytes are {reserved:#06x}, expected 0")]
    BadReserved { reserved: u16 },
    #[error("batch holds no records")]
    NoRecords,
    #[error("base offset {base_offset} plus {record_count} records overflows")]
    OffsetOverflow { base_offset: u64, record_count: u32 },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record {record}: {field} runs past the batch end (need {need} bytes, have {have})")]
    RecordOverrun {
        record: u32,
        field: &'static str,
        need: u64,
        have: u64,
    },
    #[error("record {record}: invalid key length {key_len}")]
    BadKeyLength { record: u32, key_len: i32 },
    #[error("{bytes} bytes left over after the last record")]
    TrailingBytes { bytes: u64 },
    #[error("header {field} is {header} but the records say {records}")]
    TimestampMismatch {
        field: &'static str,
        header: i64,
        records: i64,
    },
    #[error("record {record}: {field} of {bytes} bytes is too large to encode")]
    FieldTooLarge {
        record: usize,
        field: &'static str,
        bytes: u64,
    },
    #[error("batch of {size} bytes is too large to encode")]
    TooLarge { size: u64 },
}

/// The fixed 40-byte header of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub length: u32,
    pub crc: u32,
    pub magic: u8,
    pub flags: u8,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
}

impl BatchHeader {
    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> u64 {
        self.next_offset() - 1
    }

    /// Offset right after the batch (`base_offset + record_count`).
    pub fn next_offset(&self) -> u64 {
        // decode_header guarantees this does not overflow and that record_count >= 1.
        self.base_offset + u64::from(self.record_count)
    }
}

/// A record as it sits inside a batch, borrowing its key and value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
}

impl fmt::Debug for RecordRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordRef")
            .field("timestamp_ms", &self.timestamp_ms)
            .field("key_bytes", &self.key.map(<[u8]>::len))
            .field("value_bytes", &self.value.len())
            .finish()
    }
}

/// A fully verified batch. Records are decoded lazily by [`DecodedBatch::records`],
/// which cannot fail because [`decode_batch`] already checked every one.
#[derive(Clone, Copy, Debug)]
pub struct DecodedBatch<'a> {
    pub header: BatchHeader,
    records_bytes: &'a [u8],
}

impl<'a> DecodedBatch<'a> {
    /// The batch's records in order; record `i` has offset `header.base_offset + i`.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            rest: self.records_bytes,
            remaining: self.header.record_count,
        }
    }
}

/// Iterator over the records of a [`DecodedBatch`].
#[derive(Clone, Debug)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
    remaining: u32,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordRef<'a>;

    fn next(&mut self) -> Option<RecordRef<'a>> {
        if self.remaining == 0 {
            return None;
        }
        let (record, used) = parse_record(self.rest, 0).ok()?;
        self.rest = self.rest.get(used..)?;
        self.remaining -= 1;
        Some(record)
    }
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(raw))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    let raw: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_le_bytes(raw))
}

/// Parses and checks the 40-byte header at the start of `bytes` (the CRC and the
/// records are not checked: that is [`decode_batch`]).
pub fn decode_header(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let truncated = || BatchError::Truncated {
        need: HEADER_BYTES as u64,
        have: bytes.len() as u64,
    };
    let head = bytes.get(..HEADER_BYTES).ok_or_else(truncated)?;
    let field64 = |at| le_u64(head, at).ok_or_else(truncated);
    let field32 = |at| le_u32(head, at).ok_or_else(truncated);
    let header = BatchHeader {
        base_offset: field64(0)?,
        length: field32(8)?,
        crc: field32(12)?,
        magic: head.get(16).copied().ok_or_else(truncated)?,
        flags: head.get(17).copied().ok_or_else(truncated)?,
        record_count: field32(20)?,
        first_timestamp_ms: field64(24)? as i64,
        max_timestamp_ms: field64(32)? as i64,
    };
    if header.magic != MAGIC {
        return Err(BatchError::BadMagic {
            magic: header.magic,
        });
    }
    if header.flags != 0 {
        return Err(BatchError::BadFlags {
            flags: header.flags,
        });
    }
    let reserved = le_u16(head, 18).ok_or_else(truncated)?;
    if reserved != 0 {
        return Err(BatchError::BadReserved { reserved });
    }
    if header.record_count == 0 {
        return Err(BatchError::NoRecords);
    }
    let smallest =
        HEADER_BYTES as u64 + u64::from(header.record_count) * RECORD_OVERHEAD_BYTES as u64;
    if u64::from(header.length) < smallest {
        return Err(BatchError::BadLength {
            length: header.length,
            record_count: header.record_count,
        });
    }
    if header
        .base_offset
        .checked_add(u64::from(header.record_count))
        .is_none()
    {
        return Err(BatchError::OffsetOverflow {
            base_offset: header.base_offset,
            record_count: header.record_count,
        });
    }
    Ok(header)
}

/// Decodes and fully verifies the batch at the start of `bytes` (bytes past the
/// batch's `length` are not looked at).
pub fn decode_batch(bytes: &[u8]) -> Result<DecodedBatch<'_>, BatchError> {
    let header = decode_header(bytes)?;
    let length = header.length as usize;
    let batch = bytes.get(..length).ok_or(BatchError::Truncated {
        need: u64::from(header.length),
        have: bytes.len() as u64,
    })?;
    let computed = crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default());
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    let records_bytes = batch.get(HEADER_BYTES..).unwrap_or_default();
    verify_records(&header, records_bytes)?;
    Ok(DecodedBatch {
        header,
        records_bytes,
    })
}

/// Walks every record once: each must fit, there must be exactly `record_count`
/// of them with no bytes left over, and the header timestamps must match.
fn verify_records(header: &BatchHeader, records_bytes: &[u8]) -> Result<(), BatchError> {
    let mut rest = records_bytes;
    let mut first_timestamp_ms = None;
    let mut max_timestamp_ms = i64::MIN;
    for index in 0..header.record_count {
        let (record, used) = parse_record(rest, index)?;
        first_timestamp_ms.get_or_insert(record.timestamp_ms);
        max_timestamp_ms = max_timestamp_ms.max(record.timestamp_ms);
        rest = rest.get(used..).unwrap_or_default();
    }
    if !rest.is_empty() {
        return Err(BatchError::TrailingBytes {
            bytes: rest.len() as u64,
        });
    }
    let first_timestamp_ms = first_timestamp_ms.unwrap_or(i64::MIN);
    if first_timestamp_ms != header.first_timestamp_ms {
        return Err(BatchError::TimestampMismatch {
            field: "first_timestamp_ms",
            header: header.first_timestamp_ms,
            records: first_timestamp_ms,
        });
    }
    if max_timestamp_ms != header.max_timestamp_ms {
        return Err(BatchError::TimestampMismatch {
            field: "max_timestamp_ms",
            header: header.max_timestamp_ms,
            records: max_timestamp_ms,
        });
    }
    Ok(())
}

/// Parses one record at the start of `bytes`; returns it and the bytes it used.
fn parse_record(bytes: &[u8], record: u32) -> Result<(RecordRef<'_>, usize), BatchError> {
    let overrun = |field, need: usize, have: usize| BatchError::RecordOverrun {
        record,
        field,
        need: need as u64,
        have: have as u64,
    };
    let timestamp_ms = le_u64(bytes, 0).ok_or_else(|| overrun("timestamp", 8, bytes.len()))? as i64;
    let key_len = le_u32(bytes, 8).ok_or_else(|| overrun("key length", 12, bytes.len()))? as i32;
    let mut at = 12;
    let key = match key_len {
        -1 => None,
        len if len >= 0 => {
            let end = at + len as usize;
            let key = bytes
                .get(at..end)
                .ok_or_else(|| overrun("key", end, bytes.len()))?;
            at = end;
            Some(key)
        }
        _ => return Err(BatchError::BadKeyLength { record, key_len }),
    };
    let value_len =
        le_u32(bytes, at).ok_or_else(|| overrun("value length", at + 4, bytes.len()))?;
    at += 4;
    let end = at
        .checked_add(value_len as usize)
        .ok_or_else(|| overrun("value", usize::MAX, bytes.len()))?;
    let value = bytes
        .get(at..end)
        .ok_or_else(|| overrun("value", end, bytes.len()))?;
    let parsed = RecordRef {
        timestamp_ms,
        key,
        value,
    };
    Ok((parsed, end))
}

/// Encoded size of a batch holding `records`, header included.
pub fn encoded_batch_len(records: &[Record]) -> u64 {
    let records_bytes: u64 = records
        .iter()
        .map(|r| {
            RECORD_OVERHEAD_BYTES as u64
                + r.key.as_ref().map_or(0, |k| k.len() as u64)
                + r.value.len() as u64
        })
        .sum();
    HEADER_BYTES as u64 + records_bytes
}

/// Encodes `records` as one batch starting at `base_offset`.
pub fn encode_batch(base_offset: u64, records: &[Record]) -> Result<Vec<u8>, BatchError> {
    let first = records.first().ok_or(BatchError::NoRecords)?;
    let size = encoded_batch_len(records);
    let length = u32::try_from(size).map_err(|_| BatchError::TooLarge { size })?;
    let record_count = u32::try_from(records.len()).map_err(|_| BatchError::TooLarge { size })?;
    let max_timestamp_ms = records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(first.timestamp_ms);
    let mut out = Vec::with_capacity(length as usize);
    out.extend_from_slice(&base_offset.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // CRC, filled in below
    out.push(MAGIC);
    out.push(0); // flags
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&record_count.to_le_bytes());
    out.extend_from_slice(&first.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&max_timestamp_ms.to_le_bytes());
    for (index, record) in records.iter().enumerate() {
        encode_record(&mut out, index, record)?;
    }
    let crc = crc32c::crc32c(out.get(CRC_START..).unwrap_or_default());
    if let Some(slot) = out.get_mut(12..16) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
    debug_assert_eq!(out.len() as u64, size);
    Ok(out)
}

fn encode_record(out: &mut Vec<u8>, index: usize, record: &Record) -> Result<(), BatchError> {
    let too_large = |field, bytes: usize| BatchError::FieldTooLarge {
        record: index,
        field,
        bytes: bytes as u64,
    };
    out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    match &record.key {
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(key) => {
            let len = i32::try_from(key.len()).map_err(|_| too_large("key", key.len()))?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(key);
        }
    }
    let len =
        u32::try_from(record.value.len()).map_err(|_| too_large("value", record.value.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record.value);
    Ok(())
}

/// Stamps `base_offset` on an encoded batch. The CRC does not cover this field, so
/// the batch stays valid. Returns `false` if `batch` is shorter than a header.
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) -> bool {
    if batch.len() < HEADER_BYTES {
        return false;
    }
    match batch.get_mut(..8) {
        Some(slot) => {
            slot.copy_from_slice(&base_offset.to_le_bytes());
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(timestamp_ms: i64, key: Option<&str>, value: &str) -> Record {
        Record {
            timestamp_ms,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Bytes::copy_from_slice(value.as_bytes()),
        }
    }

    fn sample() -> Vec<Record> {
        vec![
            record(5, Some("k1"), "hello"),
            record(9, None, ""),
            record(7, Some(""), "world"),
        ]
    }

    #[test]
    fn round_trip() {
        let records = sample();
        let bytes = encode_batch(42, &records).expect("encode");
        assert_eq!(bytes.len() as u64, encoded_batch_len(&records));
        let decoded = decode_batch(&bytes).expect("decode");
        assert_eq!(decoded.header.base_offset, 42);
        assert_eq!(decoded.header.record_count, 3);
        assert_eq!(decoded.header.first_timestamp_ms, 5);
        assert_eq!(decoded.header.max_timestamp_ms, 9);
        assert_eq!(decoded.header.next_offset(), 45);
        let back: Vec<Record> = decoded
            .records()
            .map(|r| Record {
                timestamp_ms: r.timestamp_ms,
                key: r.key.map(Bytes::copy_from_slice),
                value: Bytes::copy_from_slice(r.value),
            })
            .collect();
        assert_eq!(back, records);
    }

    #[test]
    fn base_offset_is_outside_the_crc() {
        let mut bytes = encode_batch(0, &sample()).expect("encode");
        assert!(set_base_offset(&mut bytes, 1_000));
        let decoded = decode_batch(&bytes).expect("still valid");
        assert_eq!(decoded.header.base_offset, 1_000);
        assert!(!set_base_offset(&mut [0u8; 4], 1));
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let bytes = encode_batch(0, &sample()).expect("encode");
        // Bytes [0, 16) (base offset, length, CRC) are checked by context or the CRC
        // itself; every covered byte must be caught.
        for bit in (CRC_START * 8)..(bytes.len() * 8) {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_batch(&damaged).is_err(), "bit {bit} not caught");
        }
    }

    #[test]
    fn every_truncation_is_caught() {
        let bytes = encode_batch(0, &sample()).expect("encode");
        for len in 0..bytes.len() {
            assert!(decode_batch(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn rejects_empty_and_bad_headers() {
        assert_eq!(encode_batch(0, &[]), Err(BatchError::NoRecords));
        let mut bytes = encode_batch(0, &sample()).expect("encode");
        bytes[16] = 2;
        assert_eq!(
            decode_header(&bytes),
            Err(BatchError::BadMagic { magic: 2 })
        );
        let mut bytes = encode_batch(u64::MAX - 1, &sample()).expect("encode");
        assert!(matches!(
            decode_header(&bytes),
            Err(BatchError::OffsetOverflow { .. })
        ));
        bytes[8..12].copy_from_slice(&41u32.to_le_bytes());
        assert!(matches!(
            decode_header(&bytes),
            Err(BatchError::BadLength { .. })
        ));
    }

    #[test]
    fn a_forged_record_count_does_not_allocate_or_panic() {
        let mut bytes = encode_batch(0, &sample()).expect("encode");
        bytes[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_batch(&bytes).is_err());
    }

    mod fuzz {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed};

        use super::*;

        fn config() -> Config {
            let seed = 0x00C0_DEC0;
            eprintln!("random seed: {seed}");
            Config {
                cases: 512,
                rng_seed: RngSeed::Fixed(seed),
                failure_persistence: None,
                ..Config::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(decoded) = decode_batch(&bytes) {
                    prop_assert_eq!(decoded.records().count() as u32, decoded.header.record_count);
                }
                let _ = crate::index::decode_offset_entry(&bytes);
                let _ = crate::index::decode_time_entry(&bytes);
            }

            #[test]
            fn mutated_batches_never_panic_and_are_caught(
                values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..6),
                position in any::<proptest::sample::Index>(),
                replacement in any::<u8>(),
            ) {
                let records: Vec<Record> = values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| Record { timestamp_ms: i as i64, key: None, value: Bytes::from(v) })
                    .collect();
                let mut bytes = encode_batch(3, &records).expect("encode");
                let at = position.index(bytes.len());
                let changed = bytes[at] != replacement;
                bytes[at] = replacement;
                let result = decode_batch(&bytes);
                if changed && at >= CRC_START {
                    prop_assert!(result.is_err(), "change at byte {} not caught", at);
                }
            }
        }
    }
}
