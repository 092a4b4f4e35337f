//! Errors of the schema layer: compiling a schema, registering a version, validating an event.
//!
//! Every variant carries structured fields (the schema path, the type, the version) so the HTTP
//! layer can build its response without parsing messages; `code()` gives a stable name.

use thiserror::Error;

use super::compat::Incompatibility;
use super::compiled::SchemaViolation;

/// A schema that cannot be used. `path` is a JSON pointer into the schema (`""` is the root).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error("schema is {size_bytes} bytes; the limit is {size_bytes_max}")]
    TooLarge {
        size_bytes: usize,
        size_bytes_max: usize,
    },
    #[error("schema{path}: nests deeper than {depth_max} levels")]
    TooDeep { path: String, depth_max: usize },
    #[error(
        "schema{path}: `$schema` {uri:?} is not supported; use draft 2020-12 \
         (\"https://json-schema.org/draft/2020-12/schema\", the default) or draft-07 \
         (\"http://json-schema.org/draft-07/schema#\")"
    )]
    UnsupportedDraft { path: String, uri: String },
    #[error(
        "schema{path}: reference {reference:?} is not local; only references into the schema \
         itself (starting with `#`) are allowed, and nothing is ever fetched"
    )]
    RemoteReference { path: String, reference: String },
    #[error("schema{path}: {message}")]
    Invalid { path: String, message: String },
}

impl SchemaError {
    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            SchemaError::TooLarge { .. } => "schema_too_large",
            SchemaError::TooDeep { .. } => "schema_too_deep",
            SchemaError::UnsupportedDraft { .. } => "schema_unsupported_draft",
            SchemaError::RemoteReference { .. } => "schema_remote_reference",
            SchemaError::Invalid { .. } => "schema_invalid",
        }
    }
}

/// A registry operation that was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("invalid event type {ty:?}: {message}")]
    InvalidType { ty: String, message: String },
    #[error("schema for type {ty:?}: {source}")]
    Schema {
        ty: String,
        #[source]
        source: SchemaError,
    },
    #[error(
        "schema for type {ty:?} is not backward compatible with version {latest_version}: {}",
        join_incompatibilities(incompatibilities)
    )]
    Incompatible {
        ty: String,
        latest_version: u32,
        incompatibilities: Vec<Incompatibility>,
    },
    #[error("no schema is registered for type {ty:?}")]
    UnknownType { ty: String },
    #[error("type {ty:?} has no schema version {version}")]
    UnknownVersion { ty: String, version: u32 },
    #[error("type {ty:?} already has {versions_max} versions, the limit")]
    TooManyVersions { ty: String, versions_max: usize },
    #[error("the registry already holds {types_max} types, the limit")]
    TooManyTypes { types_max: usize },
}

impl RegistryError {
    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::InvalidType { .. } => "schema_type_invalid",
            RegistryError::Schema { source, .. } => source.code(),
            RegistryError::Incompatible { .. } => "schema_incompatible",
            RegistryError::UnknownType { .. } => "schema_type_not_found",
            RegistryError::UnknownVersion { .. } => "schema_version_not_found",
            RegistryError::TooManyVersions { .. } => "schema_too_many_versions",
            RegistryError::TooManyTypes { .. } => "schema_too_many_types",
        }
    }
}

/// An event refused because its `data` does not fit the schema of its `type`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EventSchemaError {
    #[error(
        "data of type {ty:?} does not match schema version {version}: {}",
        join_violations(violations)
    )]
    Violations {
        ty: String,
        version: u32,
        /// Never empty; at most [`super::VIOLATIONS_MAX`].
        violations: Vec<SchemaViolation>,
    },
    #[error("data of type {ty:?} must be JSON (a schema is registered for it), got binary data")]
    NotJson { ty: String },
    #[error("data of type {ty:?} is not valid JSON: {message}")]
    MalformedJson { ty: String, message: String },
    #[error("dataschema {dataschema:?} is not a Herald schema reference: {message}")]
    BadDataschema { dataschema: String, message: String },
    #[error("dataschema names type {named:?} but the event's type is {ty:?}")]
    DataschemaTypeMismatch { ty: String, named: String },
    #[error("dataschema names version {version} of type {ty:?}, which does not exist")]
    UnknownVersion { ty: String, version: u32 },
}

impl EventSchemaError {
    /// A stable, machine-readable name for the error.
    pub fn code(&self) -> &'static str {
        match self {
            EventSchemaError::Violations { .. } => "data_schema_violation",
            EventSchemaError::NotJson { .. } => "data_not_json",
            EventSchemaError::MalformedJson { .. } => "data_malformed_json",
            EventSchemaError::BadDataschema { .. } => "dataschema_invalid",
            EventSchemaError::DataschemaTypeMismatch { .. } => "dataschema_type_mismatch",
            EventSchemaError::UnknownVersion { .. } => "dataschema_version_not_found",
        }
    }

    /// The request field at fault, in the form the HTTP layer reports: `data/items/0/price`
    /// for a violation, `data` or `dataschema` otherwise.
    pub fn field(&self) -> String {
        match self {
            EventSchemaError::Violations { violations, .. } => violations
                .first()
                .map_or_else(|| "data".to_string(), SchemaViolation::field),
            EventSchemaError::BadDataschema { .. }
            | EventSchemaError::DataschemaTypeMismatch { .. }
            | EventSchemaError::UnknownVersion { .. } => "dataschema".to_string(),
            EventSchemaError::NotJson { .. } | EventSchemaError::MalformedJson { .. } => {
                "data".to_string()
            }
        }
    }
}

fn join_incompatibilities(items: &[Incompatibility]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn join_violations(items: &[SchemaViolation]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
