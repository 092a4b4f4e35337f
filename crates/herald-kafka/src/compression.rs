//! Bounded decompression of produced record batches (gzip, snappy, lz4, zstd).
//!
//! Owns: turning a batch's compressed records section into plain bytes without ever
//! holding more than the caller's limit: a "decompression bomb" fails with
//! [`DecompressError::TooLarge`] after at most `limit + 1` bytes, and snappy's declared
//! block lengths are checked before anything is allocated for them.
//! Does not own: the batch layout (see `records`).

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::Compression;
use thiserror::Error;

/// Xerial's snappy framing, used by the Java client and librdkafka.
const SNAPPY_XERIAL_MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecompressError {
    #[error("decompressed records exceed {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{codec} data is corrupt: {reason}")]
    Corrupt { codec: &'static str, reason: String },
}

/// Decompresses `input` (the records section of a batch) with at most `limit` bytes out.
pub fn decompress(
    compression: Compression,
    input: &Bytes,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    match compression {
        Compression::None => {
            if input.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            Ok(input.clone())
        }
        Compression::Gzip => {
            read_bounded("gzip", flate2::read::MultiGzDecoder::new(&input[..]), limit)
        }
        Compression::Lz4 => {
            let decoder = lz4::Decoder::new(&input[..]).map_err(|e| corrupt("lz4", e))?;
            read_bounded("lz4", decoder, limit)
        }
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(&input[..]).map_err(|e| corrupt("zstd", e))?;
            read_bounded("zstd", decoder, limit)
        }
        Compression::Snappy => snappy(input, limit),
    }
}

fn corrupt(codec: &'static str, e: impl std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt {
        codec,
        reason: e.to_string(),
    }
}

fn read_bounded(
    codec: &'static str,
    reader: impl Read,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

fn snappy(input: &Bytes, limit: usize) -> Result<Bytes, DecompressError> {
    let mut decoder = snap::raw::Decoder::new();
    let Some(mut rest) = input.strip_prefix(&SNAPPY_XERIAL_MAGIC[..]) else {
        // Raw snappy, as some clients send it.
        let length = snap::raw::decompress_len(input).map_err(|e| corrupt("snappy", e))?;
        if length > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        let out = decoder
            .decompress_vec(input)
            .map_err(|e| corrupt("snappy", e))?;
        return Ok(Bytes::from(out));
    };
    let mut out: Vec<u8> = Vec::new();
    while !rest.is_empty() {
        let (length_bytes, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("snappy", "truncated block length"))?;
        let block_length = u32::from_be_bytes(*length_bytes) as usize;
        let block = after
            .get(..block_length)
            .ok_or_else(|| corrupt("snappy", "truncated block"))?;
        rest = after.get(block_length..).unwrap_or_default();
        let length = snap::raw::decompress_len(block).map_err(|e| corrupt("snappy", e))?;
        if out.len().saturating_add(length) > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        let start = out.len();
        out.resize(start + length, 0);
        let target = out.get_mut(start..).unwrap_or_default();
        decoder
            .decompress(block, target)
            .map_err(|e| corrupt("snappy", e))?;
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_is_bounded() {
        let data = sample();
        let gzip = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).expect("gzip");
            e.finish().expect("gzip")
        };
        let zstd = zstd::stream::encode_all(&data[..], 1).expect("zstd");
        let lz4 = {
            let mut e = lz4::EncoderBuilder::new().build(Vec::new()).expect("lz4");
            e.write_all(&data).expect("lz4");
            let (out, result) = e.finish();
            result.expect("lz4");
            out
        };
        let snappy_raw = snap::raw::Encoder::new()
            .compress_vec(&data)
            .expect("snappy");
        let mut snappy_xerial = SNAPPY_XERIAL_MAGIC.to_vec();
        for chunk in data.chunks(32 * 1024) {
            let block = snap::raw::Encoder::new()
                .compress_vec(chunk)
                .expect("snappy");
            snappy_xerial.extend_from_slice(&(block.len() as u32).to_be_bytes());
            snappy_xerial.extend_from_slice(&block);
        }
        for (compression, bytes) in [
            (Compression::Gzip, gzip),
            (Compression::Zstd, zstd),
            (Compression::Lz4, lz4),
            (Compression::Snappy, snappy_raw),
            (Compression::Snappy, snappy_xerial),
            (Compression::None, data.clone()),
        ] {
            let input = Bytes::from(bytes);
            let out = decompress(compression, &input, data.len()).expect("decompress");
            assert_eq!(&out[..], &data[..], "{compression:?}");
            assert_eq!(
                decompress(compression, &input, data.len() - 1),
                Err(DecompressError::TooLarge {
                    limit: data.len() - 1
                }),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage =
            Bytes::from_static(b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\xff\xff\xff\xff");
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            assert!(decompress(compression, &garbage, 1 << 20).is_err());
        }
    }
}
