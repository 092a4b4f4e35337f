//! Content filters: EventBridge-style event patterns over CloudEvents, a rule index for
//! the dispatcher, and NATS-style topic wildcards for subscription sources.
//!
//! Owns: the pattern language (syntax, semantics, limits), compiled [`Filter`]s, their
//! [`Explanation`]s, the [`FilterIndex`] rule set and [`topic_pattern_matches`].
//! Does not own subscriptions, their storage or delivery (the broker does), nor event
//! validation ([`crate::event`]).
//! Invariants: a [`Filter`] exists only if its pattern compiled within [`FilterLimits`];
//! [`FilterIndex::matching`] returns exactly the rules whose [`Filter::matches`] is true
//! (the index only narrows candidates, every candidate is re-checked); matching is pure
//! and never panics.
//!
//! # The event, as patterns see it
//!
//! A pattern is matched against the event viewed as a JSON object: the attributes `id`,
//! `source`, `type`, `specversion`, `subject`, `time`, `datacontenttype`, `dataschema`
//! (all strings; optional ones are absent when unset), every extension (string, boolean
//! or integer) and `data` when the payload is JSON (absent for binary payloads). Nested
//! objects in `data` are addressed by nesting objects in the pattern:
//! `{"data": {"customer": {"tier": ["gold"]}}}`.
//!
//! # Pattern syntax
//!
//! A pattern is a JSON object. Each key is a field name; its value is either a nested
//! pattern object or a non-empty array of matchers (any-of). The special key `"$or"`
//! takes a non-empty array of pattern objects. Everything else is rejected with a
//! [`FilterError`] whose path points at the bad part (`data.amount[0].numeric`).
//! An empty top-level pattern `{}` matches every event; nested objects must not be empty.
//!
//! | Matcher | Matches an event value v when |
//! |---|---|
//! | `"s"` / `5` / `true` / `null` | v equals it: strings byte for byte, numbers as f64 (`5` = `5.0`), no cross-type equality (`"5"` ≠ `5`, `""` ≠ `null`) |
//! | `{"prefix": "p"}` / `{"suffix": "s"}` | v is a string starting / ending with it |
//! | `{"prefix": {"equals-ignore-case": "p"}}` (also `suffix`) | the same, on case-folded text |
//! | `{"equals-ignore-case": "s"}` | v is a string equal to it after case folding |
//! | `{"wildcard": "order.*.created"}` | v is a string matching the glob: `*` = any run of characters (also `.` and none); `\*` and `\\` escape; `**` is rejected |
//! | `{"numeric": [">", 0, "<=", 5]}` | v is a JSON number in range; operators `=` `!=` `<` `<=` `>` `>=`; one comparison, or a lower and an upper bound in either order; compared as f64 (strings such as `"5"` never match) |
//! | `{"exists": true}` | the field has at least one value (any type, `null` and objects included) |
//! | `{"exists": false}` | the field has no value: missing, or an empty array |
//! | `{"anything-but": x}` or `{"anything-but": [x, y]}` | v is a scalar (string, number, boolean or `null`, not an object) equal to none of the listed values |
//! | `{"anything-but": {"prefix" \| "suffix": "p"}}` | v is a string that does not start / end with it (`{"equals-ignore-case": ...}` allowed inside) |
//! | `{"anything-but": {"equals-ignore-case" \| "wildcard": "s" or ["s", ...]}}` | v is a string matching none of them |
//!
//! Case folding is per character (`char::to_lowercase`), so it is Unicode-aware and
//! context-free.
//!
//! # Combining
//!
//! - **Fields** of one pattern object are ANDed; **matchers** of one list are ORed;
//!   a `"$or"` is ANDed with the object's other fields and matches when at least one of
//!   its branches matches the same object. `$or` may appear at any level.
//! - **Arrays in the event** are flattened (nested arrays too) into their elements. A
//!   matcher list matches when *some* element matches *some* matcher; a nested pattern
//!   object matches when *some* element matches it as a whole (so the fields it tests
//!   come from the same array element).
//! - **Absence.** A field is absent when it is missing or holds an empty array. An
//!   absent field matches a matcher list only if the list holds `{"exists": false}`;
//!   every other matcher, `anything-but` included, needs a value.
//! - **Nested patterns over non-objects.** When a nested pattern meets an absent field,
//!   or an element that is not an object, its fields are all absent there: so
//!   `{"data": {"x": [{"exists": false}]}}` matches an event without `data`, and one
//!   whose `data` is a string.
//! - A data key spelled `$or` cannot be matched: `$or` is always the operator.
//! - Binary `data` is absent; extension integers are numbers.
//!
//! Differences from EventBridge: `{"exists": true}` also matches objects and `null`;
//! `anything-but` lists may mix types; `numeric` has no magnitude limit and accepts
//! `!=`; `$or` may have a single branch; `cidr` is not supported.
//!
//! # Limits
//!
//! [`FilterLimits`] bounds pattern depth, matcher count and size. Matching cost is
//! bounded by (pattern size) × (values in the event), with no backtracking anywhere.

mod compile;
mod error;
mod eval;
mod explain;
mod index;
mod matcher;
mod topic;
mod view;
mod wildcard;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::event::CloudEvent;

pub use error::{FilterError, FilterLimits};
pub use explain::{Check, Explanation, Group, EXPLAIN_ELEMENTS_MAX};
pub use index::{FilterIndex, IndexStats};
pub use topic::{topic_pattern_matches, validate_topic_pattern, TOPIC_PATTERN_LENGTH_MAX};
pub use view::EventView;

/// A compiled event pattern. Compile once (at subscription creation), match many times.
///
/// Serializes as its pattern JSON; deserializing compiles with default limits.
#[derive(Debug, Clone)]
pub struct Filter {
    root: compile::ObjectPattern,
    pattern: Value,
    matchers_count: usize,
}

impl Filter {
    /// Compiles `pattern` with the default [`FilterLimits`].
    pub fn compile(pattern: &Value) -> Result<Self, FilterError> {
        Self::compile_with_limits(pattern, &FilterLimits::default())
    }

    /// Compiles `pattern`; rejects it when it breaks the syntax or `limits`.
    pub fn compile_with_limits(
        pattern: &Value,
        limits: &FilterLimits,
    ) -> Result<Self, FilterError> {
        let (root, matchers_count) = compile::compile(pattern, limits)?;
        Ok(Self {
            root,
            pattern: pattern.clone(),
            matchers_count,
        })
    }

    /// True when `event` matches. Parses JSON `data` only if the pattern reaches it.
    pub fn matches(&self, event: &CloudEvent) -> bool {
        self.matches_view(&EventView::new(event))
    }

    /// Like [`Filter::matches`], sharing one parsed view between many filters.
    pub fn matches_view(&self, view: &EventView<'_>) -> bool {
        eval::object_matches(&self.root, eval::Scope::Root(view))
    }

    /// Evaluates every field and says why the event matched or which checks failed.
    /// `explain(e).matched == matches(e)` always.
    pub fn explain(&self, event: &CloudEvent) -> Explanation {
        explain::explain(&self.root, &self.pattern, &EventView::new(event))
    }

    /// The pattern as given to [`Filter::compile`].
    pub fn pattern(&self) -> &Value {
        &self.pattern
    }

    /// How many matchers the pattern holds (as counted against the limits).
    pub fn matchers_count(&self) -> usize {
        self.matchers_count
    }

    pub(crate) fn root(&self) -> &compile::ObjectPattern {
        &self.root
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.pattern.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pattern = Value::deserialize(deserializer)?;
        Filter::compile(&pattern).map_err(serde::de::Error::custom)
    }
}
