//! Topic wildcards for subscription sources, with NATS semantics.
//!
//! Owns: [`validate_topic_pattern`] and [`topic_pattern_matches`]. Topics are split into
//! `.`-separated tokens; in a pattern, `*` matches exactly one token and `>` (last token
//! only) matches one or more trailing tokens: `orders.*` matches `orders.eu` but not
//! `orders` or `orders.eu.paid`; `orders.>` matches both `orders.eu` and
//! `orders.eu.paid`, not `orders`. A pattern without wildcards matches only the topic
//! spelled the same.
//! Invariant: matching is linear in the number of tokens and never allocates.

use crate::error::ValidationError;
use crate::name::NAME_LENGTH_MAX;

/// Longest topic pattern, in bytes (the topic name limit).
pub const TOPIC_PATTERN_LENGTH_MAX: usize = NAME_LENGTH_MAX;

/// Checks a subscription source pattern: non-empty tokens of `[A-Za-z0-9_-]`, or `*`,
/// or `>` as the last token; at most [`TOPIC_PATTERN_LENGTH_MAX`] bytes. The error's
/// field is `topic_pattern` and its message names the bad token.
pub fn validate_topic_pattern(pattern: &str) -> Result<(), ValidationError> {
    const FIELD: &str = "topic_pattern";
    if pattern.is_empty() {
        return Err(ValidationError::new(FIELD, "must not be empty"));
    }
    if pattern.len() > TOPIC_PATTERN_LENGTH_MAX {
        return Err(ValidationError::new(
            FIELD,
            format!(
                "is {} bytes long; the maximum is {TOPIC_PATTERN_LENGTH_MAX}",
                pattern.len()
            ),
        ));
    }
    let tokens_count = pattern.split('.').count();
    for (index, token) in pattern.split('.').enumerate() {
        let problem = match token {
            "" => Some("is empty (two dots in a row, or a leading or trailing dot)".to_string()),
            "*" => None,
            ">" if index + 1 == tokens_count => None,
            ">" => Some("`>` is only allowed as the last token".to_string()),
            _ => token
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
                .map(|bad| {
                    if matches!(bad, '*' | '>') {
                        format!("mixes `{bad}` with other characters; wildcards must be whole tokens")
                    } else {
                        format!(
                            "contains {bad:?}; only ASCII letters, digits, `_`, `-` and the wildcards `*` and `>` are allowed"
                        )
                    }
                }),
        };
        if let Some(problem) = problem {
            return Err(ValidationError::new(
                FIELD,
                format!("token {index} ({token:?}) {problem}"),
            ));
        }
    }
    Ok(())
}

/// True when `topic` matches `pattern` (NATS semantics, see the module docs). Meant for
/// patterns that passed [`validate_topic_pattern`]; in other patterns, a `>` that is
/// not the last token is an ordinary token.
pub fn topic_pattern_matches(pattern: &str, topic: &str) -> bool {
    let mut pattern_tokens = pattern.split('.').peekable();
    let mut topic_tokens = topic.split('.');
    while let Some(expected) = pattern_tokens.next() {
        let is_last = pattern_tokens.peek().is_none();
        if expected == ">" && is_last {
            return topic_tokens.next().is_some();
        }
        match topic_tokens.next() {
            Some(token) if expected == "*" || expected == token => {}
            _ => return false,
        }
    }
    topic_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_token_wildcard() {
        assert!(topic_pattern_matches("orders.*", "orders.eu"));
        assert!(!topic_pattern_matches("orders.*", "orders"));
        assert!(!topic_pattern_matches("orders.*", "orders.eu.paid"));
        assert!(topic_pattern_matches("*.paid", "orders.paid"));
        assert!(topic_pattern_matches("a.*.c", "a.b.c"));
        assert!(!topic_pattern_matches("a.*.c", "a.b.d"));
        assert!(topic_pattern_matches("*", "orders"));
        assert!(!topic_pattern_matches("*", "orders.eu"));
    }

    #[test]
    fn tail_wildcard() {
        assert!(topic_pattern_matches("orders.>", "orders.eu"));
        assert!(topic_pattern_matches("orders.>", "orders.eu.paid"));
        assert!(!topic_pattern_matches("orders.>", "orders"));
        assert!(!topic_pattern_matches("orders.>", "payments.eu"));
        assert!(topic_pattern_matches(">", "anything.at.all"));
        assert!(topic_pattern_matches("*.>", "a.b"));
        assert!(!topic_pattern_matches("*.>", "a"));
    }

    #[test]
    fn literal_patterns() {
        assert!(topic_pattern_matches("orders", "orders"));
        assert!(!topic_pattern_matches("orders", "orders.eu"));
        assert!(!topic_pattern_matches("orders.eu", "orders"));
        assert!(!topic_pattern_matches("orders", "order"));
        assert!(topic_pattern_matches("orders_v1-x", "orders_v1-x"));
    }

    #[test]
    fn validation() {
        for ok in [
            "orders", "orders.*", "orders.>", "*", ">", "*.*.>", "a-b_c.d",
        ] {
            assert!(validate_topic_pattern(ok).is_ok(), "{ok}");
        }
        for (bad, needle) in [
            ("", "empty"),
            ("orders..eu", "token 1"),
            (".orders", "token 0"),
            ("orders.", "token 1"),
            ("orders.>.eu", "last token"),
            ("ord*", "whole tokens"),
            ("orders.e>", "whole tokens"),
            ("orders/eu", "'/'"),
            ("orders eu", "' '"),
        ] {
            let err = validate_topic_pattern(bad).expect_err(bad);
            assert_eq!(err.field, "topic_pattern");
            assert!(err.message.contains(needle), "{bad}: {}", err.message);
        }
        assert!(validate_topic_pattern(&"a".repeat(TOPIC_PATTERN_LENGTH_MAX + 1)).is_err());
    }
}
