//! Topic metadata shared by every gateway on one JetStream: a KV bucket (`<PREFIX>_topics`)
//! with one key per topic. Creating claims the name atomically (KV `create`), so two
//! gateways cannot both create a topic; each gateway follows the bucket to open and close
//! topics made or deleted elsewhere. Invariant: a key is `escape_key(name)`, never a raw name.

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;

use crate::error::BrokerError;
use crate::metadata::TopicMeta;
use crate::storage::kv::{escape_key, load_entries, unescape_key, watch_entries};
use crate::storage::JetStreamBackend;

/// A change seen in the registry.
#[derive(Debug)]
pub enum TopicChange {
    Created(TopicMeta),
    Deleted(String),
}

#[derive(Clone)]
pub struct TopicRegistry {
    kv: kv::Store,
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("JetStream topic registry: {what}: {error}"))
}

impl TopicRegistry {
    /// Opens (creating) the registry bucket.
    pub async fn open(backend: &JetStreamBackend) -> Result<Self, BrokerError> {
        let bucket = format!("{}_topics", backend.config().prefix);
        let kv = backend.key_value(&bucket, "Herald topic metadata").await?;
        Ok(Self { kv })
    }

    /// Every topic, and the revision to follow changes from (exclusive).
    pub async fn load_all(&self) -> Result<(Vec<TopicMeta>, u64), BrokerError> {
        let (entries, revision) = load_entries(&self.kv, "topic registry").await?;
        let mut metas = Vec::new();
        for entry in entries {
            match serde_json::from_slice::<TopicMeta>(&entry.value) {
                Ok(meta) if meta.name == unescape_key(&entry.key) => metas.push(meta),
                Ok(meta) => {
                    tracing::error!(key = %entry.key, name = %meta.name, "topic registry entry names another topic; skipped")
                }
                Err(error) => {
                    tracing::error!(key = %entry.key, %error, "topic registry entry does not parse; skipped")
                }
            }
        }
        Ok((metas, revision))
    }

    /// Claims `meta.name`; `TopicExists` if any gateway already has it.
    pub async fn create(&self, meta: &TopicMeta) -> Result<(), BrokerError> {
        let value = serde_json::to_vec(meta).map_err(|e| unavailable("encoding", e))?;
        match self
            .kv
            .create(escape_key(&meta.name), Bytes::from(value))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(BrokerError::TopicExists(meta.name.clone()))
            }
            Err(e) => Err(unavailable(format_args!("creating topic {}", meta.name), e)),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), BrokerError> {
        self.kv
            .delete(escape_key(name))
            .await
            .map_err(|e| unavailable(format_args!("deleting topic {name}"), e))
    }

    /// Changes after `revision`, as they happen. The stream ends if the connection's
    /// watcher fails; the caller re-creates it from the last revision it saw.
    pub async fn watch(
        &self,
        revision: u64,
    ) -> Result<impl futures::Stream<Item = (u64, TopicChange)> + Send + 'static, BrokerError> {
        let watch = watch_entries(&self.kv, revision, "topic registry").await?;
        Ok(watch.filter_map(|entry| async move {
            let name = unescape_key(&entry.key);
            let change = match entry.operation {
                Operation::Delete | Operation::Purge => TopicChange::Deleted(name),
                Operation::Put => match serde_json::from_slice::<TopicMeta>(&entry.value) {
                    Ok(meta) if meta.name == name => TopicChange::Created(meta),
                    _ => {
                        tracing::error!(key = %entry.key, "topic registry entry does not parse; ignored");
                        return None;
                    }
                },
            };
            Some((entry.revision, change))
        }))
    }
}
