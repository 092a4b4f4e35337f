//! The one place the bus touches the filter language (`herald_core::filter`): content
//! filters, the indexed rule set and NATS-style topic patterns.
//!
//! Owns: [`TopicPattern`] (a validated source pattern that never matches internal
//! topics) and the re-exports the rest of the crate uses, so an API change of the
//! filter module is absorbed here.
//! Invariant: internal topics (names starting with `__`) never match a pattern, so a
//! subscription can never read its own queue or another subscription's.

use serde::Serialize;

use herald_core::filter::{topic_pattern_matches, validate_topic_pattern};
pub use herald_core::filter::{Explanation, Filter, FilterError, FilterIndex};

/// Prefix of topics the bus owns (subscription queues). Patterns never match them.
pub const INTERNAL_TOPIC_PREFIX: &str = "__";

/// A validated source topic pattern: an exact name, or tokens separated by `.` where
/// `*` matches one token and a final `>` matches one or more tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TopicPattern(String);

impl TopicPattern {
    /// Checks the pattern's syntax; the message says what is wrong.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.starts_with(INTERNAL_TOPIC_PREFIX) {
            return Err(format!(
                "topics starting with `{INTERNAL_TOPIC_PREFIX}` are internal and cannot be subscribed to"
            ));
        }
        validate_topic_pattern(pattern).map_err(|e| e.message)?;
        Ok(Self(pattern.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if the pattern has no wildcard (names one topic).
    pub fn is_exact(&self) -> bool {
        !self.0.split('.').any(|t| t == "*" || t == ">")
    }

    /// Whether `topic` matches. Internal topics never do.
    pub fn matches(&self, topic: &str) -> bool {
        !topic.starts_with(INTERNAL_TOPIC_PREFIX) && topic_pattern_matches(&self.0, topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_nats_semantics() {
        let p = |s: &str| TopicPattern::parse(s).expect("valid pattern");
        assert!(p("orders").matches("orders"));
        assert!(!p("orders").matches("orders.eu"));
        assert!(p("orders.*").matches("orders.eu"));
        assert!(!p("orders.*").matches("orders"));
        assert!(!p("orders.*").matches("orders.eu.paris"));
        assert!(p("orders.>").matches("orders.eu.paris"));
        assert!(p("orders.>").matches("orders.eu"));
        assert!(!p("orders.>").matches("orders"));
        assert!(p(">").matches("anything.at.all"));
        assert!(!p(">").matches("__sub.q"));
        assert!(p("*.created").matches("orders.created"));
        assert!(p("orders").is_exact() && !p("orders.*").is_exact());
    }

    #[test]
    fn bad_patterns_are_rejected_with_a_reason() {
        for bad in [
            "",
            "orders..x",
            ".orders",
            "orders.>.x",
            "ord*",
            "a/b",
            "__sub.x",
        ] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
