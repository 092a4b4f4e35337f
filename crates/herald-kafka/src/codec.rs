//! Request decoding and response encoding around the `kafka-protocol` message types.
//!
//! Owns: turning one frame into a request header plus a typed request (or a verdict that
//! it is unsupported or malformed), and turning a typed response back into a
//! length-prefixed frame. Pure: no I/O; this is the fuzz target's path.
//! Does not own: what a request means (see `api/`).
//! Invariants: decoding never panics on any input; the api key, version and correlation
//! id are read by hand first, so an unknown key or an unsupported version still gets an
//! answer carrying the client's correlation id; only versions listed in
//! [`crate::api::api_versions::SUPPORTED`] reach the `kafka-protocol` decoders.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;

use crate::api::api_versions::{self, supported_range};
use crate::error::EncodeError;

/// The fixed start of every request header: enough to answer any request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// What one request frame turned out to be.
// The request variant is the common case; boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Decoded {
    /// A request Herald handles, at a version it advertises.
    Request {
        header: RequestHeader,
        api_key: ApiKey,
        request: RequestKind,
    },
    /// A well-framed request for an api key or version Herald does not serve: answered
    /// with `UNSUPPORTED_VERSION`, the connection stays open.
    Unsupported { raw: RawHeader },
    /// Bytes that do not parse: the connection is closed (as Kafka does).
    Malformed { reason: String },
}

/// Reads the api key, version and correlation id (the first 8 bytes of every header).
pub fn peek_header(frame: &[u8]) -> Option<RawHeader> {
    let field = |at: usize| -> Option<[u8; 2]> { frame.get(at..at + 2)?.try_into().ok() };
    let api_key = i16::from_be_bytes(field(0)?);
    let api_version = i16::from_be_bytes(field(2)?);
    let correlation: [u8; 4] = frame.get(4..8)?.try_into().ok()?;
    Some(RawHeader {
        api_key,
        api_version,
        correlation_id: i32::from_be_bytes(correlation),
    })
}

/// Decodes one frame (without its length prefix).
pub fn decode_request(frame: Bytes) -> Decoded {
    let Some(raw) = peek_header(&frame) else {
        return Decoded::Malformed {
            reason: format!("request of {} bytes is shorter than a header", frame.len()),
        };
    };
    let Ok(api_key) = ApiKey::try_from(raw.api_key) else {
        return Decoded::Unsupported { raw };
    };
    let Some(range) = supported_range(api_key) else {
        return Decoded::Unsupported { raw };
    };
    if raw.api_version < range.0 || raw.api_version > range.1 {
        return Decoded::Unsupported { raw };
    }
    let mut body = frame;
    let header_version = api_key.request_header_version(raw.api_version);
    let header = match RequestHeader::decode(&mut body, header_version) {
        Ok(h) => h,
        Err(e) => {
            return Decoded::Malformed {
                reason: format!("request header: {e}"),
            }
        }
    };
    match RequestKind::decode(api_key, &mut body, raw.api_version) {
        Ok(request) => Decoded::Request {
            header,
            api_key,
            request,
        },
        Err(e) => Decoded::Malformed {
            reason: format!("{api_key:?} v{} body: {e}", raw.api_version),
        },
    }
}

/// The whole request-decoding path over arbitrary bytes, for fuzzing: frames are cut
/// from `bytes` as a connection would, each is decoded, and the record batches of a
/// Produce request are checked and decoded too. Returns how many requests decoded.
pub fn exercise_decoder(bytes: &[u8], frame_bytes_max: usize) -> usize {
    let mut buffer = bytes::BytesMut::from(bytes);
    let mut decoded = 0;
    while let Ok(Some(frame)) = crate::frame::take_frame(&mut buffer, frame_bytes_max) {
        if let Decoded::Request { request, .. } = decode_request(frame) {
            decoded += 1;
            if let RequestKind::Produce(produce) = request {
                for topic in produce.topic_data {
                    for partition in topic.partition_data {
                        if let Some(records) = partition.records {
                            let _ = crate::records::decode_batches(&records, 1 << 20);
                        }
                    }
                }
            }
        }
    }
    decoded
}

/// Encodes a response frame: length prefix, response header, body.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let header_version = api_key.response_header_version(api_version);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, header_version)
        .map_err(EncodeError::encode)?;
    response
        .encode(&mut out, api_version)
        .map_err(EncodeError::encode)?;
    finish_length(out)
}

/// The answer to an unsupported api key or version. ApiVersions gets the full v0 answer
/// (`UNSUPPORTED_VERSION` plus every supported range, so the client can pick a version);
/// anything else gets a v0 header and the bare `INT16` error code 35.
pub fn encode_unsupported(raw: &RawHeader) -> Result<Bytes, EncodeError> {
    let code = ResponseError::UnsupportedVersion.code();
    if raw.api_key == ApiKey::ApiVersions as i16 {
        let response: ApiVersionsResponse = api_versions::response(code);
        let mut out = BytesMut::with_capacity(256);
        out.put_i32(0);
        out.put_i32(raw.correlation_id);
        response.encode(&mut out, 0).map_err(EncodeError::encode)?;
        return finish_length(out);
    }
    let mut out = BytesMut::with_capacity(10);
    out.put_i32(6);
    out.put_i32(raw.correlation_id);
    out.put_i16(code);
    Ok(out.freeze())
}

fn finish_length(mut out: BytesMut) -> Result<Bytes, EncodeError> {
    let length =
        i32::try_from(out.len() - 4).map_err(|_| EncodeError::TooLarge { size: out.len() })?;
    if let Some(prefix) = out.get_mut(..4) {
        prefix.copy_from_slice(&length.to_be_bytes());
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn request_frame(api_key: ApiKey, version: i16, body: &impl Encodable) -> Bytes {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("test")))
            .encode(&mut out, api_key.request_header_version(version))
            .expect("header");
        body.encode(&mut out, version).expect("body");
        out.freeze()
    }

    #[test]
    fn decodes_a_supported_request() {
        let frame = request_frame(ApiKey::Metadata, 9, &MetadataRequest::default());
        match decode_request(frame) {
            Decoded::Request {
                header, api_key, ..
            } => {
                assert_eq!(api_key, ApiKey::Metadata);
                assert_eq!(header.correlation_id, 7);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unknown_keys_and_versions_are_unsupported_not_malformed() {
        let mut frame = vec![0x7f, 0x00, 0x00, 0x01, 0, 0, 0, 9];
        frame.extend_from_slice(&[0xff; 20]);
        assert!(matches!(
            decode_request(Bytes::from(frame)),
            Decoded::Unsupported { raw } if raw.correlation_id == 9
        ));
        let frame = request_frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        let mut bytes = frame.to_vec();
        bytes[3] = 99; // version 99
        assert!(matches!(
            decode_request(Bytes::from(bytes)),
            Decoded::Unsupported { .. }
        ));
    }

    #[test]
    fn short_and_garbage_frames_are_malformed() {
        assert!(matches!(
            decode_request(Bytes::from_static(b"\x00\x03")),
            Decoded::Malformed { .. }
        ));
        let mut frame = vec![0x00, 0x03, 0x00, 0x09, 0, 0, 0, 1];
        frame.extend_from_slice(&[0xff; 3]);
        assert!(matches!(
            decode_request(Bytes::from(frame)),
            Decoded::Malformed { .. }
        ));
    }

    #[test]
    fn unsupported_answers_carry_the_correlation_id() {
        let raw = RawHeader {
            api_key: 1000,
            api_version: 0,
            correlation_id: 42,
        };
        let bytes = encode_unsupported(&raw).expect("encode");
        assert_eq!(&bytes[..], &[0, 0, 0, 6, 0, 0, 0, 42, 0, 35]);
        let raw = RawHeader {
            api_key: ApiKey::ApiVersions as i16,
            api_version: 77,
            correlation_id: 5,
        };
        let bytes = encode_unsupported(&raw).expect("encode");
        let mut body = bytes.slice(8..);
        let response = ApiVersionsResponse::decode(&mut body, 0).expect("v0 response");
        assert_eq!(response.error_code, 35);
        assert!(!response.api_keys.is_empty());
    }
}
