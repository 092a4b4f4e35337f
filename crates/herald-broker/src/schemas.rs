//! The durable schema registry: `herald_core::schema::SchemaRegistry` persisted as
//! `<data_dir>/schemas.json` (atomic replace after every change).
//!
//! Invariant: the in-memory registry equals the file's content once a change returned Ok;
//! changes are serialized by `write_lock` and never hold the registry lock during I/O.

use std::path::PathBuf;

use herald_core::schema::{Compatibility, Registration, SchemaRegistry, TypeSummary};
use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::error::BrokerError;
use crate::metadata::write_atomically;

pub(crate) struct SchemaStore {
    path: PathBuf,
    pub(crate) registry: RwLock<SchemaRegistry>,
    write_lock: Mutex<()>,
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
        })
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
        self.update(|r| {
            if let Some(mode) = compatibility {
                r.set_compatibility(ty, mode).map_err(BrokerError::Schema)?;
            }
            r.register(ty, schema).map_err(BrokerError::Schema)
        })
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
        self.update(|r| r.delete(ty).map_err(BrokerError::Schema))
    }
}
