//! JSON Schemas for event `data`: compiling and validating, backward-compatibility
//! checking between versions, and the per-`type` versioned registry.
//!
//! - [`compiled`]: [`CompiledSchema`], a schema checked and compiled once (draft 2020-12 by
//!   default, draft-07 when `$schema` says so), validating `data` into
//!   [`SchemaViolation`]s that name the JSON pointer of the bad value.
//! - [`compat`]: [`check_backward_compatible`], a sound, conservative structural proof that
//!   every value an old schema accepts is still accepted by a new one.
//! - [`registry`]: [`SchemaRegistry`], the in-memory, serde-serializable map of event `type` →
//!   schema versions, with the compatibility gate on registration and
//!   [`SchemaRegistry::validate_event`] for publishes.
//!
//! Not owned here: persistence (the broker stores the registry's JSON form), HTTP status codes
//! and error codes at the API edge (the HTTP layer maps [`SchemaError::code`] and friends).
//!
//! Invariants:
//! - Nothing is ever fetched. A schema may only reference itself (`$ref` starting with `#`);
//!   anything else is refused at compile time, and the validator is built without any network
//!   or file resolver (the `jsonschema` crate's default features are off) and in offline mode.
//! - `format` is asserted (an `"email"` that is not an e-mail address is a violation) in both
//!   drafts, so a schema means the same thing whichever draft it is written in. Formats the
//!   validator does not know (`idn-email`, `idn-hostname`, custom names) are ignored.
//! - The compatibility checker never answers "compatible" for a pair it cannot prove; it answers
//!   with an [`Incompatibility`] saying what could not be proven instead.

pub mod compat;
pub mod compiled;
mod error;
pub mod registry;
mod walk;

pub use compat::{check_backward_compatible, Incompatibility, IncompatibilityKind};
pub use compiled::{CompiledSchema, SchemaDraft, SchemaViolation};
pub use error::{EventSchemaError, RegistryError, SchemaError};
pub use registry::{
    dataschema_uri, Compatibility, Registration, SchemaRegistry, SchemaVersion, TypeSummary,
    DATASCHEMA_PREFIX,
};

/// Largest schema accepted, in bytes of its compact JSON text.
pub const SCHEMA_BYTES_MAX: usize = 256 * 1024;
/// Deepest nesting of JSON values accepted inside a schema.
pub const SCHEMA_DEPTH_MAX: usize = 64;
/// Most violations reported for one validation (the first ones found).
pub const VIOLATIONS_MAX: usize = 32;
/// Longest violation message, in bytes; longer ones are cut (messages quote the data).
pub const VIOLATION_MESSAGE_BYTES_MAX: usize = 512;
