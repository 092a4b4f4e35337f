use herald_core::codec::{decode_event, encode_event_to_vec};
use proptest::prelude::*;

use super::*;

fn record(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&str, Option<&[u8]>)]) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1_700_000_000_123,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    StrBytes::from_string(n.to_string()),
                    v.map(Bytes::copy_from_slice),
                )
            })
            .collect(),
    }
}

/// What the broker does to an event before it is stored, then the stored form back.
fn store_and_load(mut event: CloudEvent) -> CloudEvent {
    event.apply_defaults();
    event.validate().expect("valid after defaults");
    decode_event(&encode_event_to_vec(&event)).expect("decodes")
}

#[test]
fn a_plain_record_gets_generated_attributes() {
    let r = record(Some(b"cust-7"), Some(b"hello"), &[("trace", Some(b"t1"))]);
    let event = record_to_event(&r, "/kafka/app").expect("valid");
    assert_eq!(event.source, "/kafka/app");
    assert_eq!(event.ty, GENERATED_TYPE);
    assert_eq!(event.specversion, "1.0");
    assert!(uuid::Uuid::parse_str(&event.id).is_ok());
    assert_eq!(event.time.as_deref(), Some("2023-11-14T22:13:20.123Z"));
    assert_eq!(event.partition_key().as_deref(), Some("cust-7"));
    assert_eq!(event.data, Some(Data::Binary(Bytes::from_static(b"hello"))));
    assert_eq!(
        kept_headers(&event),
        vec![("trace".to_string(), Some(Bytes::from_static(b"t1")))]
    );
}

#[test]
fn w3c_trace_headers_become_the_tracing_extension_and_come_back() {
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = record(
        None,
        Some(b"v"),
        &[
            ("traceparent", Some(parent.as_bytes())),
            ("tracestate", Some(b"k=v")),
        ],
    );
    let event = record_to_event(&r, "/kafka/app").expect("valid");
    assert_eq!(event.traceparent(), Some(parent));
    assert_eq!(event.tracestate(), Some("k=v"));
    assert!(kept_headers(&event).is_empty());
    // Still a plain record: the producer timestamp becomes `time`.
    assert_eq!(event.time.as_deref(), Some("2023-11-14T22:13:20.123Z"));
    let (_, headers) = event_to_record(&store_and_load(event));
    let header = |name: &str| {
        headers
            .get(&StrBytes::from_string(name.to_string()))
            .cloned()
            .flatten()
    };
    assert_eq!(header("traceparent"), Some(Bytes::from(parent)));
    assert_eq!(header("tracestate"), Some(Bytes::from_static(b"k=v")));
    assert_eq!(header("ce_traceparent"), Some(Bytes::from(parent)));

    // An invalid traceparent is kept as an ordinary header, never refused.
    let r = record(None, Some(b"v"), &[("traceparent", Some(b"garbage"))]);
    let event = record_to_event(&r, "/kafka/app").expect("valid");
    assert_eq!(event.traceparent(), None);
    assert_eq!(
        kept_headers(&event),
        vec![(
            "traceparent".to_string(),
            Some(Bytes::from_static(b"garbage"))
        )]
    );
}

#[test]
fn ce_headers_become_attributes_and_json_is_kept_byte_for_byte() {
    let r = record(
        Some(b"k"),
        Some(b"{ \"a\" : 1 }"),
        &[
            ("ce_id", Some(b"e-1")),
            ("ce_source", Some(b"/shop")),
            ("ce_type", Some(b"order.created")),
            ("ce_specversion", Some(b"1.0")),
            ("ce_time", Some(b"2024-01-01T00:00:00Z")),
            ("ce_tenant", Some(b"acme")),
            ("content-type", Some(b"application/json")),
        ],
    );
    let event = record_to_event(&r, "/kafka/app").expect("valid");
    assert_eq!(
        (event.id.as_str(), event.source.as_str(), event.ty.as_str()),
        ("e-1", "/shop", "order.created")
    );
    assert_eq!(event.time.as_deref(), Some("2024-01-01T00:00:00Z"));
    assert_eq!(
        event.extensions.get("tenant"),
        Some(&ExtensionValue::String("acme".into()))
    );
    assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(event.data, Some(Data::Json("{ \"a\" : 1 }".into())));
    assert!(!event.extensions.contains_key(EXT_KAFKA_HEADERS));
}

#[test]
fn invalid_core_attributes_are_refused_naming_the_field() {
    for (name, value) in [
        ("ce_time", &b"yesterday"[..]),
        ("ce_specversion", b"0.3"),
        ("ce_id", b""),
    ] {
        let r = record(None, Some(b"x"), &[(name, Some(value))]);
        let error = record_to_event(&r, "/kafka/app").expect_err(name);
        assert_eq!(format!("ce_{}", error.field), name);
    }
}

#[test]
fn a_null_value_is_no_data_and_an_empty_one_is_empty_bytes() {
    let none = record_to_event(&record(None, None, &[]), "/s").expect("valid");
    assert_eq!(none.data, None);
    let empty = record_to_event(&record(None, Some(b""), &[]), "/s").expect("valid");
    assert_eq!(empty.data, Some(Data::Binary(Bytes::new())));
    assert_eq!(event_to_record(&empty).0, Some(Bytes::new()));
    assert_eq!(event_to_record(&none).0, None);
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.-]{1,12}",
        "ce_[a-z0-9]{1,8}".prop_filter("not a core attribute", |n| {
            !CORE_ATTRIBUTES.contains(&n.trim_start_matches(CE_PREFIX))
        }),
        Just("content-type".to_string()),
        Just("ce_Upper".to_string()),
        "\\PC{1,6}",
    ]
}

fn header_value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        proptest::collection::vec(any::<u8>(), 0..20).prop_map(Some),
        "[ -~]{0,20}".prop_map(|s| Some(s.into_bytes())),
        prop_oneof![
            Just("application/json"),
            Just("text/plain"),
            Just("not a type")
        ]
        .prop_map(|s| Some(s.as_bytes().to_vec())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Kafka record → event → stored bytes → event → Kafka record keeps the key, the
    /// value and every produced header (name, value and relative order).
    #[test]
    fn round_trip_is_lossless(
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        headers in proptest::collection::vec((header_name(), header_value()), 0..8),
    ) {
        let mut unique: IndexMap<String, Option<Vec<u8>>> = IndexMap::new();
        for (n, v) in headers {
            unique.insert(n, v);
        }
        let header_refs: Vec<(&str, Option<&[u8]>)> =
            unique.iter().map(|(n, v)| (n.as_str(), v.as_deref())).collect();
        let r = record(key.as_deref(), value.as_deref(), &header_refs);
        let event = record_to_event(&r, "/kafka/test").expect("only core ce_ attributes can be invalid");
        let stored = store_and_load(event.clone());
        let (value_back, headers_back) = event_to_record(&stored);
        prop_assert_eq!(value_back.as_deref(), value.as_deref());
        for (name, original) in &unique {
            let back = headers_back.get(&StrBytes::from_string(name.clone()));
            prop_assert_eq!(back.map(|v| v.as_deref()), Some(original.as_deref()), "header {:?}", name);
        }
        let positions: Vec<usize> = unique
            .keys()
            .filter(|n| !n.starts_with(CE_PREFIX) && *n != HEADER_CONTENT_TYPE)
            .filter_map(|n| headers_back.get_index_of(&StrBytes::from_string(n.clone())))
            .collect();
        prop_assert!(positions.windows(2).all(|w| w[0] < w[1]), "order kept: {:?}", positions);
    }

    /// Random bytes as a produced records section: an error or batches, never a panic.
    #[test]
    fn random_record_sections_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_batches(&Bytes::from(bytes), 1 << 20);
    }
}

fn encoded_batch(records: &[Record], compression: Compression) -> BytesMut {
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode");
    out
}

#[test]
fn batches_decode_for_every_codec() {
    let records: Vec<Record> = (0..50)
        .map(|i| {
            let mut r = record(
                Some(b"k"),
                Some(format!("v{i}").as_bytes()),
                &[("h", Some(b"1"))],
            );
            r.offset = i;
            r.sequence = i as i32;
            r
        })
        .collect();
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let bytes = encoded_batch(&records, compression).freeze();
        let batches = decode_batches(&bytes, 1 << 20).expect("decodes");
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].records.len(), 50, "{compression:?}");
        assert_eq!(batches[0].last_sequence(), 49);
    }
}

/// Sets the i32 at `at` in an encoded batch and refreshes its CRC.
fn patch_i32(batch: &mut BytesMut, at: usize, value: i32) {
    batch[at..at + 4].copy_from_slice(&value.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn hostile_counts_are_refused_before_allocation() {
    let one = [record(Some(b"k"), Some(b"v"), &[])];
    let mut bomb = encoded_batch(&one, Compression::None);
    patch_i32(&mut bomb, 57, i32::MAX);
    assert!(matches!(
        decode_batches(&bomb.freeze(), 1 << 20),
        Err(RecordsError::Corrupt(_))
    ));

    // A record claiming 2^30 headers: the varint sits right before the end of the record.
    let mut headers = encoded_batch(&one, Compression::None);
    let last = headers.len() - 1;
    headers.truncate(last);
    headers.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x08]);
    let length = (headers.len() - 12) as i32;
    patch_i32(&mut headers, 8, length);
    assert!(decode_batches(&headers.freeze(), 1 << 20).is_err());

    let mut negative = encoded_batch(&one, Compression::None);
    patch_i32(&mut negative, 8, -5);
    assert!(decode_batches(&negative.freeze(), 1 << 20).is_err());

    let mut old = encoded_batch(&one, Compression::None);
    old[16] = 1;
    assert!(matches!(
        decode_batches(&old.freeze(), 1 << 20),
        Err(RecordsError::UnsupportedMagic(1))
    ));
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let big = vec![record(Some(b"k"), Some(&vec![0u8; 4 << 20]), &[])];
    let bytes = encoded_batch(&big, Compression::Gzip).freeze();
    assert!(bytes.len() < 64 * 1024, "compresses well");
    assert!(matches!(
        decode_batches(&bytes, 1 << 20),
        Err(RecordsError::Decompress(DecompressError::TooLarge { .. }))
    ));
}

#[test]
fn fetched_events_become_log_append_time_batches_per_append() {
    let events: Vec<EventRecord> = (0..5u64)
        .map(|i| EventRecord {
            topic: "t".into(),
            partition: 0,
            offset: 10 + i,
            timestamp_ms: if i < 3 { 1000 } else { 2000 },
            key: Some(Bytes::from(format!("k{i}"))),
            event: store_and_load(CloudEvent::new(format!("e{i}"), "/s", "t")),
        })
        .collect();
    let mut out = BytesMut::new();
    encode_fetched(&events, &mut out).expect("encode");
    assert_eq!(
        batch_count(out.clone().freeze()),
        2,
        "one batch per append time"
    );
    let mut bytes = out.freeze();
    let sets = RecordBatchDecoder::decode_all(&mut bytes).expect("valid CRCs");
    let all: Vec<&Record> = sets.iter().flat_map(|s| &s.records).collect();
    assert_eq!(all.len(), 5);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, 10 + i as i64);
        assert_eq!(r.timestamp_type, TimestampType::LogAppend);
        assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
        assert_eq!(
            r.headers.get(&StrBytes::from_static_str("ce_id")),
            Some(&Some(Bytes::from(format!("e{i}"))))
        );
    }
}
