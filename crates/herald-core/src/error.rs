//! Errors of the core layer: a validation error always names the offending field.

use thiserror::Error;

/// A publish-time validation failure. `field` is the CloudEvents attribute (or
/// request part) at fault, so clients can point at it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid `{field}`: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Failure decoding the stored binary form of an event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("unexpected end of input at byte {offset}: need {need} more bytes, have {have}")]
    UnexpectedEof {
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("unknown event encoding version {0}")]
    UnknownVersion(u8),
    #[error("invalid tag {tag} for {what} at byte {offset}")]
    InvalidTag {
        what: &'static str,
        tag: u8,
        offset: usize,
    },
    #[error("invalid UTF-8 in {what} at byte {offset}")]
    InvalidUtf8 { what: &'static str, offset: usize },
    #[error("{0} trailing bytes after event")]
    TrailingBytes(usize),
}
