//! [`EventRecord`]: a stored event together with its place in the log.

use herald_core::codec::decode_event;
use herald_core::CloudEvent;
use herald_log::StoredRecord;

use crate::error::BrokerError;

/// An event as read back: its topic/partition/offset, append time and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// Append time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The record key: the `partitionkey` for HTTP publishes, raw bytes from Kafka.
    pub key: Option<bytes::Bytes>,
    pub event: CloudEvent,
}

impl EventRecord {
    /// Decodes a log record. A record the codec rejects is reported as corruption.
    pub fn from_stored(
        topic: &str,
        partition: u32,
        stored: StoredRecord,
    ) -> Result<Self, BrokerError> {
        let event = decode_event(&stored.value).map_err(|e| {
            BrokerError::Storage(herald_log::LogError::Corrupt {
                path: format!("{topic}/{partition}").into(),
                position: stored.offset,
                reason: format!("event at offset {} does not decode: {e}", stored.offset),
            })
        })?;
        Ok(Self {
            topic: topic.to_string(),
            partition,
            offset: stored.offset,
            timestamp_ms: stored.timestamp_ms,
            key: stored.key,
            event,
        })
    }

    /// The W3C `traceparent` the event carries (distributed-tracing extension).
    pub fn traceparent(&self) -> Option<&str> {
        self.event.traceparent()
    }

    /// The key as text (lossy for non-UTF-8 keys).
    pub fn key_string(&self) -> Option<String> {
        self.key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// The JSON shape used by the HTTP API, SSE and the CLI.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": format_time_ms(self.timestamp_ms),
            "key": self.key_string(),
            "event": self.event.to_json_value(),
        })
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn format_time_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
