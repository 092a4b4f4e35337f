//! Why a filter matched an event or not, for the rule tester (`POST /filters/test`,
//! `herald filters test`).
//!
//! Owns: [`Explanation`] and its JSON form. Evaluation here mirrors [`super::eval`]
//! but visits every field instead of stopping at the first failure; the invariant
//! `explain(e).matched == matches(e)` is checked by the property tests.

use serde::Serialize;
use serde_json::Value;

use super::compile::{Leaf, Node, ObjectPattern};
use super::error::{field_path, index_path};
use super::eval::{element_scope, object_matches, Scope};
use super::matcher::Matcher;
use super::view::{Elem, EventView, ValueRef};

/// Most array elements explained when none of them matches a nested pattern.
pub const EXPLAIN_ELEMENTS_MAX: usize = 5;
/// Longest rendering of an event value inside a reason, in characters.
const DESCRIBE_LENGTH_MAX: usize = 80;

/// The outcome of [`super::Filter::explain`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub matched: bool,
    /// One line for people: `matched`, or the first failing check.
    pub summary: String,
    /// One check per pattern field, in evaluation order (attribute leaves first).
    pub checks: Vec<Check>,
}

/// One step of the evaluation. Paths use the pattern's form (`data.customer.tier`,
/// `$or[1].type`); `[i]` after a field that holds an array counts elements after
/// nested arrays are flattened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Check {
    /// A field compared with its matcher list.
    Field {
        path: String,
        matched: bool,
        /// The field's value in the event; missing when the event lacks the field.
        #[serde(skip_serializing_if = "Option::is_none")]
        actual: Option<Value>,
        /// The matcher list as written in the pattern.
        expected: Value,
        /// Index of the matcher that matched.
        #[serde(skip_serializing_if = "Option::is_none")]
        matched_by: Option<usize>,
        reason: String,
    },
    /// A `$or`: matched when one branch matched.
    Or {
        path: String,
        matched: bool,
        branches: Vec<Group>,
    },
    /// A nested pattern tried on the elements of an array: matched when one element
    /// matched. Shows the matching element, or the first [`EXPLAIN_ELEMENTS_MAX`].
    Elements {
        path: String,
        matched: bool,
        elements_count: usize,
        elements: Vec<Group>,
    },
}

/// The checks of one `$or` branch or one array element.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub index: usize,
    pub matched: bool,
    pub checks: Vec<Check>,
}

impl Check {
    pub fn matched(&self) -> bool {
        match self {
            Check::Field { matched, .. }
            | Check::Or { matched, .. }
            | Check::Elements { matched, .. } => *matched,
        }
    }

    fn failure_line(&self) -> Option<String> {
        match self {
            Check::Field { matched: true, .. }
            | Check::Or { matched: true, .. }
            | Check::Elements { matched: true, .. } => None,
            Check::Field { path, reason, .. } => Some(format!("`{path}`: {reason}")),
            Check::Or { path, branches, .. } => Some(format!(
                "`{path}`: none of the {} branches matched",
                branches.len()
            )),
            Check::Elements {
                path,
                elements_count,
                ..
            } => Some(format!(
                "`{path}`: none of the {elements_count} elements matched the nested pattern"
            )),
        }
    }
}

pub(crate) fn explain(
    pattern: &ObjectPattern,
    source: &Value,
    view: &EventView<'_>,
) -> Explanation {
    let mut checks = Vec::new();
    let matched = explain_object(pattern, source, Scope::Root(view), "", &mut checks);
    let summary = if matched {
        "matched".to_string()
    } else {
        checks.iter().find_map(Check::failure_line).map_or_else(
            || "did not match".to_string(),
            |line| format!("did not match: {line}"),
        )
    };
    Explanation {
        matched,
        summary,
        checks,
    }
}

fn explain_object(
    pattern: &ObjectPattern,
    source: &Value,
    scope: Scope<'_>,
    path: &str,
    out: &mut Vec<Check>,
) -> bool {
    let mut all = true;
    for field in &pattern.fields {
        let field_source = source.get(&*field.name).unwrap_or(&Value::Null);
        let path = field_path(path, &field.name);
        let value = scope.lookup(&field.name);
        let matched = match &field.node {
            Node::Leaf(leaf) => {
                let check = explain_leaf(leaf, field_source, value, path);
                let matched = check.matched();
                out.push(check);
                matched
            }
            Node::Object(nested) => explain_nested(nested, field_source, value, &path, out),
        };
        all &= matched;
    }
    if let Some(branches) = &pattern.any_of {
        let or_path = field_path(path, "$or");
        let mut groups = Vec::with_capacity(branches.len());
        for (index, branch) in branches.iter().enumerate() {
            let branch_source = source
                .get("$or")
                .and_then(|s| s.get(index))
                .unwrap_or(&Value::Null);
            let mut checks = Vec::new();
            let matched = explain_object(
                branch,
                branch_source,
                scope,
                &index_path(&or_path, index),
                &mut checks,
            );
            groups.push(Group {
                index,
                matched,
                checks,
            });
        }
        let matched = groups.iter().any(|g| g.matched);
        out.push(Check::Or {
            path: or_path,
            matched,
            branches: groups,
        });
        all &= matched;
    }
    all
}

fn explain_leaf(leaf: &Leaf, source: &Value, value: Option<ValueRef<'_>>, path: String) -> Check {
    let mut elements_count = 0usize;
    let mut first = None;
    let mut hit = None;
    if let Some(value) = value {
        value.any_element(&mut |elem| {
            elements_count += 1;
            if first.is_none() {
                first = Some(elem.describe(DESCRIBE_LENGTH_MAX));
            }
            hit = leaf
                .matchers
                .iter()
                .position(|m| m.matches(elem))
                .map(|index| (index, elem.describe(DESCRIBE_LENGTH_MAX)));
            hit.is_some()
        });
    }
    let matchers = plural(leaf.matchers.len(), "matcher");
    let (matched, matched_by, reason) = match (hit, first) {
        (Some((index, shown)), _) => (
            true,
            Some(index),
            format!("{shown} matched matcher [{index}]"),
        ),
        (None, None) if leaf.absent_matches => {
            let index = leaf
                .matchers
                .iter()
                .position(|m| *m == Matcher::Exists(false));
            (
                true,
                index,
                "absent, as {\"exists\": false} requires".to_string(),
            )
        }
        (None, None) if value.is_some() => {
            (false, None, "the array is empty (no value)".to_string())
        }
        (None, None) => (false, None, "the field is absent".to_string()),
        (None, Some(shown)) if elements_count == 1 => (
            false,
            None,
            format!("{shown} matched none of the {matchers}"),
        ),
        (None, Some(_)) => (
            false,
            None,
            format!("none of the {elements_count} values matched any of the {matchers}"),
        ),
    };
    Check::Field {
        path,
        matched,
        actual: value.map(ValueRef::to_json),
        expected: source.clone(),
        matched_by,
        reason,
    }
}

fn explain_nested(
    pattern: &ObjectPattern,
    source: &Value,
    value: Option<ValueRef<'_>>,
    path: &str,
    out: &mut Vec<Check>,
) -> bool {
    let mut elements: Vec<Elem<'_>> = Vec::new();
    if let Some(value) = value {
        value.any_element(&mut |elem| {
            elements.push(elem);
            false
        });
    }
    let is_array = matches!(value, Some(ValueRef::Json(Value::Array(_))));
    match elements.as_slice() {
        [] => explain_object(pattern, source, Scope::Absent, path, out),
        [only] if !is_array => explain_object(pattern, source, element_scope(*only), path, out),
        _ => {
            let found = elements
                .iter()
                .position(|elem| object_matches(pattern, element_scope(*elem)));
            let explain_element = |index: usize, elem: Elem<'_>| {
                let mut checks = Vec::new();
                let matched = explain_object(
                    pattern,
                    source,
                    element_scope(elem),
                    &index_path(path, index),
                    &mut checks,
                );
                Group {
                    index,
                    matched,
                    checks,
                }
            };
            let shown = match found.and_then(|index| elements.get(index).map(|e| (index, *e))) {
                Some((index, elem)) => vec![explain_element(index, elem)],
                None => elements
                    .iter()
                    .take(EXPLAIN_ELEMENTS_MAX)
                    .enumerate()
                    .map(|(index, elem)| explain_element(index, *elem))
                    .collect(),
            };
            out.push(Check::Elements {
                path: path.to_string(),
                matched: found.is_some(),
                elements_count: elements.len(),
                elements: shown,
            });
            found.is_some()
        }
    }
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}
