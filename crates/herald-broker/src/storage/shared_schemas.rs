//! The schema registry shared by every gateway on one JetStream: the whole registry as one
//! JSON document under the key `registry` of the KV bucket `<PREFIX>_schemas`. Invariant:
//! every change is a compare-and-set on the revision it was computed from (re-read and
//! re-applied when another gateway changed the registry in between), so no registration
//! is ever lost and every gateway validates against the same versions.

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;
use herald_core::schema::SchemaRegistry;

use crate::error::BrokerError;
use crate::storage::kv::watch_entries;
use crate::storage::JetStreamBackend;

const KEY: &str = "registry";
/// Compare-and-set attempts before a change gives up.
const UPDATE_ATTEMPTS: usize = 16;

#[derive(Clone)]
pub struct SharedSchemas {
    kv: kv::Store,
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("JetStream schemas: {what}: {error}"))
}

/// The registry in an entry's value; an empty registry for a deleted key. A document
/// that does not parse is logged and read as empty (never a panic).
fn decode(operation: Operation, value: &[u8]) -> SchemaRegistry {
    if operation != Operation::Put {
        return SchemaRegistry::new();
    }
    serde_json::from_slice(value).unwrap_or_else(|error| {
        tracing::error!(%error, "shared schema registry does not parse; read as empty");
        SchemaRegistry::new()
    })
}

impl SharedSchemas {
    pub async fn open(backend: &JetStreamBackend) -> Result<Self, BrokerError> {
        let bucket = format!("{}_schemas", backend.config().prefix);
        let kv = backend.key_value(&bucket, "Herald schema registry").await?;
        Ok(Self { kv })
    }

    /// The registry and its revision (0: never written).
    pub async fn load(&self) -> Result<(SchemaRegistry, u64), BrokerError> {
        let entry = self
            .kv
            .entry(KEY)
            .await
            .map_err(|e| unavailable("reading", e))?;
        Ok(match entry {
            Some(e) => (decode(e.operation, &e.value), e.revision),
            None => (SchemaRegistry::new(), 0),
        })
    }

    /// Applies `change` to the stored registry and writes it; returns the change's outcome,
    /// the registry written and its revision. An error from `change` writes nothing.
    pub async fn update<T>(
        &self,
        change: impl Fn(&mut SchemaRegistry) -> Result<T, BrokerError>,
    ) -> Result<(T, SchemaRegistry, u64), BrokerError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let (mut registry, revision) = self.load().await?;
            let outcome = change(&mut registry)?;
            let value = serde_json::to_vec(&registry).map_err(|e| unavailable("encoding", e))?;
            match self.kv.update(KEY, Bytes::from(value), revision).await {
                Ok(written) => return Ok((outcome, registry, written)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(unavailable("writing", e)),
            }
        }
        Err(BrokerError::Unavailable(
            "JetStream schemas: other gateways kept changing the registry; retry".into(),
        ))
    }

    /// Registries written after `revision`, as they happen, each with its revision.
    pub async fn watch(
        &self,
        revision: u64,
    ) -> Result<
        impl futures::Stream<Item = (u64, (u64, SchemaRegistry))> + Send + 'static,
        BrokerError,
    > {
        let watch = watch_entries(&self.kv, revision, "schemas").await?;
        Ok(watch.filter_map(|entry| async move {
            let registry = decode(entry.operation, &entry.value);
            (entry.key == KEY).then_some((entry.revision, (entry.revision, registry)))
        }))
    }
}
