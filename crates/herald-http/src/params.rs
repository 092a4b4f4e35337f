//! Query-string parsing with errors that name the parameter (axum's own `Query`
//! rejection is plain text and vague).

use std::collections::HashMap;
use std::time::Duration;

use herald_broker::SeekPosition;

use crate::error::ApiError;

pub type QueryMap = HashMap<String, String>;

/// An optional unsigned integer parameter.
pub fn opt_u64(query: &QueryMap, name: &str) -> Result<Option<u64>, ApiError> {
    match query.get(name) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            ApiError::invalid(name, format!("must be a non-negative integer, got {v:?}"))
        }),
    }
}

pub fn opt_u32(query: &QueryMap, name: &str) -> Result<Option<u32>, ApiError> {
    match opt_u64(query, name)? {
        None => Ok(None),
        Some(v) => u32::try_from(v)
            .map(Some)
            .map_err(|_| ApiError::invalid(name, "is too large")),
    }
}

/// `wait_ms` as a duration (default 0).
pub fn wait(query: &QueryMap) -> Result<Duration, ApiError> {
    Ok(Duration::from_millis(
        opt_u64(query, "wait_ms")?.unwrap_or(0),
    ))
}

/// Parses an RFC 3339 time into ms since the epoch.
pub fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::invalid(name, format!("must be an RFC 3339 time: {e}")))
}

/// `offset=N|earliest|latest` or `from_time=RFC3339`, with `default` when neither is given.
pub fn seek(query: &QueryMap, default: SeekPosition) -> Result<SeekPosition, ApiError> {
    match (query.get("offset"), query.get("from_time")) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "from_time",
            "give `offset` or `from_time`, not both",
        )),
        (None, Some(t)) => Ok(SeekPosition::Time(parse_time("from_time", t)?)),
        (Some(o), None) => match o.as_str() {
            "earliest" | "beginning" => Ok(SeekPosition::Earliest),
            "latest" | "end" => Ok(SeekPosition::Latest),
            n => n.parse::<u64>().map(SeekPosition::Offset).map_err(|_| {
                ApiError::invalid(
                    "offset",
                    format!("must be a non-negative integer, `earliest` or `latest`, got {n:?}"),
                )
            }),
        },
        (None, None) => Ok(default),
    }
}
