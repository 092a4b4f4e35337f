//! CreateTopics (key 19): topics with a partition count and Kafka-named settings.
//!
//! Understood configs: `retention.ms`, `retention.bytes` (-1 = unlimited),
//! `segment.bytes`, `segment.ms`, `max.message.bytes` (Herald's per-event limit),
//! `cleanup.policy` (only `delete`), and Herald's own `herald.fsync`
//! (`always`|`interval`|`never`) and `herald.fsync.interval.ms`. Settings that mean
//! nothing on a single-node log (replication, compression, flush, ...) are accepted and
//! ignored; anything else is `INVALID_CONFIG`. The replication factor must be -1 or 1.

use herald_broker::{BrokerError, FsyncMode, TopicConfig};
use herald_core::name::validate_name;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::{text, Shared};
use crate::error::kafka_code;

/// Kafka topic settings accepted and ignored: they have no meaning for Herald's log.
const IGNORED_CONFIGS: &[&str] = &[
    "compression.type",
    "delete.retention.ms",
    "file.delete.delay.ms",
    "flush.messages",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "max.compaction.lag.ms",
    "message.downconversion.enable",
    "message.format.version",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "message.timestamp.difference.max.ms",
    "message.timestamp.type",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "min.insync.replicas",
    "preallocate",
    "remote.storage.enable",
    "segment.index.bytes",
    "segment.jitter.ms",
    "unclean.leader.election.enable",
];

pub async fn handle(shared: &Shared, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.clone();
        let (code, message, partitions) = create(shared, topic, request.validate_only).await;
        results.push(
            CreatableTopicResult::default()
                .with_name(name)
                .with_error_code(code)
                .with_error_message(message.map(text))
                .with_num_partitions(if code == 0 { partitions } else { -1 })
                .with_replication_factor(if code == 0 { 1 } else { -1 }),
        );
    }
    CreateTopicsResponse::default().with_topics(results)
}

async fn create(
    shared: &Shared,
    topic: CreatableTopic,
    validate_only: bool,
) -> (i16, Option<String>, i32) {
    let name = topic.name.0.to_string();
    if let Err(e) = validate_name("name", &name) {
        return (
            ResponseError::InvalidTopicException.code(),
            Some(e.to_string()),
            -1,
        );
    }
    if !(topic.replication_factor == -1 || topic.replication_factor == 1) {
        return (
            ResponseError::InvalidReplicationFactor.code(),
            Some("Herald is a single node: the replication factor must be 1".into()),
            -1,
        );
    }
    let partitions = if !topic.assignments.is_empty() {
        topic.assignments.len() as i64
    } else if topic.num_partitions == -1 {
        i64::from(shared.options.default_partitions)
    } else {
        i64::from(topic.num_partitions)
    };
    let Ok(partitions) = u32::try_from(partitions) else {
        return (
            ResponseError::InvalidPartitions.code(),
            Some("partitions must be at least 1".into()),
            -1,
        );
    };
    let mut config = TopicConfig::with_partitions(partitions);
    for entry in &topic.configs {
        let value = entry.value.as_deref().unwrap_or("");
        if let Err(message) = apply_config(&mut config, &entry.name, value) {
            return (ResponseError::InvalidConfig.code(), Some(message), -1);
        }
    }
    if let Err(e) = config.validate() {
        let code = if e.field == "partitions" {
            ResponseError::InvalidPartitions.code()
        } else {
            ResponseError::InvalidConfig.code()
        };
        return (code, Some(e.to_string()), -1);
    }
    let count = i32::try_from(partitions).unwrap_or(i32::MAX);
    if validate_only {
        return match shared.broker.topic(&name) {
            Ok(_) => (
                ResponseError::TopicAlreadyExists.code(),
                Some(format!("topic `{name}` already exists")),
                -1,
            ),
            Err(_) => (0, None, count),
        };
    }
    match shared.broker.create_topic(&name, config).await {
        Ok(_) => (0, None, count),
        Err(e @ BrokerError::Invalid(_)) => {
            (ResponseError::InvalidConfig.code(), Some(e.to_string()), -1)
        }
        Err(e) => (kafka_code(&e), Some(e.to_string()), -1),
    }
}

fn parse<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("config `{name}` has an invalid value `{value}`"))
}

/// `-1` (Kafka's "no limit") as `None`.
fn limit(name: &str, value: &str) -> Result<Option<u64>, String> {
    let v: i64 = parse(name, value)?;
    if v < 0 {
        Ok(None)
    } else {
        Ok(Some(v as u64))
    }
}

/// Applies one Kafka topic config to a Herald topic config.
pub fn apply_config(config: &mut TopicConfig, name: &str, value: &str) -> Result<(), String> {
    match name {
        "retention.ms" => config.retention_ms = limit(name, value)?,
        "retention.bytes" => config.retention_bytes = limit(name, value)?,
        "segment.bytes" => config.segment_bytes = parse(name, value)?,
        "segment.ms" => config.segment_ms = Some(parse(name, value)?),
        "max.message.bytes" => config.max_event_bytes = Some(parse(name, value)?),
        "cleanup.policy" if value == "delete" => {}
        "cleanup.policy" => return Err("Herald topics support only cleanup.policy=delete".into()),
        "herald.fsync" => {
            config.fsync = match value {
                "always" => FsyncMode::Always,
                "interval" => FsyncMode::Interval,
                "never" => FsyncMode::Never,
                _ => return Err("herald.fsync must be always, interval or never".into()),
            }
        }
        "herald.fsync.interval.ms" => config.fsync_interval_ms = parse(name, value)?,
        ignored if IGNORED_CONFIGS.contains(&ignored) => {}
        other => return Err(format!("unknown topic config `{other}`")),
    }
    Ok(())
}
