//! Definitions every gateway on one JetStream shares (bus subscriptions): a KV bucket
//! (`<PREFIX>_definitions`), key `<namespace>.<name>`, value the definition's bytes
//! (opaque here). Invariant: a definition is created with KV `create` (atomic: of two
//! gateways creating one name, exactly one succeeds) and every gateway follows the bucket.

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::error::BrokerError;
use crate::storage::kv::{escape_key, load_entries, unescape_key, watch_entries};
use crate::storage::JetStreamBackend;

/// One namespace of shared definitions.
#[derive(Clone)]
pub struct SharedDefinitions {
    kv: kv::Store,
    namespace: String,
}

/// A definition written or removed by any gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionChange {
    pub name: String,
    /// `None`: removed.
    pub value: Option<Bytes>,
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("JetStream shared definitions: {what}: {error}"))
}

impl SharedDefinitions {
    pub async fn open(backend: &JetStreamBackend, namespace: &str) -> Result<Self, BrokerError> {
        let bucket = format!("{}_definitions", backend.config().prefix);
        let kv = backend
            .key_value(&bucket, "Herald definitions shared by every gateway")
            .await?;
        Ok(Self {
            kv,
            namespace: escape_key(namespace),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}.{}", self.namespace, escape_key(name))
    }

    /// The name a key of this namespace stands for.
    fn name_of(&self, key: &str) -> Option<String> {
        let (namespace, name) = key.split_once('.')?;
        (namespace == self.namespace).then(|| unescape_key(name))
    }

    /// Stores `value` under `name` unless a definition of that name exists: `false` then.
    pub async fn create(&self, name: &str, value: Bytes) -> Result<bool, BrokerError> {
        let key = self.key(name);
        match self.kv.create(&key, value).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(unavailable(format_args!("creating {key}"), e)),
        }
    }

    /// Removes `name` (no-op when absent).
    pub async fn remove(&self, name: &str) -> Result<(), BrokerError> {
        let key = self.key(name);
        self.kv
            .delete(&key)
            .await
            .map_err(|e| unavailable(format_args!("removing {key}"), e))
    }

    /// Every definition of the namespace, and the revision to follow changes from.
    pub async fn load(&self) -> Result<(Vec<(String, Bytes)>, u64), BrokerError> {
        let (entries, revision) = load_entries(&self.kv, "shared definitions").await?;
        let definitions = entries
            .into_iter()
            .filter(|e| e.operation == Operation::Put)
            .filter_map(|e| Some((self.name_of(&e.key)?, e.value)))
            .collect();
        Ok((definitions, revision))
    }

    /// The namespace's changes after `revision`, as they happen (ends if the watch
    /// does; the caller reloads and follows again).
    pub async fn watch(
        &self,
        revision: u64,
    ) -> Result<impl Stream<Item = DefinitionChange> + Send + 'static, BrokerError> {
        let this = self.clone();
        let changes = watch_entries(&self.kv, revision, "shared definitions").await?;
        Ok(changes.filter_map(move |entry| {
            let name = this.name_of(&entry.key);
            async move {
                Some(DefinitionChange {
                    name: name?,
                    value: (entry.operation == Operation::Put).then_some(entry.value),
                })
            }
        }))
    }
}
