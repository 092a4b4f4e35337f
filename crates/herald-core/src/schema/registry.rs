//! The schema registry: event `type` → numbered schema versions, with a compatibility mode
//! per type.
//!
//! Owns: version numbering, the compatibility gate on registration, the choice of schema for
//! an event, and the registry's persisted JSON form. Not owned: where that JSON is stored, and
//! locking (the registry is a plain value; the broker guards it).
//!
//! Invariants:
//! - Versions of a type are numbered 1, 2, 3... with no gaps; version `n` never changes once
//!   registered. Registering a schema equal (as JSON) to an existing version of the type returns
//!   that version and creates nothing.
//! - In [`Compatibility::Backward`] mode (the default), a new version is only added when
//!   [`check_backward_compatible`](super::check_backward_compatible) proves it accepts everything
//!   the latest version accepts. Since that relation is transitive, the latest version then
//!   accepts everything any earlier version did, unless the mode was `none` in between.
//! - Deleting a type forgets its versions and mode; registering it again starts at version 1.
//!
//! Choosing the schema for an event: an event whose `dataschema` is
//! `herald:schema:<type>:<version>` (see [`dataschema_uri`]) is validated against that version
//! (and its type must be the event's type); any other event of a type with a schema is
//! validated against the latest version. Events of types without a schema pass unchecked. An
//! event without data is validated as JSON `null`, so a schema that does not accept `null`
//! requires data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::compat::check_compiled;
use super::compiled::CompiledSchema;
use super::error::{EventSchemaError, RegistryError};
use crate::event::{CloudEvent, Data};

/// `dataschema` prefix naming a registered version: `herald:schema:<type>:<version>`.
pub const DATASCHEMA_PREFIX: &str = "herald:schema:";
/// Most versions kept per type.
pub const VERSIONS_PER_TYPE_MAX: usize = 1_000;
/// Most types with a schema (or a compatibility mode).
pub const TYPES_MAX: usize = 10_000;
/// Longest event type name accepted, in bytes.
pub const TYPE_NAME_BYTES_MAX: usize = 256;
/// Version of the persisted JSON form written by [`SchemaRegistry`]'s `Serialize`.
pub const FORMAT_VERSION: u32 = 1;

/// How a type's new versions are gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    /// A new version must accept every value the latest version accepts.
    #[default]
    Backward,
    /// Any valid schema becomes the next version.
    None,
}

/// The outcome of [`SchemaRegistry::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Registration {
    pub version: u32,
    /// `false` when the schema equals an existing version, which is returned instead.
    pub created: bool,
}

/// One type in [`SchemaRegistry::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeSummary {
    #[serde(rename = "type")]
    pub ty: String,
    pub compatibility: Compatibility,
    /// `None` when only a compatibility mode was set.
    pub latest_version: Option<u32>,
    pub version_count: usize,
}

/// A registered version.
#[derive(Debug, Clone, Copy)]
pub struct SchemaVersion<'r> {
    pub version: u32,
    pub schema: &'r CompiledSchema,
}

#[derive(Debug, Clone, Default)]
struct TypeEntry {
    compatibility: Compatibility,
    /// Version `n` at index `n - 1`.
    versions: Vec<CompiledSchema>,
}

impl TypeEntry {
    fn latest(&self) -> Option<SchemaVersion<'_>> {
        let schema = self.versions.last()?;
        Some(SchemaVersion {
            version: version_number(self.versions.len()),
            schema,
        })
    }

    fn get(&self, version: u32) -> Option<&CompiledSchema> {
        let index = usize::try_from(version).ok()?.checked_sub(1)?;
        self.versions.get(index)
    }
}

/// Version number of the version stored at position `count - 1`.
fn version_number(count: usize) -> u32 {
    // Bounded by VERSIONS_PER_TYPE_MAX.
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// Registered schemas by event type. Serializes to (and loads from) a JSON document holding
/// every version's schema; loading recompiles them.
#[derive(Debug, Clone, Default)]
pub struct SchemaRegistry {
    types: BTreeMap<String, TypeEntry>,
}

/// The `dataschema` value naming `version` of type `ty`.
pub fn dataschema_uri(ty: &str, version: u32) -> String {
    format!("{DATASCHEMA_PREFIX}{ty}:{version}")
}

impl SchemaRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `schema` as the next version of `ty`, or returns the existing version equal
    /// to it. Refused if the schema is unusable, or (in backward mode) not provably backward
    /// compatible with the latest version.
    pub fn register(&mut self, ty: &str, schema: &Value) -> Result<Registration, RegistryError> {
        if let Some(existing) = self.existing_version(ty, schema) {
            return Ok(Registration {
                version: existing,
                created: false,
            });
        }
        let compiled = self.admit(ty, schema)?;
        let entry = self.types.entry(ty.to_string()).or_default();
        entry.versions.push(compiled);
        Ok(Registration {
            version: version_number(entry.versions.len()),
            created: true,
        })
    }

    /// Checks what [`register`](Self::register) would decide, changing nothing: `Ok` with the
    /// version the schema would get (or already has).
    pub fn check(&self, ty: &str, schema: &Value) -> Result<Registration, RegistryError> {
        if let Some(existing) = self.existing_version(ty, schema) {
            return Ok(Registration {
                version: existing,
                created: false,
            });
        }
        self.admit(ty, schema)?;
        let count = self.types.get(ty).map_or(0, |e| e.versions.len());
        Ok(Registration {
            version: version_number(count + 1),
            created: true,
        })
    }

    fn existing_version(&self, ty: &str, schema: &Value) -> Option<u32> {
        let entry = self.types.get(ty)?;
        let index = entry.versions.iter().position(|v| v.schema() == schema)?;
        Some(version_number(index + 1))
    }

    /// Every check a new version must pass; the compiled schema if it passes.
    fn admit(&self, ty: &str, schema: &Value) -> Result<CompiledSchema, RegistryError> {
        validate_type_name(ty)?;
        let compiled = CompiledSchema::compile(schema).map_err(|source| RegistryError::Schema {
            ty: ty.to_string(),
            source,
        })?;
        let Some(entry) = self.types.get(ty) else {
            if self.types.len() >= TYPES_MAX {
                return Err(RegistryError::TooManyTypes {
                    types_max: TYPES_MAX,
                });
            }
            return Ok(compiled);
        };
        if entry.versions.len() >= VERSIONS_PER_TYPE_MAX {
            return Err(RegistryError::TooManyVersions {
                ty: ty.to_string(),
                versions_max: VERSIONS_PER_TYPE_MAX,
            });
        }
        if let (Compatibility::Backward, Some(latest)) = (entry.compatibility, entry.latest()) {
            check_compiled(latest.schema, &compiled).map_err(|incompatibilities| {
                RegistryError::Incompatible {
                    ty: ty.to_string(),
                    latest_version: latest.version,
                    incompatibilities,
                }
            })?;
        }
        Ok(compiled)
    }

    /// Sets how new versions of `ty` are gated (the type need not have a schema yet).
    pub fn set_compatibility(
        &mut self,
        ty: &str,
        compatibility: Compatibility,
    ) -> Result<(), RegistryError> {
        validate_type_name(ty)?;
        if !self.types.contains_key(ty) && self.types.len() >= TYPES_MAX {
            return Err(RegistryError::TooManyTypes {
                types_max: TYPES_MAX,
            });
        }
        self.types.entry(ty.to_string()).or_default().compatibility = compatibility;
        Ok(())
    }

    /// The mode of `ty` (the default, backward, if never set).
    pub fn compatibility(&self, ty: &str) -> Compatibility {
        self.types
            .get(ty)
            .map(|e| e.compatibility)
            .unwrap_or_default()
    }

    pub fn latest(&self, ty: &str) -> Option<SchemaVersion<'_>> {
        self.types.get(ty)?.latest()
    }

    pub fn get(&self, ty: &str, version: u32) -> Option<&CompiledSchema> {
        self.types.get(ty)?.get(version)
    }

    /// Every version of `ty`, oldest first (empty for an unknown type).
    pub fn versions(&self, ty: &str) -> Vec<SchemaVersion<'_>> {
        self.types.get(ty).map_or_else(Vec::new, |entry| {
            entry
                .versions
                .iter()
                .enumerate()
                .map(|(index, schema)| SchemaVersion {
                    version: version_number(index + 1),
                    schema,
                })
                .collect()
        })
    }

    /// Every type with a schema or a mode, by name.
    pub fn list(&self) -> Vec<TypeSummary> {
        self.types
            .iter()
            .map(|(ty, entry)| TypeSummary {
                ty: ty.clone(),
                compatibility: entry.compatibility,
                latest_version: entry.latest().map(|l| l.version),
                version_count: entry.versions.len(),
            })
            .collect()
    }

    /// Forgets `ty` (every version and its mode); returns how many versions it had.
    pub fn delete(&mut self, ty: &str) -> Result<usize, RegistryError> {
        self.types
            .remove(ty)
            .map(|entry| entry.versions.len())
            .ok_or_else(|| RegistryError::UnknownType { ty: ty.to_string() })
    }

    /// Validates an event's data against the schema of its type (see the module doc for which
    /// version). `Ok(Some(version))` names the version used, `Ok(None)` means the type has no
    /// schema.
    pub fn validate_event(&self, event: &CloudEvent) -> Result<Option<u32>, EventSchemaError> {
        let ty = event.ty.as_str();
        let named = match event.dataschema.as_deref() {
            Some(uri) => parse_dataschema(uri)?,
            None => None,
        };
        let chosen = match named {
            Some((named_ty, version)) => {
                if named_ty != ty {
                    return Err(EventSchemaError::DataschemaTypeMismatch {
                        ty: ty.to_string(),
                        named: named_ty.to_string(),
                    });
                }
                let schema =
                    self.get(ty, version)
                        .ok_or_else(|| EventSchemaError::UnknownVersion {
                            ty: ty.to_string(),
                            version,
                        })?;
                SchemaVersion { version, schema }
            }
            None => match self.latest(ty) {
                Some(latest) => latest,
                None => return Ok(None),
            },
        };
        let data = match &event.data {
            None => Value::Null,
            Some(Data::Json(text)) => {
                serde_json::from_str(text).map_err(|e| EventSchemaError::MalformedJson {
                    ty: ty.to_string(),
                    message: e.to_string(),
                })?
            }
            Some(Data::Binary(_)) => return Err(EventSchemaError::NotJson { ty: ty.to_string() }),
        };
        chosen
            .schema
            .validate(&data)
            .map_err(|violations| EventSchemaError::Violations {
                ty: ty.to_string(),
                version: chosen.version,
                violations,
            })?;
        Ok(Some(chosen.version))
    }
}

/// Parses a Herald `dataschema`: `Ok(None)` for any other URI.
fn parse_dataschema(uri: &str) -> Result<Option<(&str, u32)>, EventSchemaError> {
    let Some(rest) = uri.strip_prefix(DATASCHEMA_PREFIX) else {
        return Ok(None);
    };
    let bad = |message: &str| EventSchemaError::BadDataschema {
        dataschema: uri.to_string(),
        message: message.to_string(),
    };
    let (ty, version) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected herald:schema:<type>:<version>"))?;
    if ty.is_empty() {
        return Err(bad("the type is empty"));
    }
    let version: u32 = version
        .parse()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| bad("the version must be a whole number from 1"))?;
    Ok(Some((ty, version)))
}

fn validate_type_name(ty: &str) -> Result<(), RegistryError> {
    let problem = if ty.is_empty() {
        Some("must not be empty".to_string())
    } else if ty.len() > TYPE_NAME_BYTES_MAX {
        Some(format!("longer than {TYPE_NAME_BYTES_MAX} bytes"))
    } else if ty.chars().any(char::is_control) {
        Some("must not contain control characters".to_string())
    } else {
        None
    };
    match problem {
        Some(message) => Err(RegistryError::InvalidType {
            ty: ty.chars().take(TYPE_NAME_BYTES_MAX).collect(),
            message,
        }),
        None => Ok(()),
    }
}

/// The persisted form, as written.
#[derive(Serialize)]
struct RegistryView<'r> {
    format_version: u32,
    types: BTreeMap<&'r str, TypeView<'r>>,
}

#[derive(Serialize)]
struct TypeView<'r> {
    compatibility: Compatibility,
    /// Version `n` at index `n - 1`.
    versions: Vec<&'r Value>,
}

/// The persisted form, as read.
#[derive(Deserialize)]
struct RegistryData {
    format_version: u32,
    types: BTreeMap<String, TypeData>,
}

#[derive(Deserialize)]
struct TypeData {
    #[serde(default)]
    compatibility: Compatibility,
    versions: Vec<Value>,
}

impl Serialize for SchemaRegistry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RegistryView {
            format_version: FORMAT_VERSION,
            types: self
                .types
                .iter()
                .map(|(ty, entry)| {
                    let view = TypeView {
                        compatibility: entry.compatibility,
                        versions: entry.versions.iter().map(CompiledSchema::schema).collect(),
                    };
                    (ty.as_str(), view)
                })
                .collect(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SchemaRegistry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let data = RegistryData::deserialize(deserializer)?;
        Self::from_data(data).map_err(serde::de::Error::custom)
    }
}

impl SchemaRegistry {
    /// Rebuilds a registry from its persisted form. Stored versions are recompiled but not
    /// re-checked for compatibility: they were when registered.
    fn from_data(data: RegistryData) -> Result<Self, String> {
        if data.format_version != FORMAT_VERSION {
            return Err(format!(
                "schema registry format version {} is not supported (expected {FORMAT_VERSION})",
                data.format_version
            ));
        }
        let mut types = BTreeMap::new();
        for (ty, stored) in data.types {
            validate_type_name(&ty).map_err(|e| e.to_string())?;
            if stored.versions.len() > VERSIONS_PER_TYPE_MAX {
                return Err(format!(
                    "type {ty:?} holds more than {VERSIONS_PER_TYPE_MAX} versions"
                ));
            }
            let versions = stored
                .versions
                .iter()
                .enumerate()
                .map(|(index, schema)| {
                    CompiledSchema::compile(schema)
                        .map_err(|e| format!("type {ty:?} version {}: {e}", index + 1))
                })
                .collect::<Result<Vec<_>, _>>()?;
            types.insert(
                ty,
                TypeEntry {
                    compatibility: stored.compatibility,
                    versions,
                },
            );
        }
        if types.len() > TYPES_MAX {
            return Err(format!("more than {TYPES_MAX} types"));
        }
        Ok(Self { types })
    }
}
