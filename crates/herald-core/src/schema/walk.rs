//! Where subschemas live inside a schema object, and JSON pointer escaping.
//!
//! Owns the list of schema-bearing keywords of drafts 07 and 2020-12 (both drafts' keywords,
//! whatever the schema's own draft: callers that look for dangerous references want to see
//! every place one could hide). Values of other keywords (`enum`, `const`, `default`,
//! `examples`, unknown keywords) are data, never walked.

use serde_json::{Map, Value};

/// Keywords whose value is one subschema.
const SINGLE: &[&str] = &[
    "additionalProperties",
    "additionalItems",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
];
/// Keywords whose value is an array of subschemas.
const ARRAYS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
];

/// Escapes one JSON pointer segment (`~` → `~0`, `/` → `~1`).
pub(crate) fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Every direct subschema of `object`, with the JSON pointer suffix leading to it
/// (`/properties/a`, `/allOf/0`, `/items`).
pub(crate) fn subschemas(object: &Map<String, Value>) -> Vec<(String, &Value)> {
    let mut found = Vec::new();
    for (keyword, value) in object {
        let keyword_escaped = escape(keyword);
        let is_single = SINGLE.contains(&keyword.as_str());
        let is_array = ARRAYS.contains(&keyword.as_str());
        let is_map = MAPS.contains(&keyword.as_str());
        match value {
            Value::Object(_) | Value::Bool(_) if is_single || keyword == "items" => {
                found.push((format!("/{keyword_escaped}"), value));
            }
            Value::Array(items) if is_array || keyword == "items" => {
                for (index, item) in items.iter().enumerate() {
                    if item.is_object() || item.is_boolean() {
                        found.push((format!("/{keyword_escaped}/{index}"), item));
                    }
                }
            }
            Value::Object(entries) if is_map => {
                for (name, item) in entries {
                    if item.is_object() || item.is_boolean() {
                        found.push((format!("/{keyword_escaped}/{}", escape(name)), item));
                    }
                }
            }
            _ => {}
        }
    }
    found
}

/// Whether `schema` holds a reference keyword (`$ref`, `$dynamicRef`, `$recursiveRef`) at any
/// subschema, itself included.
pub(crate) fn has_reference(schema: &Value) -> bool {
    let mut stack = vec![schema];
    while let Some(current) = stack.pop() {
        if let Value::Object(object) = current {
            if ["$ref", "$dynamicRef", "$recursiveRef"]
                .iter()
                .any(|k| object.contains_key(*k))
            {
                return true;
            }
            stack.extend(subschemas(object).into_iter().map(|(_, v)| v));
        }
    }
    false
}
