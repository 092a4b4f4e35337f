//! Evaluating a compiled pattern against an [`EventView`].
//!
//! Owns: the matching rules for objects, `$or`, absence and arrays (see the
//! [module docs](super) for the table). Does not own individual matchers
//! ([`super::matcher`]) or explanations ([`super::explain`], which mirrors this file and
//! is checked against it by property tests).

use serde_json::{Map, Value};

use super::compile::{Leaf, Node, ObjectPattern};
use super::view::{Elem, EventView, ValueRef};

/// Where a pattern object's fields are looked up.
#[derive(Clone, Copy)]
pub(crate) enum Scope<'a> {
    /// The event's top level.
    Root(&'a EventView<'a>),
    /// A JSON object inside `data`.
    Object(&'a Map<String, Value>),
    /// Nothing there (missing field, or a non-object value): every field is absent.
    Absent,
}

impl<'a> Scope<'a> {
    pub(crate) fn lookup(self, name: &str) -> Option<ValueRef<'a>> {
        match self {
            Scope::Root(view) => view.attribute(name),
            Scope::Object(map) => map.get(name).map(ValueRef::Json),
            Scope::Absent => None,
        }
    }
}

/// Every field matches and, when there is a `$or`, at least one branch matches.
pub(crate) fn object_matches(pattern: &ObjectPattern, scope: Scope<'_>) -> bool {
    pattern
        .fields
        .iter()
        .all(|field| node_matches(&field.node, scope.lookup(&field.name)))
        && pattern
            .any_of
            .as_ref()
            .is_none_or(|branches| branches.iter().any(|branch| object_matches(branch, scope)))
}

fn node_matches(node: &Node, value: Option<ValueRef<'_>>) -> bool {
    match node {
        Node::Leaf(leaf) => leaf_matches(leaf, value),
        Node::Object(pattern) => nested_matches(pattern, value),
    }
}

/// Some element matches some matcher; with no element at all (missing field or empty
/// array), only `{"exists": false}` matches.
pub(crate) fn leaf_matches(leaf: &Leaf, value: Option<ValueRef<'_>>) -> bool {
    let mut seen = false;
    let hit = value.is_some_and(|value| {
        value.any_element(&mut |elem| {
            seen = true;
            leaf.matchers.iter().any(|m| m.matches(elem))
        })
    });
    hit || (!seen && leaf.absent_matches)
}

/// Some element matches the nested pattern (objects by their fields, other values as
/// an absent scope); with no element at all, the nested pattern is tried on an absent
/// scope.
pub(crate) fn nested_matches(pattern: &ObjectPattern, value: Option<ValueRef<'_>>) -> bool {
    let mut seen = false;
    let hit = value.is_some_and(|value| {
        value.any_element(&mut |elem| {
            seen = true;
            object_matches(pattern, element_scope(elem))
        })
    });
    hit || (!seen && object_matches(pattern, Scope::Absent))
}

pub(crate) fn element_scope(elem: Elem<'_>) -> Scope<'_> {
    match elem {
        Elem::Object(map) => Scope::Object(map),
        _ => Scope::Absent,
    }
}
