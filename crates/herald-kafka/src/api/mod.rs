//! One module per Kafka API; [`handle`] dispatches a decoded request to it.
//!
//! Owns: [`Shared`] (what every handler may use: the broker, the options, producer state,
//! the group coordinator) and [`Session`] (per connection). Handlers never fail as a
//! whole: every problem becomes a Kafka error code in the response.

use herald_broker::storage::node_registry::owner_of;
use herald_broker::{Broker, TopicConfig};
use kafka_protocol::messages::{RequestHeader, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;

use crate::groups::coordinator::Coordinator;
use crate::producer::Producers;
use crate::KafkaOptions;

pub mod api_versions;
pub mod authorize;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod produce;
pub mod sasl;
pub mod sync_group;

/// Herald's node id when it is the only broker of its cluster (embedded storage). On
/// JetStream storage every gateway has its own id from the shared node registry.
pub const NODE_ID: i32 = 0;
/// Answer to a group request sent to a gateway that does not coordinate the group: the
/// client looks the coordinator up again (FindCoordinator) and retries there.
pub const NOT_COORDINATOR: i16 = 16;
/// Cluster id reported in Metadata.
pub const CLUSTER_ID: &str = "herald";

/// State every handler shares.
pub struct Shared {
    pub broker: Broker,
    pub options: KafkaOptions,
    pub producers: Producers,
    pub coordinator: Coordinator,
    /// Flips to true at shutdown: long polls end.
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    pub fn new(broker: Broker, options: KafkaOptions, stop: watch::Receiver<bool>) -> Self {
        Self {
            coordinator: Coordinator::new(options.groups.clone()),
            broker,
            options,
            producers: Producers::new(),
            stop,
        }
    }

    /// Host and port clients are told to connect to.
    pub fn advertised(&self) -> (StrBytes, i32) {
        let addr = self.options.advertised_addr;
        (
            StrBytes::from_string(addr.ip().to_string()),
            i32::from(addr.port()),
        )
    }

    /// This gateway's node: id, host and port.
    pub fn node(&self) -> (i32, StrBytes, i32) {
        let (host, port) = self.advertised();
        let id = self
            .options
            .cluster
            .as_ref()
            .map_or(NODE_ID, |cluster| cluster.me().id);
        (id, host, port)
    }

    /// The nodes reported as brokers: every live gateway (just this one without a
    /// cluster, or while it sees no live node).
    pub fn brokers(&self) -> Vec<(i32, StrBytes, i32)> {
        let live = self
            .options
            .cluster
            .as_ref()
            .map(|cluster| cluster.live())
            .unwrap_or_default();
        if live.is_empty() {
            return vec![self.node()];
        }
        live.into_iter().map(node_address).collect()
    }

    /// The nodes `topic`'s partitions `0..partitions` are reported as led by. Any gateway
    /// serves any partition; spreading leadership over the live nodes spreads clients'
    /// connections the way a Kafka cluster does, and every gateway reports the same
    /// leaders.
    pub fn partition_leaders(&self, topic: &str, partitions: u32) -> Vec<i32> {
        let Some(cluster) = &self.options.cluster else {
            return vec![NODE_ID; partitions as usize];
        };
        let live = cluster.live();
        let me = self.node().0;
        (0..partitions)
            .map(|p| owner_of(&format!("partition/{topic}/{p}"), &live).map_or(me, |node| node.id))
            .collect()
    }

    /// The coordinator of `group`; `None` when no gateway is live to coordinate it.
    pub fn coordinator_of(&self, group: &str) -> Option<(i32, StrBytes, i32)> {
        match &self.options.cluster {
            Some(cluster) => cluster.owner(&group_key(group)).map(node_address),
            None => Some(self.node()),
        }
    }

    /// Whether this gateway coordinates `group` (always on embedded storage). Group
    /// requests for a group coordinated elsewhere answer `NOT_COORDINATOR`.
    pub fn coordinates(&self, group: &str) -> bool {
        match &self.options.cluster {
            Some(cluster) => cluster
                .owner(&group_key(group))
                .is_some_and(|node| node.id == cluster.me().id),
            None => true,
        }
    }

    /// The topic, created with the default partition count when it does not exist and
    /// auto-creation is on (and `allowed` by the request).
    pub async fn topic_or_create(
        &self,
        name: &str,
        allowed: bool,
    ) -> Result<std::sync::Arc<herald_broker::topic::Topic>, herald_broker::BrokerError> {
        match self.broker.topic(name) {
            Err(herald_broker::BrokerError::TopicNotFound(_))
                if allowed && self.options.auto_create_topics =>
            {
                let config = TopicConfig::with_partitions(self.options.default_partitions.max(1));
                match self.broker.create_topic(name, config).await {
                    Ok(_) | Err(herald_broker::BrokerError::TopicExists(_)) => {
                        tracing::info!(topic = name, "kafka: topic auto-created");
                    }
                    Err(e) => return Err(e),
                }
                self.broker.topic(name)
            }
            other => other,
        }
    }
}

fn group_key(group: &str) -> String {
    format!("group/{group}")
}

fn node_address(node: herald_broker::storage::KafkaNode) -> (i32, StrBytes, i32) {
    (
        node.id,
        StrBytes::from_string(node.host),
        i32::from(node.port),
    )
}

/// What a connection knows about its client.
#[derive(Debug, Default)]
pub struct Session {
    pub client_id: String,
    /// `/IP` of the peer, as Kafka reports client hosts.
    pub client_host: String,
    /// Who the client authenticated as (SASL, or a TLS client certificate).
    pub principal: Option<herald_auth::Principal>,
    /// SASL login progress.
    pub sasl: sasl::SaslState,
    /// Close the connection once the current response is sent (failed login).
    pub close_after_reply: bool,
}

impl Session {
    pub fn new(client_host: String) -> Self {
        Self {
            client_host,
            ..Self::default()
        }
    }
}

/// Handles one request on a connection, with SASL and ACLs when the listener has a
/// user store. `None` means no response is sent (Produce with `acks=0`).
pub async fn dispatch(
    shared: &Shared,
    session: &mut Session,
    header: &RequestHeader,
    request: RequestKind,
) -> Option<ResponseKind> {
    match request {
        RequestKind::SaslHandshake(r) => Some(ResponseKind::SaslHandshake(sasl::handshake(
            shared, session, &r,
        ))),
        RequestKind::SaslAuthenticate(r) => Some(ResponseKind::SaslAuthenticate(
            sasl::authenticate(shared, session, r).await,
        )),
        request if shared.options.auth.is_some() => {
            authorize::handle_authorized(shared, session, header, request).await
        }
        request => handle(shared, session, header, request).await,
    }
}

/// Handles one request. `None` means no response is sent (Produce with `acks=0`).
pub async fn handle(
    shared: &Shared,
    session: &Session,
    header: &RequestHeader,
    request: RequestKind,
) -> Option<ResponseKind> {
    let version = header.request_api_version;
    Some(match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(&r)),
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(metadata::handle(shared, version, r).await)
        }
        RequestKind::Produce(r) => {
            return produce::handle(shared, session, version, r)
                .await
                .map(ResponseKind::Produce)
        }
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(shared, version, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::handle(shared, version, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(shared, version, r))
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(join_group::handle(shared, session, version, r).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(sync_group::handle(shared, version, r).await)
        }
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(shared, r)),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(leave_group::handle(shared, version, r))
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(shared, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offset_fetch::handle(shared, version, r))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups::handle(shared, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(shared, r))
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(shared, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(shared, version, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(shared, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(shared, r))
        }
        other => {
            // The decoder lets only advertised api keys through; this is unreachable
            // unless the table and this match disagree.
            tracing::error!(request = ?std::mem::discriminant(&other), "kafka: no handler for an advertised api");
            return None;
        }
    })
}

#[cfg(test)]
mod tests;

/// A `StrBytes` from any string.
pub fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// A `TopicName` from any string.
pub fn topic_name(s: impl Into<String>) -> TopicName {
    TopicName(text(s))
}

/// Kafka's `INT64` offsets from Herald's `u64` ones.
pub fn offset_i64(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}
