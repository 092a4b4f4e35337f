//! Topic metadata shared by every gateway on one JetStream: a KV bucket (`<PREFIX>_topics`)
//! with one key per topic. Creating claims the name atomically (KV `create`), so two
//! gateways cannot both create a topic; each gateway follows the bucket to open and close
//! topics made or deleted elsewhere. Invariant: a key is `escape(name)`, never a raw name.

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;

use crate::error::BrokerError;
use crate::metadata::TopicMeta;
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

/// Topic names use `[A-Za-z0-9._-]`; KV keys may not start or end with `.`, so `.` is
/// written `=2E` (`=` never occurs in a topic name, so this is reversible).
fn escape(name: &str) -> String {
    name.replace('.', "=2E")
}

fn unescape(key: &str) -> String {
    key.replace("=2E", ".")
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
        let status = self
            .kv
            .status()
            .await
            .map_err(|e| unavailable("reading the bucket", e))?;
        let revision = status.info.state.last_sequence;
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| unavailable("listing topics", e))?;
        let mut metas = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| unavailable("listing topics", e))?;
            let Some(value) = self
                .kv
                .get(&key)
                .await
                .map_err(|e| unavailable(format_args!("reading topic {key}"), e))?
            else {
                continue;
            };
            match serde_json::from_slice::<TopicMeta>(&value) {
                Ok(meta) if meta.name == unescape(&key) => metas.push(meta),
                Ok(meta) => {
                    tracing::error!(key, name = %meta.name, "topic registry entry names another topic; skipped")
                }
                Err(error) => {
                    tracing::error!(key, %error, "topic registry entry does not parse; skipped")
                }
            }
        }
        Ok((metas, revision))
    }

    /// Claims `meta.name`; `TopicExists` if any gateway already has it.
    pub async fn create(&self, meta: &TopicMeta) -> Result<(), BrokerError> {
        let value = serde_json::to_vec(meta).map_err(|e| unavailable("encoding", e))?;
        match self.kv.create(escape(&meta.name), Bytes::from(value)).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(BrokerError::TopicExists(meta.name.clone()))
            }
            Err(e) => Err(unavailable(format_args!("creating topic {}", meta.name), e)),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), BrokerError> {
        self.kv
            .purge(escape(name))
            .await
            .map_err(|e| unavailable(format_args!("deleting topic {name}"), e))
    }

    /// Changes after `revision`, as they happen. The stream ends if the connection's
    /// watcher fails; the caller re-creates it from the last revision it saw.
    pub async fn watch(
        &self,
        revision: u64,
    ) -> Result<impl futures::Stream<Item = (u64, TopicChange)> + Send + 'static, BrokerError> {
        let watch = self
            .kv
            .watch_all_from_revision(revision + 1)
            .await
            .map_err(|e| unavailable("watching", e))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    tracing::warn!(%error, "topic registry watch failed");
                    return None;
                }
            };
            let name = unescape(&entry.key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_start_with_a_dot() {
        for name in [".a", "a.b.c", "x", "a..b", "-_.-"] {
            let key = escape(name);
            assert!(!key.contains('.'), "{key}");
            assert_eq!(unescape(&key), name);
        }
    }
}
