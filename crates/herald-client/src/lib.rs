//! Herald's Rust SDK. One API, two transports:
//!
//! - [`Herald::connect`]: talk to a `herald serve` over HTTP.
//! - [`Herald::open`]: embedded mode: run the broker in-process on a data directory,
//!   with no server (same durability, same semantics).
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_client::ClientError> {
//! use herald_client::{Herald, CloudEvent, TopicConfig, SeekPosition};
//! let herald = Herald::open("./data").await?;          // or Herald::connect("http://127.0.0.1:8080")?
//! herald.create_topic("orders", TopicConfig::with_partitions(3)).await?;
//! let event = CloudEvent::new("o-1", "/shop", "order.created").with_extension("partitionkey", "cust-7");
//! let receipt = herald.publish("orders", event).await?;
//! let page = herald.fetch("orders", receipt.partition, SeekPosition::Earliest, 100, std::time::Duration::ZERO).await?;
//! # Ok(()) }
//! ```
//!
//! [`trace`]: continue W3C traces: [`trace::child_traceparent`] gives a handler the
//! context of its span; [`Herald::publish_in_trace`] publishes under a parent context.

mod error;
mod persistent;
mod remote;
mod streams;
pub mod trace;

use std::path::PathBuf;
use std::time::Duration;

pub use error::ClientError;
pub use herald_broker::{
    Assignment, EventRecord, FetchResult, FsyncMode, JoinOptions, OffsetReset, PublishReceipt,
    ScheduledReceipt, SeekPosition, TopicConfig,
};
use herald_broker::{Broker, BrokerConfig};
pub use herald_core::{CloudEvent, Data, ExtensionValue};
pub use herald_eventstore::{
    AppendResult, Direction, EventStore, EventStoreConfig, ExpectedVersion, RecordedEvent,
    Snapshot, StreamDescription, StreamInfo, StreamMetadata, SubscriptionTarget,
};
pub use herald_eventstore::{
    CreatePersistent, NackAction, ParkedEvent, PersistentEvent, PersistentInfo,
    ReceiptOutcome as PersistentOutcome, StartFrom,
};
use serde::{Deserialize, Serialize};
pub use streams::CatchUpSubscription;

use crate::remote::Remote;

/// A topic as described by the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
    pub created_at: String,
    pub partition_stats: Vec<PartitionInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub start_offset: u64,
    pub end_offset: u64,
    pub size_bytes: u64,
}

/// A consumer group as described by the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupInfo {
    pub name: String,
    pub generation: u64,
    pub members: Vec<MemberInfo>,
    pub offsets: Vec<GroupOffset>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemberInfo {
    pub member_id: String,
    pub topics: Vec<String>,
    pub assignments: Vec<AssignmentInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssignmentInfo {
    pub topic: String,
    pub partition: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupOffset {
    pub topic: String,
    pub partition: u32,
    pub committed: Option<u64>,
    pub end_offset: u64,
    pub lag: u64,
}

/// A handle to Herald, remote or embedded. Cheap to clone.
#[derive(Clone)]
pub struct Herald {
    transport: Transport,
    /// The event store, in embedded mode (`<data_dir>/eventstore`).
    eventstore: Option<EventStore>,
}

#[derive(Clone)]
enum Transport {
    Remote(Remote),
    Embedded(Broker),
}

/// How to reach a server that requires credentials or TLS.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// API token sent as `Authorization: Bearer` (see `herald auth add-token`).
    pub token: Option<String>,
    /// PEM root certificate(s) to trust for `https://` URLs (e.g. a private CA).
    pub ca_cert_pem: Option<Vec<u8>>,
    /// PEM client certificate chain + private key for mutual TLS.
    pub client_identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert_pem", &self.ca_cert_pem.is_some())
            .field("client_identity_pem", &self.client_identity_pem.is_some())
            .finish()
    }
}

/// The HTTP client the SDK and CLI use: connect timeout, token header (marked
/// sensitive so it is never logged), extra roots and client identity.
pub fn http_client(options: &ConnectOptions) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5));
    if let Some(token) = &options.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| {
                ClientError::Protocol("the token has characters a header cannot carry".into())
            })?;
        value.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    if let Some(pem) = &options.ca_cert_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(pem) = &options.client_identity_pem {
        builder = builder.identity(reqwest::Identity::from_pem(pem)?);
    }
    Ok(builder.build()?)
}

impl Herald {
    /// Connects to a server, e.g. `http://127.0.0.1:8080`. No request is made yet.
    pub fn connect(base_url: &str) -> Result<Self, ClientError> {
        Self::connect_with(base_url, &ConnectOptions::default())
    }

    /// Connects with a token and/or TLS settings.
    pub fn connect_with(base_url: &str, options: &ConnectOptions) -> Result<Self, ClientError> {
        Ok(Self {
            transport: Transport::Remote(Remote::new(base_url, options)?),
            eventstore: None,
        })
    }

    /// Opens an embedded broker on `data_dir` (created if missing). Needs a tokio runtime.
    pub async fn open(data_dir: impl Into<PathBuf>) -> Result<Self, ClientError> {
        Self::open_with(BrokerConfig::new(data_dir)).await
    }

    /// Embedded mode with explicit broker settings.
    pub async fn open_with(config: BrokerConfig) -> Result<Self, ClientError> {
        let eventstore_dir = config.data_dir.join("eventstore");
        let broker = Broker::open(config).await?;
        let eventstore = streams::open_embedded(eventstore_dir).await?;
        Ok(Self {
            transport: Transport::Embedded(broker),
            eventstore: Some(eventstore),
        })
    }

    /// The in-process broker, in embedded mode.
    pub fn embedded_broker(&self) -> Option<&Broker> {
        match &self.transport {
            Transport::Embedded(b) => Some(b),
            Transport::Remote(_) => None,
        }
    }

    pub async fn create_topic(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> Result<TopicInfo, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.create_topic(name, &config).await,
            Transport::Embedded(b) => {
                b.create_topic(name, config).await?;
                embedded_topic_info(b, name)
            }
        }
    }

    /// User topics (internal `__` topics are left out, as over HTTP).
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.list_topics().await,
            Transport::Embedded(b) => b
                .list_topics()
                .iter()
                .filter(|m| !m.name.starts_with("__"))
                .map(|m| embedded_topic_info(b, &m.name))
                .collect(),
        }
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.describe_topic(name).await,
            Transport::Embedded(b) => embedded_topic_info(b, name),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.delete_topic(name).await,
            Transport::Embedded(b) => Ok(b.delete_topic(name).await?),
        }
    }

    /// Publishes one event; resolves once it is durable.
    pub async fn publish(
        &self,
        topic: &str,
        event: CloudEvent,
    ) -> Result<PublishReceipt, ClientError> {
        let mut receipts = self.publish_batch(topic, vec![event]).await?;
        receipts
            .pop()
            .ok_or_else(|| ClientError::Protocol("empty publish response".into()))
    }

    /// Publishes one event as part of the trace `parent` (its `traceparent` /
    /// `tracestate` extensions are set to `parent`), e.g. a follow-up event published by
    /// a handler with the context from [`trace::child_traceparent`].
    pub async fn publish_in_trace(
        &self,
        topic: &str,
        mut event: CloudEvent,
        parent: &trace::TraceContext,
    ) -> Result<PublishReceipt, ClientError> {
        parent.stamp(&mut event);
        self.publish(topic, event).await
    }

    /// Publishes a batch (one atomic append per partition); receipts in input order.
    pub async fn publish_batch(
        &self,
        topic: &str,
        events: Vec<CloudEvent>,
    ) -> Result<Vec<PublishReceipt>, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.publish(topic, &events).await,
            Transport::Embedded(b) => Ok(b.publish(topic, events, None).await?),
        }
    }

    /// Publishes events that become visible at `deliver_at_ms` (ms since the epoch).
    /// Returns the ids with their delivery times once the events are stored durably.
    pub async fn publish_delayed(
        &self,
        topic: &str,
        events: Vec<CloudEvent>,
        deliver_at_ms: i64,
    ) -> Result<Vec<ScheduledReceipt>, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.publish_delayed(topic, &events, deliver_at_ms).await,
            Transport::Embedded(b) => {
                let entries = events
                    .into_iter()
                    .map(|e| (e.partition_key().map(bytes::Bytes::from), e))
                    .collect();
                Ok(b.publish_delayed(topic, entries, None, deliver_at_ms)
                    .await?)
            }
        }
    }

    /// Registers a JSON Schema for events of type `ty`; returns its version.
    pub async fn register_schema(
        &self,
        ty: &str,
        schema: &serde_json::Value,
    ) -> Result<u32, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.register_schema(ty, schema).await,
            Transport::Embedded(b) => Ok(b.register_schema(ty, schema, None).await?.version),
        }
    }

    /// The latest (or a given) version of a type's schema: (version, schema).
    pub async fn schema(
        &self,
        ty: &str,
        version: Option<u32>,
    ) -> Result<(u32, serde_json::Value), ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.schema(ty, version).await,
            Transport::Embedded(b) => Ok(b.schema(ty, version)?),
        }
    }

    /// Every type with a schema, as JSON summaries (`type`, `latest_version`, ...).
    pub async fn list_schemas(&self) -> Result<Vec<serde_json::Value>, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.list_schemas().await,
            Transport::Embedded(b) => b
                .list_schemas()
                .iter()
                .map(|s| serde_json::to_value(s).map_err(|e| ClientError::Protocol(e.to_string())))
                .collect(),
        }
    }

    /// Deletes every version of a type's schema.
    pub async fn delete_schema(&self, ty: &str) -> Result<(), ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.delete_schema(ty).await,
            Transport::Embedded(b) => b.delete_schema(ty).await.map(|_| ()).map_err(Into::into),
        }
    }

    /// Reads a partition from `position`, waiting up to `wait` for new events.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        position: SeekPosition,
        max: usize,
        wait: Duration,
    ) -> Result<FetchResult, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.fetch(topic, partition, position, max, wait).await,
            Transport::Embedded(b) => Ok(b.fetch(topic, partition, position, max, wait).await?),
        }
    }

    /// Joins a consumer group; the returned [`GroupConsumer`] polls and commits.
    pub async fn join_group(
        &self,
        group: &str,
        options: JoinOptions,
    ) -> Result<GroupConsumer, ClientError> {
        let member_id = match &self.transport {
            Transport::Remote(r) => r.join_group(group, &options).await?,
            Transport::Embedded(b) => b.join_group(group, options).await?.0,
        };
        Ok(GroupConsumer {
            herald: self.clone(),
            group: group.to_string(),
            member_id,
        })
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.list_groups().await,
            Transport::Embedded(b) => b
                .list_groups()
                .iter()
                .map(|g| embedded_group_info(b, g))
                .collect(),
        }
    }

    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.describe_group(group).await,
            Transport::Embedded(b) => embedded_group_info(b, group),
        }
    }

    /// Sets an empty group's committed offsets for `topic`.
    pub async fn reset_group(
        &self,
        group: &str,
        topic: &str,
        to: SeekPosition,
    ) -> Result<GroupInfo, ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.reset_group(group, topic, to).await,
            Transport::Embedded(b) => {
                b.reset_group(group, topic, to).await?;
                embedded_group_info(b, group)
            }
        }
    }

    /// Deletes an empty group and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        match &self.transport {
            Transport::Remote(r) => r.delete_group(group).await,
            Transport::Embedded(b) => Ok(b.delete_group(group).await?),
        }
    }

    /// Embedded mode: flushes and closes the broker and the event store. Remote: nothing.
    pub async fn close(&self) {
        if let Transport::Embedded(b) = &self.transport {
            b.shutdown().await;
        }
        if let Some(store) = self.eventstore.clone() {
            // Every acknowledged append is already durable; a failing close loses nothing
            // acknowledged, and there is no caller left to tell.
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
    }
}

/// A member of a consumer group.
pub struct GroupConsumer {
    herald: Herald,
    group: String,
    member_id: String,
}

impl GroupConsumer {
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Next events from the member's partitions (long-polls up to `wait`).
    pub async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<EventRecord>, ClientError> {
        match &self.herald.transport {
            Transport::Remote(r) => {
                r.member_fetch(&self.group, &self.member_id, max, wait)
                    .await
            }
            Transport::Embedded(b) => Ok(b
                .fetch_for_member(&self.group, &self.member_id, max, wait)
                .await?
                .events),
        }
    }

    /// Commits the member's current positions (everything polled so far).
    pub async fn commit(&self) -> Result<(), ClientError> {
        match &self.herald.transport {
            Transport::Remote(r) => r.member_commit(&self.group, &self.member_id).await,
            Transport::Embedded(b) => b
                .commit_offsets(&self.group, &self.member_id, None)
                .await
                .map(|_| ())
                .map_err(Into::into),
        }
    }

    /// Leaves the group (its partitions go to the other members).
    pub async fn leave(self) -> Result<(), ClientError> {
        match &self.herald.transport {
            Transport::Remote(r) => r.member_leave(&self.group, &self.member_id).await,
            Transport::Embedded(b) => Ok(b.leave_group(&self.group, &self.member_id).await?),
        }
    }
}

fn embedded_topic_info(b: &Broker, name: &str) -> Result<TopicInfo, ClientError> {
    let topic = b.topic(name)?;
    let stats = b.topic_stats(name)?;
    Ok(TopicInfo {
        name: topic.meta.name.clone(),
        partitions: topic.partition_count(),
        config: topic.meta.config.clone(),
        created_at: herald_broker::record::format_time_ms(topic.meta.created_at_ms),
        partition_stats: stats
            .into_iter()
            .map(|s| PartitionInfo {
                partition: s.partition,
                start_offset: s.start_offset,
                end_offset: s.end_offset,
                size_bytes: s.size_bytes,
            })
            .collect(),
    })
}

fn embedded_group_info(b: &Broker, group: &str) -> Result<GroupInfo, ClientError> {
    let d = b.describe_group(group)?;
    let assignment = |a: &Assignment| AssignmentInfo {
        topic: a.topic.clone(),
        partition: a.partition,
    };
    Ok(GroupInfo {
        name: d.name,
        generation: d.generation,
        members: d
            .members
            .iter()
            .map(|m| MemberInfo {
                member_id: m.member_id.clone(),
                topics: m.topics.clone(),
                assignments: m.assignments.iter().map(assignment).collect(),
            })
            .collect(),
        offsets: d
            .offsets
            .into_iter()
            .map(|o| GroupOffset {
                topic: o.topic,
                partition: o.partition,
                committed: o.committed,
                end_offset: o.end_offset,
                lag: o.lag,
            })
            .collect(),
    })
}
