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

/// Keywords whose subschemas apply to the same value as their parent (no descent into the
/// data), so a reference cycle through them never ends.
const SAME_VALUE: &[&str] = &[
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependencies",
];

/// The canonical JSON pointer a local reference (`#`, `#/...`, percent-encoded or not) names,
/// if it is one.
pub(crate) fn reference_pointer(reference: &str) -> Option<String> {
    let fragment = percent_decode(reference.strip_prefix('#')?)?;
    if !(fragment.is_empty() || fragment.starts_with('/')) {
        return None; // a named anchor
    }
    Some(
        fragment
            .split('/')
            .skip(1)
            .map(|s| format!("/{}", escape(&s.replace("~1", "/").replace("~0", "~"))))
            .collect(),
    )
}

/// Decodes `%XX` escapes of a URI fragment; `None` if malformed or not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(byte);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// The local reference targets (canonical JSON pointers) named in `value` itself.
fn reference_targets(
    object: &Map<String, Value>,
) -> impl Iterator<Item = (&'static str, String)> + '_ {
    ["$ref", "$dynamicRef", "$recursiveRef"]
        .into_iter()
        .filter_map(|keyword| {
            let target = object.get(keyword)?.as_str().and_then(reference_pointer)?;
            Some((keyword, target))
        })
}

/// A place (JSON pointer) on a loop of references and same-value keywords through which some
/// subschema reaches itself without descending into the data: such a schema never finishes
/// evaluating. Deterministic: the first loop in pointer order.
///
/// Every such loop passes through a reference target, so only targets are graph nodes: an
/// edge leads from a target to each target referenced within its same-value closure.
pub(crate) fn reference_loop(root: &Value) -> Option<String> {
    use std::collections::{BTreeMap, BTreeSet, HashMap};
    let mut targets = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(current) = stack.pop() {
        if let Value::Object(object) = current {
            targets.extend(reference_targets(object).map(|(_, target)| target));
            stack.extend(subschemas(object).into_iter().map(|(_, v)| v));
        }
    }
    // Edges: target → (pointer of the reference keyword, next target).
    let mut edges: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for target in &targets {
        let mut next = Vec::new();
        let mut closure: Vec<(String, &Value)> = root
            .pointer(target)
            .map(|v| (target.clone(), v))
            .into_iter()
            .collect();
        while let Some((pointer, value)) = closure.pop() {
            let Value::Object(object) = value else {
                continue;
            };
            for (keyword, to) in reference_targets(object) {
                next.push((format!("{pointer}/{}", escape(keyword)), to));
            }
            for (suffix, child) in subschemas(object) {
                let keyword = suffix.split('/').nth(1).unwrap_or_default();
                if SAME_VALUE.contains(&keyword) {
                    closure.push((format!("{pointer}{suffix}"), child));
                }
            }
        }
        edges.insert(target.as_str(), next);
    }
    // Depth-first search with colours, iteratively: grey (false) = on the current path.
    let mut colour: HashMap<&str, bool> = HashMap::new();
    for &start in edges.keys() {
        if colour.contains_key(start) {
            continue;
        }
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        colour.insert(start, false);
        while let Some((node, index)) = path.pop() {
            let Some((via, target)) = edges.get(node).and_then(|e| e.get(index)) else {
                colour.insert(node, true);
                continue;
            };
            path.push((node, index + 1));
            let Some((&target, _)) = edges.get_key_value(target.as_str()) else {
                continue;
            };
            match colour.get(target) {
                Some(false) => return Some(via.clone()),
                Some(true) => {}
                None => {
                    colour.insert(target, false);
                    path.push((target, 0));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loops_through_data_are_fine() {
        let tree = json!({
            "$defs": {"node": {"properties": {"children": {"items": {"$ref": "#/$defs/node"}}}}},
            "allOf": [{"$ref": "#/$defs/node"}]
        });
        assert_eq!(reference_loop(&tree), None);
        let shared = json!({
            "$defs": {"a": {"type": "string"}},
            "anyOf": [{"$ref": "#/$defs/a"}, {"not": {"$ref": "#/$defs/a"}}]
        });
        assert_eq!(reference_loop(&shared), None);
    }

    #[test]
    fn loops_on_the_same_value_are_found() {
        assert_eq!(
            reference_loop(&json!({"$ref": "#"})),
            Some("/$ref".to_string())
        );
        let mutual = json!({
            "$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}}
        });
        assert!(reference_loop(&mutual).is_some());
        let encoded = json!({"$defs": {"a b": {"$ref": "#/$defs/a%20b"}}});
        assert_eq!(
            reference_loop(&encoded),
            Some("/$defs/a b/$ref".to_string())
        );
    }

    #[test]
    fn reference_pointers_are_canonical() {
        assert_eq!(reference_pointer("#"), Some(String::new()));
        assert_eq!(
            reference_pointer("#/$defs/a~1b"),
            Some("/$defs/a~1b".to_string())
        );
        assert_eq!(reference_pointer("#anchor"), None);
        assert_eq!(reference_pointer("other.json#/a"), None);
    }
}
