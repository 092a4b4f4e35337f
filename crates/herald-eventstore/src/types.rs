//! The values that cross the event store's API: expected versions, recorded events,
//! stream descriptions, metadata, snapshots and subscription targets.
//!
//! Owns: their JSON forms (the HTTP API and the SDK share them) and their parsing.
//! Invariant: versions are 0-based and dense per stream; positions are `$all`
//! positions (offsets of the store's log), strictly increasing in append order.

use herald_core::CloudEvent;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::EventStoreError;

/// What the writer believes about a stream before appending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist (never written, or soft-deleted with no event since).
    NoStream,
    /// The stream must exist (hold at least one event since its last soft delete).
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Parses `any`, `no_stream`, `stream_exists` (or `exists`) or a non-negative integer.
    pub fn parse(text: &str) -> Result<Self, EventStoreError> {
        match text.trim() {
            "any" => Ok(Self::Any),
            "no_stream" => Ok(Self::NoStream),
            "stream_exists" | "exists" => Ok(Self::StreamExists),
            other => other.parse::<u64>().map(Self::Exact).map_err(|_| {
                EventStoreError::invalid(
                    "expected_version",
                    format!(
                        "must be `any`, `no_stream`, `stream_exists` or a non-negative integer, got {other:?}"
                    ),
                )
            }),
        }
    }

    /// Parses the JSON form: one of the strings of [`ExpectedVersion::parse`] or an integer.
    pub fn from_json(value: &Value) -> Result<Self, EventStoreError> {
        match value {
            Value::String(s) => Self::parse(s),
            Value::Number(n) => n.as_u64().map(Self::Exact).ok_or_else(|| {
                EventStoreError::invalid(
                    "expected_version",
                    format!("must be a non-negative integer, got {n}"),
                )
            }),
            other => Err(EventStoreError::invalid(
                "expected_version",
                format!("must be `any`, `no_stream`, `stream_exists` or an integer, got {other}"),
            )),
        }
    }

    pub fn to_json(self) -> Value {
        match self {
            Self::Any => json!("any"),
            Self::NoStream => json!("no_stream"),
            Self::StreamExists => json!("stream_exists"),
            Self::Exact(n) => json!(n),
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no_stream"),
            Self::StreamExists => f.write_str("stream_exists"),
            Self::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// The receipt of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// The version of the last event written: pass it as `Exact` for the next append.
    pub next_expected_version: u64,
    /// The `$all` position of the last event written.
    pub position: u64,
}

/// One stored event with where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub stream: String,
    /// 0-based version within the stream.
    pub version: u64,
    /// Position in `$all`.
    pub position: u64,
    /// When the store appended it (ms since the Unix epoch).
    pub recorded_at_ms: i64,
    pub event: CloudEvent,
}

impl RecordedEvent {
    /// `{"stream", "version", "position", "recorded_at_ms", "event": CloudEvent JSON}`.
    pub fn to_json(&self) -> Value {
        json!({
            "stream": self.stream,
            "version": self.version,
            "position": self.position,
            "recorded_at_ms": self.recorded_at_ms,
            "event": self.event.to_json_value(),
        })
    }

    /// Parses the form written by [`RecordedEvent::to_json`].
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let field = |name: &str| {
            value
                .get(name)
                .ok_or_else(|| format!("recorded event without `{name}`: {value}"))
        };
        let stream = field("stream")?
            .as_str()
            .ok_or("`stream` is not a string")?
            .to_string();
        let version = field("version")?
            .as_u64()
            .ok_or("`version` is not an unsigned integer")?;
        let position = field("position")?
            .as_u64()
            .ok_or("`position` is not an unsigned integer")?;
        let recorded_at_ms = field("recorded_at_ms")?
            .as_i64()
            .ok_or("`recorded_at_ms` is not an integer")?;
        let event = CloudEvent::from_json_value(field("event")?.clone())
            .map_err(|e| format!("bad `event`: {e}"))?;
        Ok(Self {
            stream,
            version,
            position,
            recorded_at_ms,
            event,
        })
    }
}

/// Read order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Forwards,
    Backwards,
}

impl Direction {
    pub fn parse(text: &str) -> Result<Self, EventStoreError> {
        match text {
            "forwards" | "forward" => Ok(Self::Forwards),
            "backwards" | "backward" => Ok(Self::Backwards),
            other => Err(EventStoreError::invalid(
                "direction",
                format!("must be `forwards` or `backwards`, got {other:?}"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forwards => "forwards",
            Self::Backwards => "backwards",
        }
    }
}

/// What a catch-up subscription follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionTarget {
    /// One stream's events.
    Stream(String),
    /// Every event, in `$all` order.
    All,
    /// Every stream named `<category>-...`: `Category("order")` (or `"order-*"`)
    /// follows `order-1`, `order-2`, ...
    Category(String),
}

impl SubscriptionTarget {
    /// The stream-name prefix a category covers: `order` and `order-*` give `order-`.
    pub fn category_prefix(category: &str) -> String {
        let base = category.strip_suffix('*').unwrap_or(category);
        if base.ends_with('-') {
            base.to_string()
        } else {
            format!("{base}-")
        }
    }

    /// Parses the name form: `$all`, a category ending in `*` (`order-*`), or a stream.
    pub fn from_name(text: &str) -> Result<Self, EventStoreError> {
        if text == crate::store::ALL_STREAM {
            return Ok(Self::All);
        }
        if text.ends_with('*') {
            let prefix = Self::category_prefix(text);
            herald_core::name::validate_name("category", prefix.trim_end_matches('-'))?;
            return Ok(Self::Category(text.to_string()));
        }
        crate::store::validate_stream_name(text)?;
        Ok(Self::Stream(text.to_string()))
    }

    /// The name form [`SubscriptionTarget::from_name`] parses (`order-*` for a category).
    pub fn name(&self) -> String {
        match self {
            Self::All => crate::store::ALL_STREAM.to_string(),
            Self::Category(c) => format!("{}*", Self::category_prefix(c)),
            Self::Stream(s) => s.clone(),
        }
    }

    /// Whether an event of `stream` belongs to this target.
    pub fn matches(&self, stream: &str) -> bool {
        match self {
            Self::All => true,
            Self::Category(c) => stream.starts_with(&Self::category_prefix(c)),
            Self::Stream(s) => s == stream,
        }
    }
}

/// The latest snapshot of a stream's aggregate state, taken at `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub stream: String,
    /// The version of the last event folded into `data`.
    pub version: u64,
    pub data: Value,
}

/// A stream as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub stream: String,
    /// Version of the stream's last event.
    pub last_version: u64,
    /// `$all` position of the stream's last event.
    pub last_position: u64,
}

/// Per-stream settings. Reads hide events they exclude; the events stay in `$all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMetadata {
    /// Hide events recorded more than this many milliseconds ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Keep only the newest this-many events visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
}

/// A stream's metadata and lifecycle state, as `GET .../metadata` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDescription {
    pub stream: String,
    pub metadata: StreamMetadata,
    /// Version of the last event ever written (also across soft deletes), if any.
    pub last_version: Option<u64>,
    /// Versions below this are hidden by a soft delete.
    pub deleted_before: u64,
    /// Soft-deleted with no event since.
    pub deleted: bool,
    /// Hard-deleted: no further appends.
    pub tombstoned: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_parses_every_form() {
        assert_eq!(
            ExpectedVersion::parse("any").ok(),
            Some(ExpectedVersion::Any)
        );
        assert_eq!(
            ExpectedVersion::parse("no_stream").ok(),
            Some(ExpectedVersion::NoStream)
        );
        assert_eq!(
            ExpectedVersion::parse("exists").ok(),
            Some(ExpectedVersion::StreamExists)
        );
        assert_eq!(
            ExpectedVersion::from_json(&json!(7)).ok(),
            Some(ExpectedVersion::Exact(7))
        );
        for bad in [json!(-1), json!(1.5), json!("soon"), json!(null), json!([])] {
            assert!(ExpectedVersion::from_json(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn category_prefixes() {
        assert_eq!(SubscriptionTarget::category_prefix("order"), "order-");
        assert_eq!(SubscriptionTarget::category_prefix("order-*"), "order-");
        assert_eq!(SubscriptionTarget::category_prefix("order-"), "order-");
    }

    #[test]
    fn target_names_round_trip() {
        for name in ["$all", "order-*", "order-1"] {
            let target = SubscriptionTarget::from_name(name).expect(name);
            assert_eq!(target.name(), name);
        }
        assert_eq!(
            SubscriptionTarget::from_name("order-*").ok(),
            Some(SubscriptionTarget::Category("order-*".into()))
        );
        assert!(SubscriptionTarget::from_name("bad name").is_err());
        assert!(SubscriptionTarget::from_name("*").is_err());
        assert!(SubscriptionTarget::from_name("").is_err());
    }
}
