//! Topic and consumer-group names. Names become directory and file names, so the
//! rule is strict: `[A-Za-z0-9._-]`, 1..=249 bytes, and never `.` or `..`.

use crate::error::ValidationError;

/// Longest accepted name, in bytes (Kafka's limit).
pub const NAME_LENGTH_MAX: usize = 249;

/// Checks a topic, group or stream name. `what` names the field in the error.
pub fn validate_name(what: &str, name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::new(what, "must not be empty"));
    }
    if name.len() > NAME_LENGTH_MAX {
        return Err(ValidationError::new(
            what,
            format!(
                "is {} bytes long; the maximum is {NAME_LENGTH_MAX}",
                name.len()
            ),
        ));
    }
    if name == "." || name == ".." {
        return Err(ValidationError::new(what, "must not be `.` or `..`"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ValidationError::new(
            what,
            format!("contains {bad:?}; only ASCII letters, digits, `.`, `_` and `-` are allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kafka_style_names() {
        for ok in ["orders", "a", "orders.v1", "my_topic-2", &"x".repeat(249)] {
            assert!(validate_name("topic", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_traversal_and_junk() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(250),
        ] {
            let err = validate_name("topic", bad).expect_err(bad);
            assert_eq!(err.field, "topic");
        }
    }
}
