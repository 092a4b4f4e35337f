//! The durable schema registry: `herald_core::schema::SchemaRegistry` persisted as
//! `<data_dir>/schemas.json` (atomic replace after every change), or on JetStream a copy
//! of the shared registry (`storage/shared_schemas.rs`) replaced as it changes.
//!
//! Invariant: the in-memory registry equals the file's content once a change returned Ok;
//! changes are serialized by `write_lock` and never hold the registry lock during I/O; a
//! shared copy only ever moves to a newer revision.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_core::schema::{Compatibility, Registration, SchemaRegistry, TypeSummary};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::error::BrokerError;
use crate::metadata::write_atomically;

pub(crate) struct SchemaStore {
    path: PathBuf,
    pub(crate) registry: RwLock<SchemaRegistry>,
    write_lock: Mutex<()>,
    /// The shared registry's revision this copy holds (JetStream storage).
    revision: AtomicU64,
}

/// Registers `schema` for `ty` in `registry`, setting its compatibility mode first.
pub(crate) fn register_in(
    registry: &mut SchemaRegistry,
    ty: &str,
    schema: &Value,
    compatibility: Option<Compatibility>,
) -> Result<Registration, BrokerError> {
    if let Some(mode) = compatibility {
        registry
            .set_compatibility(ty, mode)
            .map_err(BrokerError::Schema)?;
    }
    registry.register(ty, schema).map_err(BrokerError::Schema)
}

pub(crate) fn delete_in(registry: &mut SchemaRegistry, ty: &str) -> Result<usize, BrokerError> {
    registry.delete(ty).map_err(BrokerError::Schema)
}

impl SchemaStore {
    pub fn load(path: PathBuf) -> Result<Self, BrokerError> {
        let registry = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::io(&path, std::io::Error::other(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SchemaRegistry::new(),
            Err(e) => return Err(BrokerError::io(&path, e)),
        };
        Ok(Self {
            path,
            registry: RwLock::new(registry),
            write_lock: Mutex::new(()),
            revision: AtomicU64::new(0),
        })
    }

    /// Takes the shared registry at `revision` unless this copy is at a newer one.
    pub fn replace(&self, registry: SchemaRegistry, revision: u64) {
        let _serial = self.write_lock.lock();
        if revision > self.revision.load(Ordering::Acquire) {
            *self.registry.write() = registry;
            self.revision.store(revision, Ordering::Release);
        }
    }

    /// Applies `change` to a copy of the registry, persists it, then publishes it.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut SchemaRegistry) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let _serial = self.write_lock.lock();
        let mut next = self.registry.read().clone();
        let outcome = change(&mut next)?;
        let bytes = serde_json::to_vec(&next)
            .map_err(|e| BrokerError::io(&self.path, std::io::Error::other(e)))?;
        write_atomically(&self.path, &bytes)?;
        *self.registry.write() = next;
        Ok(outcome)
    }

    pub fn register(
        &self,
        ty: &str,
        schema: &Value,
        compatibility: Option<Compatibility>,
    ) -> Result<Registration, BrokerError> {
        self.update(|r| register_in(r, ty, schema, compatibility))
    }

    pub fn list(&self) -> Vec<TypeSummary> {
        self.registry.read().list()
    }

    /// The schema JSON of `version` (latest when `None`) and its number.
    pub fn get(&self, ty: &str, version: Option<u32>) -> Option<(u32, Value)> {
        let registry = self.registry.read();
        match version {
            Some(v) => registry.get(ty, v).map(|s| (v, s.schema().clone())),
            None => registry
                .latest(ty)
                .map(|l| (l.version, l.schema.schema().clone())),
        }
    }

    pub fn delete(&self, ty: &str) -> Result<usize, BrokerError> {
        self.update(|r| delete_in(r, ty))
    }
}
