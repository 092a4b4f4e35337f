//! Names that belong to one gateway among all gateways on one JetStream: a KV bucket
//! (`<PREFIX>_claims`), key `<namespace>.<name>`, value the owning gateway's id. Used for
//! what still runs on a single gateway (bus subscriptions), so two gateways can never run
//! the same one. Invariant: a claim is taken with KV `create` (atomic) and only its owner
//! releases it.

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;

use crate::error::BrokerError;
use crate::storage::kv::escape_key;
use crate::storage::JetStreamBackend;

#[derive(Clone)]
pub struct NameClaims {
    kv: kv::Store,
    gateway: String,
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("JetStream name claims: {what}: {error}"))
}

fn claim_key(namespace: &str, name: &str) -> String {
    format!("{}.{}", escape_key(namespace), escape_key(name))
}

impl NameClaims {
    pub async fn open(backend: &JetStreamBackend, gateway: String) -> Result<Self, BrokerError> {
        let bucket = format!("{}_claims", backend.config().prefix);
        let kv = backend
            .key_value(&bucket, "Herald names owned by one gateway")
            .await?;
        Ok(Self { kv, gateway })
    }

    /// The gateway holding `name` in `namespace`, if any.
    pub async fn owner(&self, namespace: &str, name: &str) -> Result<Option<String>, BrokerError> {
        let key = claim_key(namespace, name);
        let entry = self
            .kv
            .entry(&key)
            .await
            .map_err(|e| unavailable(format_args!("reading {key}"), e))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Claims `name` for this gateway: `None` when it now holds it (or already did), else
    /// the gateway that does.
    pub async fn claim(&self, namespace: &str, name: &str) -> Result<Option<String>, BrokerError> {
        let key = claim_key(namespace, name);
        let value = Bytes::from(self.gateway.clone().into_bytes());
        match self.kv.create(&key, value).await {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.owner(namespace, name).await? {
                    Some(owner) if owner == self.gateway => Ok(None),
                    Some(owner) => Ok(Some(owner)),
                    // Released in between: try once more.
                    None => match self
                        .kv
                        .create(&key, Bytes::from(self.gateway.clone().into_bytes()))
                        .await
                    {
                        Ok(_) => Ok(None),
                        Err(e) => Err(unavailable(format_args!("claiming {key}"), e)),
                    },
                }
            }
            Err(e) => Err(unavailable(format_args!("claiming {key}"), e)),
        }
    }

    /// Releases a claim this gateway holds (no-op for one held elsewhere or by nobody).
    pub async fn release(&self, namespace: &str, name: &str) -> Result<(), BrokerError> {
        if self.owner(namespace, name).await?.as_deref() != Some(self.gateway.as_str()) {
            return Ok(());
        }
        let key = claim_key(namespace, name);
        self.kv
            .purge(&key)
            .await
            .map_err(|e| unavailable(format_args!("releasing {key}"), e))
    }
}
