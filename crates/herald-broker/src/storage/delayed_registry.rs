//! Delayed delivery shared by every gateway on one JetStream: a KV bucket
//! (`<PREFIX>_delayed`) holding the delivery lease (`leader`: the gateway that delivers
//! due events) and the checkpoint of delivered offsets of the shared delayed topic.
//! Invariant: both keys are only ever written by compare-and-set on the revision the
//! writer last saw, so a gateway that lost the lease can neither renew it nor move the
//! checkpoint.

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;

use crate::error::BrokerError;
use crate::storage::JetStreamBackend;

const LEADER_KEY: &str = "leader";
const CHECKPOINT_KEY: &str = "checkpoint";

#[derive(Clone)]
pub struct DelayedRegistry {
    kv: kv::Store,
    gateway: String,
}

/// Who holds the delivery lease, as last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The holder's gateway id; `None` when the key is missing or deleted.
    pub holder: Option<String>,
    /// The key's revision (0 when it was never written): what a claim must name.
    pub revision: u64,
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("JetStream delayed delivery: {what}: {error}"))
}

impl DelayedRegistry {
    pub async fn open(backend: &JetStreamBackend, gateway: String) -> Result<Self, BrokerError> {
        let bucket = format!("{}_delayed", backend.config().prefix);
        let kv = backend
            .key_value(&bucket, "Herald delayed delivery lease and checkpoint")
            .await?;
        Ok(Self { kv, gateway })
    }

    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// The value and revision of `key` (`None` value when missing or deleted).
    async fn read(&self, key: &str) -> Result<(Option<Bytes>, u64), BrokerError> {
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| unavailable(format_args!("reading {key}"), e))?;
        Ok(match entry {
            Some(e) if e.operation == Operation::Put => (Some(e.value), e.revision),
            Some(e) => (None, e.revision),
            None => (None, 0),
        })
    }

    /// Writes `key` if its revision is still `revision`; `None` if someone else wrote it.
    async fn swap(
        &self,
        key: &str,
        value: Bytes,
        revision: u64,
    ) -> Result<Option<u64>, BrokerError> {
        match self.kv.update(key, value, revision).await {
            Ok(written) => Ok(Some(written)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(unavailable(format_args!("writing {key}"), e)),
        }
    }

    pub async fn lease(&self) -> Result<LeaseState, BrokerError> {
        let (value, revision) = self.read(LEADER_KEY).await?;
        let holder = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        Ok(LeaseState { holder, revision })
    }

    /// Takes (or renews) the lease if it is still at `revision`; the new revision, or
    /// `None` when another gateway wrote it first.
    pub async fn claim(&self, revision: u64) -> Result<Option<u64>, BrokerError> {
        let value = Bytes::from(self.gateway.clone().into_bytes());
        self.swap(LEADER_KEY, value, revision).await
    }

    /// The stored checkpoint (JSON; `None` before the first delivery) and its revision.
    pub async fn checkpoint(&self) -> Result<(Option<Bytes>, u64), BrokerError> {
        self.read(CHECKPOINT_KEY).await
    }

    /// Stores the checkpoint if it is still at `revision`; `None` if another gateway wrote it.
    pub async fn store_checkpoint(
        &self,
        checkpoint: Vec<u8>,
        revision: u64,
    ) -> Result<Option<u64>, BrokerError> {
        self.swap(CHECKPOINT_KEY, Bytes::from(checkpoint), revision)
            .await
    }
}
