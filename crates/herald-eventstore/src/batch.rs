//! The payload of one JetStream message of the event store: the log records of one
//! write (an append, a metadata change or a delete), so a write stays all-or-nothing.
//! Pure codec: no I/O.
//!
//! Layout (integers little-endian): `format:u8 = 1 | count:u32 | count × record`, a
//! record being `timestamp_ms:i64 | has_key:u8 (0|1) | [key_len:u32 | key] |
//! value_len:u32 | value`.
//! Invariants: decoding never panics, never allocates more than the input justifies, and
//! rejects an empty batch, an unknown format and trailing bytes.

use bytes::Bytes;
use herald_log::Record;

const FORMAT: u8 = 1;
/// The smallest encoded record: timestamp, key flag, value length.
const RECORD_BYTES_MIN: usize = 8 + 1 + 4;

/// The encoded size of `records` (what [`encode`] allocates).
pub fn encoded_len(records: &[Record]) -> usize {
    5 + records
        .iter()
        .map(|r| RECORD_BYTES_MIN + r.key.as_ref().map_or(0, |k| 4 + k.len()) + r.value.len())
        .sum::<usize>()
}

/// Encodes `records` (keys and values must each be below 4 GiB, which the event
/// store's limits guarantee by far).
pub fn encode(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(records));
    out.push(FORMAT);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for record in records {
        out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
        match &record.key {
            Some(key) => {
                out.push(1);
                put_bytes(&mut out, key);
            }
            None => out.push(0),
        }
        put_bytes(&mut out, &record.value);
    }
    out
}

/// Decodes a batch; keys and values share `payload`'s buffer. The error says what is wrong.
pub fn decode(payload: &Bytes) -> Result<Vec<Record>, String> {
    let mut reader = Reader {
        buf: payload,
        pos: 0,
    };
    let format = reader.u8()?;
    if format != FORMAT {
        return Err(format!("unknown batch format {format}"));
    }
    let count = reader.u32()? as usize;
    if count == 0 {
        return Err("empty batch".to_string());
    }
    let left = payload.len().saturating_sub(reader.pos);
    if count > left / RECORD_BYTES_MIN {
        return Err(format!(
            "batch claims {count} records but holds only {left} bytes"
        ));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let timestamp_ms = reader.i64()?;
        let key = match reader.u8()? {
            0 => None,
            1 => Some(reader.bytes()?),
            other => return Err(format!("bad key flag {other}")),
        };
        let value = reader.bytes()?;
        records.push(Record {
            timestamp_ms,
            key,
            value,
        });
    }
    if reader.pos != payload.len() {
        return Err(format!(
            "{} trailing bytes after the batch",
            payload.len() - reader.pos
        ));
    }
    Ok(records)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, count: usize) -> Result<Bytes, String> {
        let end = self
            .pos
            .checked_add(count)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "batch ends at byte {}: need {count} bytes at byte {}",
                    self.buf.len(),
                    self.pos
                )
            })?;
        let slice = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut raw = [0u8; N];
        raw.copy_from_slice(&self.take(N)?);
        Ok(raw)
    }

    fn u8(&mut self) -> Result<u8, String> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(timestamp_ms: i64, key: Option<&[u8]>, value: &[u8]) -> Record {
        Record {
            timestamp_ms,
            key: key.map(Bytes::copy_from_slice),
            value: Bytes::copy_from_slice(value),
        }
    }

    fn same(a: &[Record], b: &[Record]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.timestamp_ms == y.timestamp_ms && x.key == y.key && x.value == y.value
            })
    }

    #[test]
    fn a_batch_round_trips() {
        let records = vec![
            record(1, Some(b"order-1"), b"first"),
            record(-5, None, b""),
            record(i64::MAX, Some(b""), &[0, 1, 2, 255]),
        ];
        let bytes = encode(&records);
        assert_eq!(bytes.len(), encoded_len(&records));
        let back = decode(&Bytes::from(bytes)).expect("decode");
        assert!(same(&records, &back));
    }

    #[test]
    fn truncated_padded_or_malformed_batches_are_rejected() {
        let bytes = encode(&[record(7, Some(b"s"), b"value")]);
        for len in 0..bytes.len() {
            assert!(
                decode(&Bytes::copy_from_slice(&bytes[..len])).is_err(),
                "prefix of {len} bytes"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode(&Bytes::from(padded)).is_err());
        let mut bad_format = bytes.clone();
        bad_format[0] = 9;
        assert!(decode(&Bytes::from(bad_format)).is_err());
        let mut bad_flag = bytes.clone();
        bad_flag[5 + 8] = 2;
        assert!(decode(&Bytes::from(bad_flag)).is_err());
        assert!(decode(&Bytes::from(encode(&[]))).is_err(), "empty batch");
    }

    #[test]
    fn a_huge_count_is_refused_before_allocating() {
        let mut bytes = vec![FORMAT];
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 32]);
        let error = decode(&Bytes::from(bytes)).expect_err("refused");
        assert!(error.contains("claims"), "{error}");
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(
            records in prop::collection::vec(
                (any::<i64>(),
                 prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
                 prop::collection::vec(any::<u8>(), 0..200)),
                1..20,
            )
        ) {
            let records: Vec<Record> = records
                .iter()
                .map(|(ts, key, value)| record(*ts, key.as_deref(), value))
                .collect();
            let back = decode(&Bytes::from(encode(&records))).expect("decode");
            prop_assert!(same(&records, &back));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(bytes));
        }
    }
}
