//! Metadata (key 3): brokers (just Herald) and topics with their partitions.
//!
//! Unknown topics are created when auto-creation is on and the request allows it (v4+
//! `allow_auto_topic_creation`; always for older versions, as Kafka does). On embedded
//! storage every partition is led by node 0, its only replica; on JetStream storage the
//! brokers are the live gateways and each partition is reported as led by one of them
//! (the same on every gateway; any gateway serves any partition).

use herald_broker::BrokerError;
use herald_core::name::validate_name;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use kafka_protocol::ResponseError;

use super::{text, topic_name, Shared, CLUSTER_ID, NODE_ID};
use crate::error::kafka_code;

pub async fn handle(shared: &Shared, version: i16, request: MetadataRequest) -> MetadataResponse {
    let brokers: Vec<MetadataResponseBroker> = shared
        .brokers()
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(host)
                .with_port(port)
        })
        .collect();
    let controller = brokers.first().map_or(NODE_ID, |b| b.node_id.0);
    let requested: Option<Vec<String>> = match request.topics {
        None => None,
        Some(topics) if version == 0 && topics.is_empty() => None,
        Some(topics) => Some(
            topics
                .into_iter()
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect(),
        ),
    };
    let allow_create = version < 4 || request.allow_auto_topic_creation;
    let mut topics = Vec::new();
    match requested {
        None => {
            for meta in shared.broker.list_topics() {
                topics.push(describe(shared, &meta.name, meta.config.partitions));
            }
        }
        Some(names) => {
            for name in names {
                topics.push(lookup(shared, &name, allow_create).await);
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(text(CLUSTER_ID)))
        .with_controller_id(BrokerId(controller))
        .with_topics(topics)
}

async fn lookup(shared: &Shared, name: &str, allow_create: bool) -> MetadataResponseTopic {
    if validate_name("topic", name).is_err() {
        return error_topic(name, ResponseError::InvalidTopicException.code());
    }
    match shared.topic_or_create(name, allow_create).await {
        Ok(topic) => describe(shared, name, topic.partition_count()),
        Err(e @ BrokerError::Invalid(_)) => {
            tracing::debug!(topic = name, error = %e, "kafka: metadata for an invalid topic");
            error_topic(name, ResponseError::InvalidTopicException.code())
        }
        Err(e) => error_topic(name, kafka_code(&e)),
    }
}

fn error_topic(name: &str, code: i16) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_error_code(code)
}

/// Prefix of Herald's own topics, reported as internal (like Kafka's `__consumer_offsets`).
const INTERNAL_PREFIX: &str = "__";

/// A topic's metadata: each partition with its reported leader as its only replica.
pub fn describe(shared: &Shared, name: &str, partitions: u32) -> MetadataResponseTopic {
    let partitions = (0..partitions)
        .zip(shared.partition_leaders(name, partitions))
        .map(|(p, leader)| {
            let leader = BrokerId(leader);
            MetadataResponsePartition::default()
                .with_partition_index(i32::try_from(p).unwrap_or(i32::MAX))
                .with_leader_id(leader)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![leader])
                .with_isr_nodes(vec![leader])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_is_internal(name.starts_with(INTERNAL_PREFIX))
        .with_partitions(partitions)
}
