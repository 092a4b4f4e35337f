//! Kafka's framing: every request and response is a big-endian `INT32` length followed by
//! that many bytes.
//!
//! Owns: cutting whole frames out of a read buffer. Pure: no I/O, so the connection loop
//! and the fuzz target share it.
//! Invariants: nothing is allocated for a frame until all of it has arrived (the caller's
//! buffer grows by what the peer actually sent, never by the claimed length); a negative
//! length or one above the limit is an error, after which the connection must be closed
//! because the stream can no longer be resynchronised.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;
/// Default largest frame accepted (Kafka's `socket.request.max.bytes` is 100 MiB too).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;

/// Why a frame can not be taken from the stream.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {length} is negative")]
    NegativeLength { length: i32 },
    #[error("frame of {length} bytes is larger than the limit of {max} bytes")]
    TooLarge { length: usize, max: usize },
}

/// Takes one whole frame (without its length prefix) off the front of `buffer`.
///
/// `Ok(None)` means more bytes are needed; `buffer` is left untouched then.
pub fn take_frame(
    buffer: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let Some(length) = peek_length(buffer, frame_bytes_max)? else {
        return Ok(None);
    };
    if buffer.len() - LENGTH_PREFIX_BYTES < length {
        return Ok(None);
    }
    buffer.advance(LENGTH_PREFIX_BYTES);
    Ok(Some(buffer.split_to(length).freeze()))
}

/// The length of the frame at the front of `buffer`, checked, if its prefix has arrived.
pub fn peek_length(buffer: &[u8], frame_bytes_max: usize) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buffer.get(..LENGTH_PREFIX_BYTES) else {
        return Ok(None);
    };
    let mut raw = [0u8; LENGTH_PREFIX_BYTES];
    raw.copy_from_slice(prefix);
    let length = i32::from_be_bytes(raw);
    let Ok(length) = usize::try_from(length) else {
        return Err(FrameError::NegativeLength { length });
    };
    if length > frame_bytes_max {
        return Err(FrameError::TooLarge {
            length,
            max: frame_bytes_max,
        });
    }
    Ok(Some(length))
}

/// How many more bytes the frame at the front of `buffer` needs (0 if it is complete or
/// its prefix is not there yet). Lets the reader reserve no more than what will come.
pub fn bytes_missing(buffer: &[u8], frame_bytes_max: usize) -> usize {
    match peek_length(buffer, frame_bytes_max) {
        Ok(Some(length)) => (LENGTH_PREFIX_BYTES + length).saturating_sub(buffer.len()),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn partial_prefix_and_body_need_more_bytes() {
        let whole = framed(b"hello");
        for cut in 0..whole.len() {
            let mut buffer = BytesMut::from(&whole[..cut]);
            assert_eq!(take_frame(&mut buffer, 100), Ok(None), "cut at {cut}");
            assert_eq!(buffer.len(), cut, "buffer untouched");
        }
        let mut buffer = BytesMut::from(&whole[..]);
        assert_eq!(
            take_frame(&mut buffer, 100),
            Ok(Some(Bytes::from_static(b"hello")))
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn back_to_back_frames_come_out_in_order() {
        let mut bytes = framed(b"one");
        bytes.extend(framed(b""));
        bytes.extend(framed(b"three"));
        let mut buffer = BytesMut::from(&bytes[..]);
        let mut out = Vec::new();
        while let Some(frame) = take_frame(&mut buffer, 100).expect("valid") {
            out.push(frame);
        }
        assert_eq!(out, vec![&b"one"[..], &b""[..], &b"three"[..]]);
    }

    #[test]
    fn negative_and_oversized_lengths_are_errors_without_allocation() {
        let mut buffer = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut buffer, 100),
            Err(FrameError::NegativeLength { length: -1 })
        );
        let mut buffer = BytesMut::from(&i32::MAX.to_be_bytes()[..]);
        assert_eq!(
            take_frame(&mut buffer, FRAME_BYTES_MAX_DEFAULT),
            Err(FrameError::TooLarge {
                length: i32::MAX as usize,
                max: FRAME_BYTES_MAX_DEFAULT
            })
        );
        assert!(
            buffer.capacity() < 1024,
            "never sized by the claimed length"
        );
    }

    #[test]
    fn bytes_missing_counts_what_is_left() {
        let whole = framed(b"abcdef");
        assert_eq!(bytes_missing(&whole[..2], 100), 0);
        assert_eq!(bytes_missing(&whole[..5], 100), 5);
        assert_eq!(bytes_missing(&whole, 100), 0);
        assert_eq!(bytes_missing(&(-5i32).to_be_bytes(), 100), 0);
    }
}
