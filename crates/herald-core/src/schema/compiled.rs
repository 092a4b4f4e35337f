//! A JSON Schema checked and compiled once, then used to validate event `data`.
//!
//! Owns: draft selection (2020-12 unless `$schema` names draft-07), the refusal of anything
//! that would need fetching, size and depth limits, and turning validator errors into
//! [`SchemaViolation`]s.
//!
//! Invariants: a [`CompiledSchema`] only exists for a schema that passed the draft's meta-schema,
//! holds no non-local reference, and fits [`SCHEMA_BYTES_MAX`] and [`SCHEMA_DEPTH_MAX`]. Its
//! validator is configured exactly as [`validation_options`] says, the same configuration the
//! compatibility checker uses when it evaluates values.

use std::fmt;

use serde_json::{Map, Value};

use super::error::SchemaError;
use super::walk;
use super::{SCHEMA_BYTES_MAX, SCHEMA_DEPTH_MAX, VIOLATIONS_MAX, VIOLATION_MESSAGE_BYTES_MAX};

/// The JSON Schema drafts Herald accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaDraft {
    /// Draft-07, chosen by `"$schema": "http://json-schema.org/draft-07/schema#"`.
    Draft7,
    /// Draft 2020-12, the default when `$schema` is absent.
    Draft202012,
}

const DRAFT_7_URIS: &[&str] = &[
    "http://json-schema.org/draft-07/schema#",
    "http://json-schema.org/draft-07/schema",
    "https://json-schema.org/draft-07/schema#",
    "https://json-schema.org/draft-07/schema",
];
const DRAFT_2020_12_URIS: &[&str] = &[
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
    "http://json-schema.org/draft/2020-12/schema",
    "http://json-schema.org/draft/2020-12/schema#",
];

impl SchemaDraft {
    /// The draft a schema declares with its root `$schema` (2020-12 when absent).
    pub fn of(schema: &Value) -> Result<Self, SchemaError> {
        let Some(declared) = schema.as_object().and_then(|o| o.get("$schema")) else {
            return Ok(SchemaDraft::Draft202012);
        };
        let Some(uri) = declared.as_str() else {
            return Err(SchemaError::Invalid {
                path: "/$schema".to_string(),
                message: "`$schema` must be a string".to_string(),
            });
        };
        if DRAFT_7_URIS.contains(&uri) {
            Ok(SchemaDraft::Draft7)
        } else if DRAFT_2020_12_URIS.contains(&uri) {
            Ok(SchemaDraft::Draft202012)
        } else {
            Err(SchemaError::UnsupportedDraft {
                path: "/$schema".to_string(),
                uri: uri.to_string(),
            })
        }
    }

    fn to_validator_draft(self) -> jsonschema::Draft {
        match self {
            SchemaDraft::Draft7 => jsonschema::Draft::Draft7,
            SchemaDraft::Draft202012 => jsonschema::Draft::Draft202012,
        }
    }
}

/// The one validator configuration Herald uses: the given draft, no retrieval of anything
/// (offline), `format` asserted.
pub(crate) fn validation_options(draft: SchemaDraft) -> jsonschema::ValidationOptions<'static> {
    jsonschema::options()
        .offline()
        .with_draft(draft.to_validator_draft())
        .should_validate_formats(true)
}

/// One reason `data` does not fit a schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchemaViolation {
    /// JSON pointer into the data (`/items/0/price`; `""` is the data itself).
    pub instance_path: String,
    /// JSON pointer into the schema, to the keyword that failed (`/properties/items/type`).
    pub schema_path: String,
    /// What is wrong, for people (may quote the data; at most
    /// [`VIOLATION_MESSAGE_BYTES_MAX`] bytes).
    pub message: String,
}

impl SchemaViolation {
    /// The request field at fault: `data` followed by the instance path (`data/items/0/price`).
    pub fn field(&self) -> String {
        format!("data{}", self.instance_path)
    }
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field(), self.message)
    }
}

/// A schema ready to validate data.
#[derive(Debug, Clone)]
pub struct CompiledSchema {
    source: Value,
    draft: SchemaDraft,
    validator: jsonschema::Validator,
}

impl CompiledSchema {
    /// Checks and compiles `schema`. The error names the JSON pointer of the problem inside
    /// the schema.
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        check_limits(schema)?;
        let draft = SchemaDraft::of(schema)?;
        check_references(schema)?;
        if let Some(path) = walk::reference_loop(schema) {
            return Err(SchemaError::Invalid {
                path,
                message: "a reference loop passes through here without descending into the \
                          data, so validation would never end"
                    .to_string(),
            });
        }
        let validator =
            validation_options(draft)
                .build(schema)
                .map_err(|error| SchemaError::Invalid {
                    path: error.instance_path().as_str().to_string(),
                    message: truncate(error.to_string()),
                })?;
        Ok(Self {
            source: schema.clone(),
            draft,
            validator,
        })
    }

    /// The schema as registered.
    pub fn schema(&self) -> &Value {
        &self.source
    }

    pub fn draft(&self) -> SchemaDraft {
        self.draft
    }

    pub fn is_valid(&self, data: &Value) -> bool {
        self.validator.is_valid(data)
    }

    /// Validates `data`; on failure returns the first [`VIOLATIONS_MAX`] violations (never
    /// an empty list).
    pub fn validate(&self, data: &Value) -> Result<(), Vec<SchemaViolation>> {
        let violations: Vec<SchemaViolation> = self
            .validator
            .iter_errors(data)
            .take(VIOLATIONS_MAX)
            .map(|error| SchemaViolation {
                instance_path: error.instance_path().as_str().to_string(),
                schema_path: error.schema_path().as_str().to_string(),
                message: truncate(error.to_string()),
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }
}

fn check_limits(schema: &Value) -> Result<(), SchemaError> {
    let size_bytes = serde_json::to_string(schema).map_or(usize::MAX, |text| text.len());
    if size_bytes > SCHEMA_BYTES_MAX {
        return Err(SchemaError::TooLarge {
            size_bytes,
            size_bytes_max: SCHEMA_BYTES_MAX,
        });
    }
    if let Some(path) = too_deep(schema) {
        return Err(SchemaError::TooDeep {
            path,
            depth_max: SCHEMA_DEPTH_MAX,
        });
    }
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(SchemaError::Invalid {
            path: String::new(),
            message: "a schema must be a JSON object or a boolean".to_string(),
        });
    }
    Ok(())
}

/// The JSON pointer of a value nested deeper than [`SCHEMA_DEPTH_MAX`], if any. Explicit
/// stacks: the input may be nested arbitrarily deep. Paths are only built once one is found.
fn too_deep(schema: &Value) -> Option<String> {
    let mut stack: Vec<(&Value, usize)> = vec![(schema, 0)];
    let mut deepest = 0;
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Value::Object(object) => stack.extend(object.values().map(|v| (v, depth + 1))),
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    if deepest <= SCHEMA_DEPTH_MAX {
        return None;
    }
    // Follow any deepest branch, naming it.
    let mut path = String::new();
    let mut current = schema;
    for _ in 0..=SCHEMA_DEPTH_MAX {
        let (segment, next) = children(current)
            .into_iter()
            .max_by_key(|(_, v)| depth_of(v))?;
        path.push_str(&segment);
        current = next;
    }
    Some(path)
}

/// The direct children of a JSON value, with their pointer segments.
fn children(value: &Value) -> Vec<(String, &Value)> {
    match value {
        Value::Object(object) => object
            .iter()
            .map(|(k, v)| (format!("/{}", walk::escape(k)), v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("/{i}"), v))
            .collect(),
        _ => Vec::new(),
    }
}

/// Nesting depth of `value` (0 for a scalar), with an explicit stack.
fn depth_of(value: &Value) -> usize {
    let mut stack = vec![(value, 0)];
    let mut deepest = 0;
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Value::Object(object) => stack.extend(object.values().map(|v| (v, depth + 1))),
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// Refuses every reference that does not point into the schema itself, and `$schema` below
/// the root (one draft per schema).
fn check_references(schema: &Value) -> Result<(), SchemaError> {
    // The common case, no problem at all, is found without building any path.
    let mut stack: Vec<(&Value, bool)> = vec![(schema, true)];
    let mut found = false;
    while let Some((value, is_root)) = stack.pop() {
        let Value::Object(object) = value else {
            continue;
        };
        if problem(object, is_root).is_some() {
            found = true;
            break;
        }
        stack.extend(
            walk::subschemas(object)
                .into_iter()
                .map(|(_, v)| (v, false)),
        );
    }
    if !found {
        return Ok(());
    }
    let mut stack: Vec<(&Value, String)> = vec![(schema, String::new())];
    while let Some((value, path)) = stack.pop() {
        let Value::Object(object) = value else {
            continue;
        };
        if let Some(error) = problem(object, path.is_empty()) {
            return Err(error(path));
        }
        for (suffix, child) in walk::subschemas(object) {
            stack.push((child, format!("{path}{suffix}")));
        }
    }
    Ok(())
}

/// What is wrong with one schema object, as a function of its path.
fn problem(
    object: &Map<String, Value>,
    is_root: bool,
) -> Option<Box<dyn FnOnce(String) -> SchemaError + '_>> {
    for keyword in ["$ref", "$dynamicRef", "$recursiveRef"] {
        if let Some(Value::String(reference)) = object.get(keyword) {
            if !reference.starts_with('#') {
                return Some(Box::new(move |path| SchemaError::RemoteReference {
                    path: format!("{path}/{}", walk::escape(keyword)),
                    reference: reference.clone(),
                }));
            }
        }
    }
    if !is_root && object.contains_key("$schema") {
        return Some(Box::new(|path| SchemaError::Invalid {
            path: format!("{path}/$schema"),
            message: "`$schema` is only allowed at the root of a schema".to_string(),
        }));
    }
    None
}

/// Cuts `message` to at most [`VIOLATION_MESSAGE_BYTES_MAX`] bytes, on a character boundary.
fn truncate(mut message: String) -> String {
    if message.len() > VIOLATION_MESSAGE_BYTES_MAX {
        let mut end = VIOLATION_MESSAGE_BYTES_MAX.saturating_sub(3);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}
