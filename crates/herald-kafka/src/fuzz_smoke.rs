//! The fuzz target's property as a seeded test: the request decoder never panics and
//! never aborts, on random bytes and on valid requests with random damage. (`fuzz/` runs
//! the same path under libFuzzer for longer; this keeps it checked in every test run.)

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;

use crate::api::api_versions::SUPPORTED;
use crate::codec::exercise_decoder;

/// A framed request of `key` at `version` with default fields.
fn framed(key: ApiKey, version: i16) -> Vec<u8> {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(3)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut body, key.request_header_version(version))
        .expect("header");
    let request: Result<(), String> = match key {
        ApiKey::Produce => ProduceRequest::default()
            .encode(&mut body, version)
            .map_err(|e| e.to_string()),
        ApiKey::Fetch => FetchRequest::default()
            .encode(&mut body, version)
            .map_err(|e| e.to_string()),
        ApiKey::Metadata => MetadataRequest::default()
            .encode(&mut body, version)
            .map_err(|e| e.to_string()),
        ApiKey::JoinGroup => JoinGroupRequest::default()
            .encode(&mut body, version)
            .map_err(|e| e.to_string()),
        ApiKey::OffsetCommit => OffsetCommitRequest::default()
            .encode(&mut body, version)
            .map_err(|e| e.to_string()),
        ApiKey::CreateTopics => CreateTopicsRequest::default()
            .encode(&mut body, version)
            .map_err(|e| e.to_string()),
        _ => ApiVersionsRequest::default()
            .encode(&mut body, 0)
            .map_err(|e| e.to_string()),
    };
    request.expect("request encodes");
    let mut out = BytesMut::new();
    out.put_i32(body.len() as i32);
    out.extend_from_slice(&body);
    out.to_vec()
}

fn seeds() -> Vec<Vec<u8>> {
    SUPPORTED
        .iter()
        .flat_map(|(key, min, max)| (*min..=*max).map(move |v| framed(*key, v)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise_decoder(&bytes, 1 << 20);
    }

    #[test]
    fn damaged_requests_never_panic(
        seed in any::<proptest::sample::Index>(),
        damage in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<proptest::sample::Index>(),
    ) {
        let seeds = seeds();
        let mut bytes = seed.get(&seeds).clone();
        for (at, value) in damage {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(4));
        exercise_decoder(&bytes, 1 << 20);
    }
}

#[test]
fn a_huge_array_count_is_survived() {
    // Metadata v0 claiming 2^31-1 topics in a 14-byte frame.
    let mut frame = vec![0, 0, 0, 14, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0];
    frame.extend_from_slice(&i32::MAX.to_be_bytes());
    assert_eq!(exercise_decoder(&frame, 1 << 20), 0);
    let undamaged: usize = seeds().iter().map(|s| exercise_decoder(s, 1 << 20)).sum();
    assert!(undamaged > 0);
}
