//! Filter compilation errors and the limits a pattern must stay within.
//!
//! Owns: [`FilterError`] (every variant carries the JSON path of the bad part of the
//! pattern) and [`FilterLimits`]. Does not own event validation errors
//! ([`crate::ValidationError`]).

use std::fmt;

/// Why a pattern was rejected. `path` points at the bad part of the pattern, in the
/// form `data.amount[0].numeric` (`.name` for object keys, `[i]` for array
/// elements, `["odd key"]` for keys that are not plain identifiers; empty for the
/// pattern as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterError {
    /// The pattern is malformed at `path`.
    Invalid { path: String, message: String },
    /// The pattern is too large or too deep; `limit` names the [`FilterLimits`] field.
    LimitExceeded {
        path: String,
        limit: &'static str,
        max: usize,
    },
}

impl FilterError {
    pub(crate) fn invalid(path: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_string(),
            message: message.into(),
        }
    }

    /// The JSON path of the bad part of the pattern (empty for the whole pattern).
    pub fn path(&self) -> &str {
        match self {
            Self::Invalid { path, .. } | Self::LimitExceeded { path, .. } => path,
        }
    }

    /// A stable machine-readable code for the API edge.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "filter_invalid",
            Self::LimitExceeded { .. } => "filter_too_large",
        }
    }
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path().is_empty() {
            "pattern"
        } else {
            self.path()
        };
        match self {
            Self::Invalid { message, .. } => write!(f, "{path}: {message}"),
            Self::LimitExceeded { limit, max, .. } => {
                write!(f, "{path}: pattern exceeds {limit} ({max})")
            }
        }
    }
}

impl std::error::Error for FilterError {}

/// Bounds on a pattern, so a hostile pattern cannot blow up memory or matching CPU.
/// Matching cost is at most proportional to `matchers_max` × the number of values in
/// the event, plus wildcard scans bounded by `pattern_bytes_max` × string length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterLimits {
    /// Deepest nesting of pattern objects (the top-level object is depth 1; every
    /// nested object and every `$or` branch adds one).
    pub depth_max: usize,
    /// Most matchers in the whole pattern (each value of an `anything-but` list counts).
    pub matchers_max: usize,
    /// Largest pattern, measured as its approximate compact JSON text size in bytes.
    pub pattern_bytes_max: usize,
}

impl FilterLimits {
    /// Default deepest nesting.
    pub const DEPTH_MAX: usize = 12;
    /// Default number of matchers.
    pub const MATCHERS_MAX: usize = 256;
    /// Default pattern size in bytes.
    pub const PATTERN_BYTES_MAX: usize = 16 * 1024;
}

impl Default for FilterLimits {
    fn default() -> Self {
        Self {
            depth_max: Self::DEPTH_MAX,
            matchers_max: Self::MATCHERS_MAX,
            pattern_bytes_max: Self::PATTERN_BYTES_MAX,
        }
    }
}

/// Appends an object key to a path: `a` + `b` → `a.b`; odd keys are quoted: `a["b.c"]`.
pub(crate) fn field_path(parent: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'));
    if plain {
        if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        }
    } else {
        let quoted = serde_json::Value::String(name.to_string()).to_string();
        format!("{parent}[{quoted}]")
    }
}

/// Appends an array index to a path: `a` + 2 → `a[2]`.
pub(crate) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_odd_keys() {
        assert_eq!(field_path("", "data"), "data");
        assert_eq!(field_path("data", "amount"), "data.amount");
        assert_eq!(field_path("data", "a.b"), "data[\"a.b\"]");
        assert_eq!(field_path("", ""), "[\"\"]");
        assert_eq!(index_path("data.amount", 0), "data.amount[0]");
    }

    #[test]
    fn display_names_the_path() {
        let err = FilterError::invalid("type[0]", "bad");
        assert_eq!(err.to_string(), "type[0]: bad");
        assert_eq!(FilterError::invalid("", "bad").to_string(), "pattern: bad");
    }
}
