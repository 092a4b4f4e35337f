//! Herald's broker engine, shared by every front-end (HTTP, Kafka, embedded SDK).
//!
//! - [`broker`]: the [`Broker`] handle: topics, publish, fetch, long-poll, retention.
//! - [`topic`]: one topic = N [`herald_log::PartitionLog`]s + partitioner state.
//! - [`metadata`]: durable topic metadata and the data-directory layout.
//! - [`group`]: consumer groups: membership, assignment, rebalance, positions.
//! - [`offsets`]: durable committed offsets per group.
//! - [`schemas`]: the durable JSON Schema registry checked at publish.
//! - [`record`]: [`EventRecord`], an event with its position in the log.
//! - [`config`]: broker and per-topic configuration.
//! - [`delay`]: delayed delivery through an internal topic and a durable schedule.
//! - [`activity`]: recent publish rates per topic and producer source (console).
//! - [`storage`]: where partitions live: the embedded log or JetStream.
//! - [`dedup`]: per-topic publish deduplication by (source, id) within a window.
//!
//! Invariants: every name reaching the file system passed [`herald_core::name::validate_name`];
//! a publish is acknowledged only after its partition log acknowledged it (durable under
//! the topic's fsync policy); committed offsets never move backwards except by an
//! explicit reset of an empty group.

pub mod activity;
pub mod broker;
pub mod config;
pub mod dedup;
pub mod delay;
pub mod error;
pub mod group;
pub mod metadata;
pub mod offsets;
pub mod record;
pub mod schemas;
pub mod storage;
pub mod topic;

pub use broker::{Broker, FetchResult, PublishReceipt, ScheduledReceipt, SeekPosition};
pub use config::{BrokerConfig, FsyncMode, TopicConfig};
pub use error::BrokerError;
pub use group::{Assignment, GroupDescription, JoinOptions, MemberFetch, OffsetReset};
pub use record::EventRecord;
pub use storage::{Appended, JetStreamConfig, PartitionStore};
