//! Kafka records ↔ Herald events, per the CloudEvents Kafka protocol binding (binary
//! content mode), and the record-batch checks around `kafka-protocol`'s batch codec.
//!
//! Produce (Kafka record → [`CloudEvent`]):
//! - `ce_id`, `ce_source`, `ce_type`, `ce_specversion`, `ce_subject`, `ce_time`,
//!   `ce_dataschema` → the attributes; any other `ce_<name>` (name of 1–64 lower-case
//!   letters or digits, UTF-8 value without control characters) → an extension.
//! - `content-type` → `datacontenttype`.
//! - the Kafka key → the log record key (raw bytes) and, when it is non-empty text, the
//!   `partitionkey` extension (unless `ce_partitionkey` is given).
//! - the value → `data`, bytes kept exactly: `Data::Json(text)` when the content type is
//!   JSON and the bytes are valid UTF-8 JSON, `Data::Binary` otherwise; a null value is
//!   no data.
//! - every other header (and any `ce_` header that can not be an attribute) is kept, in
//!   order, in the reserved extension [`EXT_KAFKA_HEADERS`]: a JSON array of
//!   `{"name": .., "value": ..}` objects (`value_base64` for bytes that are not
//!   control-free UTF-8, no value for a null header, `name_base64` likewise for names).
//! - a record with no `ce_` attribute is a plain Kafka record: it gets `id` = a new UUID,
//!   `source` = `/kafka/<client id>` (or `/kafka/<topic>`), `type` = [`GENERATED_TYPE`],
//!   `specversion` 1.0 and `time` = the producer timestamp. A record with some `ce_`
//!   attributes gets only the missing required ones generated.
//!
//! - W3C `traceparent` / `tracestate` headers (when valid and no `ce_traceparent` is
//!   given) → the distributed-tracing extensions of the same names; invalid ones are
//!   kept like any other header.
//!
//! Fetch ([`EventRecord`] → Kafka record): the key is the log key, the value the data
//! bytes, the headers are the kept headers first, then `ce_*` for every attribute and
//! extension, `content-type`, and plain `traceparent` / `tracestate` when the event has
//! them; the timestamp is the append time (LogAppendTime).
//!
//! Limitation: `kafka-protocol` keeps a record's headers in a map, so a header name
//! repeated within one record keeps its first position and its last value.
//!
//! Batch checks: before `kafka-protocol` decodes a produced batch, its header is checked
//! against the bytes present, its records section is decompressed under a byte limit and
//! walked once, so no count read from the wire can make the decoder reserve more memory
//! than the bytes that back it.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes, BytesMut};
use herald_broker::EventRecord;
use herald_core::event::{is_json_media_type, EXT_PARTITION_KEY};
use herald_core::trace::{validate_tracestate, TraceParent, EXT_TRACEPARENT, EXT_TRACESTATE};
use herald_core::{CloudEvent, Data, ExtensionValue, ValidationError};
use indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use kafka_protocol::ResponseError;
use serde_json::{json, Value};
use thiserror::Error;

use crate::compression::{decompress, DecompressError};
use crate::error::EncodeError;

/// Extension holding a record's non-CloudEvents headers (see the module docs).
pub const EXT_KAFKA_HEADERS: &str = "kafkaheaders";
/// The header carrying `datacontenttype`.
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// Prefix of CloudEvents attribute headers.
pub const CE_PREFIX: &str = "ce_";
/// `type` of an event made from a plain Kafka record.
pub const GENERATED_TYPE: &str = "kafka.record";
/// Bytes of a v2 record batch header (base offset through record count).
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes of the batch header counted in its length field (all but base offset and length).
const BATCH_LENGTH_OVERHEAD: usize = BATCH_HEADER_BYTES - 12;
/// Smallest encoded record: length, attributes, timestamp, offset, key, value, header
/// count, one byte each.
pub const RECORD_BYTES_MIN: usize = 7;

/// One produced batch, checked and decoded.
#[derive(Debug, Clone)]
pub struct ProducedBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
    pub records: Vec<Record>,
}

impl ProducedBatch {
    /// Sequence number of the batch's last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        let count = i32::try_from(self.records.len()).unwrap_or(i32::MAX);
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = i64::from(self.base_sequence) + i64::from(count) - 1;
        i32::try_from(last % (i64::from(i32::MAX) + 1)).unwrap_or(0)
    }
}

/// Why a produced records section was refused.
#[derive(Debug, Error)]
pub enum RecordsError {
    #[error("record batch is corrupt: {0}")]
    Corrupt(String),
    #[error("record batch format v{0} is not supported (only v2 batches, Kafka 0.11+)")]
    UnsupportedMagic(i8),
    #[error(transparent)]
    Decompress(#[from] DecompressError),
}

impl RecordsError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            RecordsError::Corrupt(_) => ResponseError::CorruptMessage.code(),
            RecordsError::UnsupportedMagic(_) => ResponseError::UnsupportedForMessageFormat.code(),
            RecordsError::Decompress(DecompressError::TooLarge { .. }) => {
                ResponseError::RecordListTooLarge.code()
            }
            RecordsError::Decompress(DecompressError::Corrupt { .. }) => {
                ResponseError::CorruptMessage.code()
            }
        }
    }
}

/// The fixed fields of a v2 batch header that the checks need.
struct BatchHeader {
    length: usize,
    compression: Compression,
    transactional: bool,
    control: bool,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    record_count: usize,
}

fn be<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

fn parse_batch_header(bytes: &[u8]) -> Result<BatchHeader, RecordsError> {
    let short = || {
        RecordsError::Corrupt(format!(
            "{} bytes is too short for a batch header",
            bytes.len()
        ))
    };
    let magic = *bytes.get(16).ok_or_else(short)? as i8;
    if magic != 2 {
        return Err(RecordsError::UnsupportedMagic(magic));
    }
    let field_i32 = |at| be::<4>(bytes, at).map(i32::from_be_bytes).ok_or_else(short);
    let length = field_i32(8)?;
    let length = usize::try_from(length)
        .ok()
        .filter(|l| *l >= BATCH_LENGTH_OVERHEAD)
        .ok_or_else(|| RecordsError::Corrupt(format!("batch length {length} is invalid")))?;
    if bytes.len() < 12 + length {
        return Err(RecordsError::Corrupt(format!(
            "batch length {length} runs past the {} bytes sent",
            bytes.len()
        )));
    }
    let attributes = be::<2>(bytes, 21)
        .map(i16::from_be_bytes)
        .ok_or_else(short)?;
    let compression = match attributes & 0x7 {
        0 => Compression::None,
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        other => {
            return Err(RecordsError::Corrupt(format!(
                "unknown compression {other}"
            )))
        }
    };
    let record_count = field_i32(57)?;
    let record_count = usize::try_from(record_count)
        .map_err(|_| RecordsError::Corrupt(format!("record count {record_count} is negative")))?;
    Ok(BatchHeader {
        length,
        compression,
        transactional: attributes & (1 << 4) != 0,
        control: attributes & (1 << 5) != 0,
        producer_id: be::<8>(bytes, 43)
            .map(i64::from_be_bytes)
            .ok_or_else(short)?,
        producer_epoch: be::<2>(bytes, 51)
            .map(i16::from_be_bytes)
            .ok_or_else(short)?,
        base_sequence: field_i32(53)?,
        record_count,
    })
}

/// Checks and decodes every batch of a produced records section. `decompressed_bytes_max`
/// bounds the records of one batch after decompression.
pub fn decode_batches(
    records: &Bytes,
    decompressed_bytes_max: usize,
) -> Result<Vec<ProducedBatch>, RecordsError> {
    let mut rest = records.clone();
    let mut batches = Vec::new();
    while !rest.is_empty() {
        let header = parse_batch_header(&rest)?;
        let mut batch = rest.split_to(12 + header.length);
        let record_count = header.record_count;
        let compression = header.compression;
        let decoded = RecordBatchDecoder::decode_with_custom_compression(
            &mut batch,
            Some(|section: &mut Bytes, _: Compression| {
                let plain = decompress(compression, section, decompressed_bytes_max)
                    .map_err(RecordsError::from)?;
                check_records(&plain, record_count).map_err(RecordsError::Corrupt)?;
                Ok(plain)
            }),
        );
        let set = decoded.map_err(|e| match e.downcast::<RecordsError>() {
            Ok(typed) => typed,
            Err(other) => RecordsError::Corrupt(other.to_string()),
        })?;
        batches.push(ProducedBatch {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
            transactional: header.transactional,
            control: header.control,
            records: set.records,
        });
    }
    Ok(batches)
}

/// Walks a plain records section exactly as the `kafka-protocol` decoder will read it,
/// checking every length and count against the bytes that are really there.
fn check_records(mut section: &[u8], record_count: usize) -> Result<(), String> {
    if record_count > section.len() / RECORD_BYTES_MIN {
        return Err(format!(
            "{record_count} records can not fit in {} bytes",
            section.len()
        ));
    }
    for index in 0..record_count {
        let length = read_varint(&mut section)?;
        let length =
            usize::try_from(length).map_err(|_| format!("record {index}: negative length"))?;
        let body = section
            .get(..length)
            .ok_or_else(|| format!("record {index}: length {length} runs past the batch"))?;
        section = section.get(length..).unwrap_or_default();
        check_record_body(body).map_err(|e| format!("record {index}: {e}"))?;
    }
    if !section.is_empty() {
        return Err(format!("{} bytes follow the last record", section.len()));
    }
    Ok(())
}

fn check_record_body(mut body: &[u8]) -> Result<(), String> {
    take(&mut body, 1)?; // attributes
    read_varlong(&mut body)?; // timestamp delta
    read_varint(&mut body)?; // offset delta
    skip_nullable(&mut body, "key")?;
    skip_nullable(&mut body, "value")?;
    let count = read_varint(&mut body)?;
    let count = usize::try_from(count).map_err(|_| "negative header count".to_string())?;
    if count > body.len() / 2 {
        return Err(format!(
            "{count} headers can not fit in {} bytes",
            body.len()
        ));
    }
    for _ in 0..count {
        let name_length = read_varint(&mut body)?;
        let name_length =
            usize::try_from(name_length).map_err(|_| "negative header name length".to_string())?;
        take(&mut body, name_length)?;
        skip_nullable(&mut body, "header value")?;
    }
    if !body.is_empty() {
        return Err(format!("{} bytes past the record's fields", body.len()));
    }
    Ok(())
}

fn take<'a>(buf: &mut &'a [u8], count: usize) -> Result<&'a [u8], String> {
    let taken = buf
        .get(..count)
        .ok_or_else(|| format!("needs {count} bytes, {} left", buf.len()))?;
    *buf = buf.get(count..).unwrap_or_default();
    Ok(taken)
}

fn skip_nullable(buf: &mut &[u8], what: &str) -> Result<(), String> {
    match read_varint(buf)? {
        -1 => Ok(()),
        length if length >= 0 => take(buf, length as usize).map(|_| ()),
        length => Err(format!("{what} length {length} is invalid")),
    }
}

/// Zig-zag varint, read the way `kafka-protocol` reads it (at most 5 bytes).
fn read_varint(buf: &mut &[u8]) -> Result<i32, String> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = u32::from(*take(buf, 1)?.first().unwrap_or(&0));
        value |= (b & 0x7f).wrapping_shl(i * 7);
        if b < 0x80 {
            break;
        }
    }
    Ok(((value >> 1) as i32) ^ -((value & 1) as i32))
}

/// Zig-zag varlong, read the way `kafka-protocol` reads it (at most 10 bytes).
fn read_varlong(buf: &mut &[u8]) -> Result<i64, String> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let b = u64::from(*take(buf, 1)?.first().unwrap_or(&0));
        value |= (b & 0x7f).wrapping_shl(i * 7);
        if b < 0x80 {
            break;
        }
    }
    Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
}

// ---- record → event ----

/// Attributes a `ce_` header may set directly (everything else is an extension).
const CORE_ATTRIBUTES: &[&str] = &[
    "id",
    "source",
    "type",
    "specversion",
    "subject",
    "time",
    "dataschema",
];
/// Names that never become attributes from a `ce_` header.
const NOT_ATTRIBUTES: &[&str] = &["data", "datacontenttype", EXT_KAFKA_HEADERS];

/// Whether `name` is a CloudEvents attribute name (1–64 lower-case letters or digits).
fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= herald_core::event::EXTENSION_NAME_LENGTH_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn control_free_text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.chars().any(char::is_control))
}

/// Builds the event for one produced record. `source` is used when the record carries no
/// `ce_source`. Errors name the attribute at fault (→ `INVALID_RECORD`).
pub fn record_to_event(record: &Record, source: &str) -> Result<CloudEvent, ValidationError> {
    let mut core: BTreeMap<&str, String> = BTreeMap::new();
    let mut extensions = BTreeMap::new();
    let mut content_type = None;
    let mut kept: Vec<Value> = Vec::new();
    let (mut traceparent, mut tracestate) = (None, None);
    for (name, value) in &record.headers {
        let name: &str = name;
        if let Some(attribute) = name.strip_prefix(CE_PREFIX) {
            let text = value.as_deref().and_then(control_free_text);
            let is_core = CORE_ATTRIBUTES.contains(&attribute);
            if is_attribute_name(attribute) && !NOT_ATTRIBUTES.contains(&attribute) {
                if is_core {
                    let Some(text) = value.as_deref().and_then(|v| std::str::from_utf8(v).ok())
                    else {
                        return Err(ValidationError::new(
                            attribute,
                            "header value must be UTF-8 text",
                        ));
                    };
                    core.insert(attribute, text.to_string());
                    continue;
                }
                if let Some(text) = text {
                    extensions.insert(
                        attribute.to_string(),
                        ExtensionValue::String(text.to_string()),
                    );
                    continue;
                }
            }
        } else if let Some(slot) = trace_slot(name, &mut traceparent, &mut tracestate) {
            if slot.is_none() {
                if let Some(text) = value.as_deref().and_then(control_free_text) {
                    if valid_trace_header(name, text) {
                        *slot = Some(text.to_string());
                        continue;
                    }
                }
            }
        } else if name == HEADER_CONTENT_TYPE && content_type.is_none() {
            if let Some(text) = value.as_deref().and_then(control_free_text) {
                if is_media_type(text) {
                    content_type = Some(text.to_string());
                    continue;
                }
            }
        }
        kept.push(kept_header(name, value.as_ref()));
    }
    let plain = core.is_empty() && extensions.is_empty();
    let mut event = CloudEvent::new(
        core.remove("id")
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        core.remove("source").unwrap_or_else(|| source.to_string()),
        core.remove("type")
            .unwrap_or_else(|| GENERATED_TYPE.to_string()),
    );
    if let Some(v) = core.remove("specversion") {
        event.specversion = v;
    }
    event.subject = core.remove("subject");
    event.time = core.remove("time");
    event.dataschema = core.remove("dataschema");
    if plain && record.timestamp >= 0 {
        event.time = chrono::DateTime::from_timestamp_millis(record.timestamp)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    event.extensions = extensions;
    // W3C headers fill the distributed-tracing extension unless `ce_traceparent` set it.
    if let (false, Some(parent)) = (event.extensions.contains_key(EXT_TRACEPARENT), traceparent) {
        event
            .extensions
            .insert(EXT_TRACEPARENT.into(), ExtensionValue::String(parent));
        if let Some(state) = tracestate {
            event
                .extensions
                .insert(EXT_TRACESTATE.into(), ExtensionValue::String(state));
        }
    }
    if !event.extensions.contains_key(EXT_PARTITION_KEY) {
        if let Some(key) = record
            .key
            .as_deref()
            .and_then(control_free_text)
            .filter(|k| !k.is_empty())
        {
            event.extensions.insert(
                EXT_PARTITION_KEY.to_string(),
                ExtensionValue::String(key.to_string()),
            );
        }
    }
    if !kept.is_empty() {
        event.extensions.insert(
            EXT_KAFKA_HEADERS.to_string(),
            ExtensionValue::String(Value::Array(kept).to_string()),
        );
    }
    event.data = record
        .value
        .as_ref()
        .map(|value| data_of(value, content_type.as_deref()));
    event.datacontenttype = content_type;
    event.validate()?;
    Ok(event)
}

/// The slot a W3C trace header (`traceparent`, `tracestate`) fills, `None` for others.
fn trace_slot<'a>(
    name: &str,
    traceparent: &'a mut Option<String>,
    tracestate: &'a mut Option<String>,
) -> Option<&'a mut Option<String>> {
    match name {
        EXT_TRACEPARENT => Some(traceparent),
        EXT_TRACESTATE => Some(tracestate),
        _ => None,
    }
}

/// A trace header that does not validate is kept as an ordinary header, not refused:
/// tracing must never make a produce fail.
fn valid_trace_header(name: &str, text: &str) -> bool {
    if name == EXT_TRACEPARENT {
        TraceParent::parse(text).is_ok()
    } else {
        validate_tracestate(text).is_ok()
    }
}

fn is_media_type(text: &str) -> bool {
    let essence = text.split(';').next().unwrap_or("").trim();
    let mut parts = essence.split('/');
    matches!((parts.next(), parts.next(), parts.next()),
        (Some(t), Some(s), None) if !t.is_empty() && !s.is_empty() && !essence.contains(char::is_whitespace))
}

fn data_of(value: &Bytes, content_type: Option<&str>) -> Data {
    if content_type.is_some_and(is_json_media_type) {
        if let Ok(text) = std::str::from_utf8(value) {
            if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                return Data::Json(text.to_string());
            }
        }
    }
    Data::Binary(value.clone())
}

fn kept_header(name: &str, value: Option<&Bytes>) -> Value {
    let mut object = serde_json::Map::new();
    match control_free_text(name.as_bytes()) {
        Some(text) => object.insert("name".into(), json!(text)),
        None => object.insert(
            "name_base64".into(),
            json!(herald_core::event::base64_encode(name.as_bytes())),
        ),
    };
    match value {
        None => {}
        Some(v) => match control_free_text(v) {
            Some(text) => {
                object.insert("value".into(), json!(text));
            }
            None => {
                object.insert(
                    "value_base64".into(),
                    json!(herald_core::event::base64_encode(v)),
                );
            }
        },
    }
    Value::Object(object)
}

/// Parses the [`EXT_KAFKA_HEADERS`] extension back into headers (skipping anything that
/// does not have the documented shape).
pub fn kept_headers(event: &CloudEvent) -> Vec<(String, Option<Bytes>)> {
    let Some(ExtensionValue::String(text)) = event.extensions.get(EXT_KAFKA_HEADERS) else {
        return Vec::new();
    };
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let text_or_base64 = |object: &serde_json::Map<String, Value>, plain: &str, encoded: &str| {
        if let Some(Value::String(s)) = object.get(plain) {
            return Some(s.clone().into_bytes());
        }
        match object.get(encoded) {
            Some(Value::String(s)) => herald_core::event::base64_decode(s).ok(),
            _ => None,
        }
    };
    items
        .iter()
        .filter_map(|item| {
            let object = item.as_object()?;
            let name = String::from_utf8(text_or_base64(object, "name", "name_base64")?).ok()?;
            let value = text_or_base64(object, "value", "value_base64").map(Bytes::from);
            Some((name, value))
        })
        .collect()
}

// ---- event → record ----

/// The Kafka value and headers of a stored event.
pub fn event_to_record(event: &CloudEvent) -> (Option<Bytes>, IndexMap<StrBytes, Option<Bytes>>) {
    let mut headers = IndexMap::new();
    for (name, value) in kept_headers(event) {
        headers.insert(StrBytes::from_string(name), value);
    }
    // A kept header wins over an attribute of the same header name, so a consumer gets
    // back exactly what was produced (the attribute is still there over HTTP).
    let kept_count = headers.len();
    let mut put = |name: &str, value: &str| {
        let name = StrBytes::from_string(format!("{CE_PREFIX}{name}"));
        if headers.get_index_of(&name).is_none_or(|i| i >= kept_count) {
            headers.insert(name, Some(Bytes::copy_from_slice(value.as_bytes())));
        }
    };
    put("specversion", &event.specversion);
    put("id", &event.id);
    put("source", &event.source);
    put("type", &event.ty);
    for (name, value) in [
        ("subject", &event.subject),
        ("time", &event.time),
        ("dataschema", &event.dataschema),
    ] {
        if let Some(v) = value {
            put(name, v);
        }
    }
    for (name, value) in &event.extensions {
        if name != EXT_KAFKA_HEADERS {
            put(name, &value.to_header_string());
        }
    }
    // W3C trace context also as the plain headers tracing instrumentations read.
    for name in [EXT_TRACEPARENT, EXT_TRACESTATE] {
        if let Some(ExtensionValue::String(value)) = event.extensions.get(name) {
            let name = StrBytes::from_static_str(name);
            if headers.get_index_of(&name).is_none_or(|i| i >= kept_count) {
                headers.insert(name, Some(Bytes::copy_from_slice(value.as_bytes())));
            }
        }
    }
    if let Some(ct) = &event.datacontenttype {
        let name = StrBytes::from_static_str(HEADER_CONTENT_TYPE);
        if headers.get_index_of(&name).is_none_or(|i| i >= kept_count) {
            headers.insert(name, Some(Bytes::copy_from_slice(ct.as_bytes())));
        }
    }
    let value = event.data.as_ref().map(|data| match data {
        Data::Json(text) => Bytes::copy_from_slice(text.as_bytes()),
        Data::Binary(bytes) => bytes.clone(),
    });
    (value, headers)
}

/// Encodes fetched events as uncompressed v2 batches, one per run of equal append time,
/// marked LogAppendTime so clients report Herald's append time.
pub fn encode_fetched(events: &[EventRecord], out: &mut BytesMut) -> Result<(), EncodeError> {
    let mut start = 0;
    while let Some(first) = events.get(start) {
        let run = events
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|e| e.timestamp_ms == first.timestamp_ms)
            .count();
        let run_events = events.get(start..start + run).unwrap_or_default();
        encode_run(run_events, out)?;
        start += run;
    }
    Ok(())
}

fn encode_run(events: &[EventRecord], out: &mut BytesMut) -> Result<(), EncodeError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let base = first.offset;
    let records: Vec<Record> = events
        .iter()
        .map(|e| {
            let (value, headers) = event_to_record(&e.event);
            let offset = i64::try_from(e.offset).unwrap_or(i64::MAX);
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::LogAppend,
                offset,
                // Constant `offset - sequence` keeps the run in one batch; base sequence -1.
                sequence: (e.offset.wrapping_sub(base) as i32).wrapping_sub(1),
                timestamp: e.timestamp_ms,
                key: e.key.clone(),
                value,
                headers,
            }
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(EncodeError::encode)?;
    mark_log_append_time(&mut batch)?;
    out.extend_from_slice(&batch);
    Ok(())
}

/// Sets the LogAppendTime bit in every batch of `bytes` and refreshes their CRCs.
fn mark_log_append_time(bytes: &mut BytesMut) -> Result<(), EncodeError> {
    let mut at = 0;
    while at < bytes.len() {
        let length = be::<4>(bytes, at + 8)
            .map(i32::from_be_bytes)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| EncodeError::Encode("encoded batch has no length".into()))?;
        let end = at + 12 + length;
        let batch = bytes
            .get_mut(at..end)
            .ok_or_else(|| EncodeError::Encode("encoded batch is truncated".into()))?;
        if let Some(attributes) = batch.get_mut(22) {
            *attributes |= 1 << 3;
        }
        let crc = crc32c::crc32c(batch.get(21..).unwrap_or_default());
        if let Some(field) = batch.get_mut(17..21) {
            field.copy_from_slice(&crc.to_be_bytes());
        }
        at = end;
    }
    Ok(())
}

/// Skips the records of `bytes` up to the first batch, for tests and diagnostics.
pub fn batch_count(mut bytes: Bytes) -> usize {
    let mut count = 0;
    while bytes.len() >= 12 {
        let Some(length) = be::<4>(&bytes, 8)
            .map(i32::from_be_bytes)
            .and_then(|l| usize::try_from(l).ok())
        else {
            break;
        };
        if bytes.len() < 12 + length {
            break;
        }
        bytes.advance(12 + length);
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests;
