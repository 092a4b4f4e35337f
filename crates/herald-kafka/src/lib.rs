//! Herald's Kafka wire-protocol listener: stock Kafka clients (librdkafka, the Java
//! client, kcat, ...) produce to and consume from the Herald broker unchanged, by pointing
//! their bootstrap address at it.
//!
//! A thin adapter over [`herald_broker::Broker`]: topics, partitions, offsets and
//! committed group offsets are the broker's, so a topic created over HTTP is visible here
//! and an event produced here is readable over HTTP/SSE. Herald is a single node: it is
//! broker 0, leader of every partition and coordinator of every group.
//!
//! Modules:
//! - [`frame`]: length-prefixed frames (pure).
//! - [`codec`]: frame → header + typed request, typed response → frame (pure; fuzzed).
//! - [`records`]: Kafka record batches ↔ CloudEvents (the CloudEvents Kafka binding).
//! - [`compression`]: bounded gzip/snappy/lz4/zstd decompression.
//! - [`producer`]: idempotent-producer ids and sequence numbers.
//! - [`groups`]: the classic consumer-group coordinator (in memory).
//! - [`api`]: one module per Kafka API.
//! - `api::sasl`, `api::authorize`: SASL/PLAIN and SCRAM-SHA-256 logins, ACLs per request.
//! - [`server`]: accept loop, connection cap, per-connection request loop, shutdown.
//! - [`alloc`]: the allocator that keeps a hostile array length from aborting the process.
//!
//! Not supported: transactions (transactional producers get an error at InitProducerId),
//! topic ids (Produce v13+, Fetch v13+), compacted topics, the KIP-848 consumer
//! protocol, fetch sessions (every fetch is a full fetch).
//!
//! Invariants: a malformed request closes only its own connection; an unsupported api or
//! version is answered with `UNSUPPORTED_VERSION`; nothing a client sends can make the
//! server allocate more than the bytes it sent (plus fixed limits) or panic.

#![deny(clippy::unwrap_used, clippy::panic)]
#![warn(clippy::expect_used)]
#![cfg_attr(test, allow(clippy::expect_used, clippy::unwrap_used, clippy::panic))]

pub mod alloc;
pub mod api;
pub mod codec;
pub mod compression;
pub mod error;
pub mod frame;
pub mod groups;
pub mod producer;
pub mod records;
pub mod server;

#[cfg(test)]
#[global_allocator]
static ALLOCATOR: alloc::LazyLargeAllocator = alloc::LazyLargeAllocator;

#[cfg(test)]
mod fuzz_smoke;

pub use alloc::LazyLargeAllocator;
pub use groups::coordinator::GroupOptions;
pub use server::serve;

use std::net::SocketAddr;

/// Default Kafka listen address.
pub const DEFAULT_KAFKA_ADDR: &str = "127.0.0.1:9092";

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// The address clients are told to connect to (Metadata, FindCoordinator): the bound
    /// address by default.
    pub advertised_addr: SocketAddr,
    /// Kafka's `auto.create.topics.enable`: Metadata and Produce create unknown topics.
    pub auto_create_topics: bool,
    /// Kafka's `num.partitions`: partitions of auto-created topics and of CreateTopics
    /// requests that leave the count to the server.
    pub default_partitions: u32,
    /// Most concurrent client connections; more wait in the accept queue.
    pub connections_max: usize,
    /// Largest request frame; a larger one closes the connection.
    pub frame_bytes_max: usize,
    /// Largest records section of one produced batch after decompression.
    pub batch_bytes_max: usize,
    /// Consumer-group coordinator settings.
    pub groups: GroupOptions,
    /// The gateways sharing one JetStream (`None` on embedded storage): each is a Kafka
    /// node with its own id; a group is coordinated by one of them (`FindCoordinator`).
    pub cluster: Option<std::sync::Arc<herald_broker::storage::NodeRegistry>>,
    /// User store and ACLs: when set, clients must log in with SASL (PLAIN or
    /// SCRAM-SHA-256) before any request but ApiVersions, and ACLs apply.
    pub auth: Option<std::sync::Arc<herald_auth::AuthStore>>,
    /// TLS (`SSL` / `SASL_SSL` security protocols); `None`: plaintext.
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Longest TLS handshake.
    pub tls_handshake_timeout: std::time::Duration,
    /// A connection with no request for this long is closed (Kafka's
    /// `connections.max.idle.ms`, default 10 minutes).
    pub idle_timeout: std::time::Duration,
    /// A request that has started must arrive in full within this time (slowloris).
    pub request_read_timeout: std::time::Duration,
    /// A response write blocked this long on a client that reads nothing closes it.
    pub write_stall_timeout: std::time::Duration,
}

impl KafkaOptions {
    pub fn new(advertised_addr: SocketAddr) -> Self {
        Self {
            advertised_addr,
            auto_create_topics: true,
            default_partitions: 1,
            connections_max: 1024,
            frame_bytes_max: frame::FRAME_BYTES_MAX_DEFAULT,
            batch_bytes_max: 32 * 1024 * 1024,
            groups: GroupOptions::default(),
            cluster: None,
            auth: None,
            tls: None,
            tls_handshake_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(600),
            request_read_timeout: std::time::Duration::from_secs(30),
            write_stall_timeout: std::time::Duration::from_secs(60),
        }
    }
}
