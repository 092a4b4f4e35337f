//! DescribeConfigs (key 32): topic settings in Kafka's names, and the few broker settings
//! clients and tools ask for.

use herald_broker::{FsyncMode, TopicConfig};
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::{text, Shared};
use crate::error::kafka_code;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// `config_source` values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;
/// `config_type` values (v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

struct Entry {
    name: &'static str,
    value: String,
    config_type: i8,
    read_only: bool,
}

fn entry(name: &'static str, value: impl ToString, config_type: i8, read_only: bool) -> Entry {
    Entry {
        name,
        value: value.to_string(),
        config_type,
        read_only,
    }
}

fn topic_entries(config: &TopicConfig, max_event_bytes: usize) -> Vec<Entry> {
    let limit = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    let fsync = match config.fsync {
        FsyncMode::Always => "always",
        FsyncMode::Interval => "interval",
        FsyncMode::Never => "never",
    };
    vec![
        entry("cleanup.policy", "delete", TYPE_STRING, true),
        entry("compression.type", "producer", TYPE_STRING, true),
        entry("retention.ms", limit(config.retention_ms), TYPE_LONG, true),
        entry(
            "retention.bytes",
            limit(config.retention_bytes),
            TYPE_LONG,
            true,
        ),
        entry("segment.bytes", config.segment_bytes, TYPE_INT, true),
        entry(
            "segment.ms",
            limit(config.segment_ms).max(-1),
            TYPE_LONG,
            true,
        ),
        entry(
            "max.message.bytes",
            config.max_event_bytes.unwrap_or(max_event_bytes),
            TYPE_INT,
            true,
        ),
        entry("message.timestamp.type", "LogAppendTime", TYPE_STRING, true),
        entry("min.insync.replicas", 1, TYPE_INT, true),
        entry("herald.fsync", fsync, TYPE_STRING, true),
        entry(
            "herald.fsync.interval.ms",
            config.fsync_interval_ms,
            TYPE_LONG,
            true,
        ),
    ]
}

fn broker_entries(shared: &Shared) -> Vec<Entry> {
    let options = &shared.options;
    vec![
        entry(
            "auto.create.topics.enable",
            options.auto_create_topics,
            TYPE_BOOLEAN,
            true,
        ),
        entry("num.partitions", options.default_partitions, TYPE_INT, true),
        entry("default.replication.factor", 1, TYPE_INT, true),
        entry(
            "message.max.bytes",
            shared.broker.config().max_event_bytes,
            TYPE_INT,
            true,
        ),
        entry(
            "socket.request.max.bytes",
            options.frame_bytes_max,
            TYPE_INT,
            true,
        ),
        entry(
            "group.initial.rebalance.delay.ms",
            options.groups.initial_rebalance_delay.as_millis(),
            TYPE_INT,
            true,
        ),
        entry(
            "log.message.timestamp.type",
            "LogAppendTime",
            TYPE_STRING,
            true,
        ),
    ]
}

pub fn handle(shared: &Shared, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let (entries, source) = match resource.resource_type {
                RESOURCE_TOPIC => match shared.broker.topic(&name) {
                    Ok(topic) => (
                        topic_entries(&topic.meta.config, shared.broker.config().max_event_bytes),
                        SOURCE_TOPIC,
                    ),
                    Err(e) => {
                        return result
                            .with_error_code(kafka_code(&e))
                            .with_error_message(Some(text(e.to_string())))
                    }
                },
                RESOURCE_BROKER if name.is_empty() || name == shared.node().0.to_string() => {
                    (broker_entries(shared), SOURCE_DEFAULT)
                }
                _ => {
                    return result
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(text(
                            "Herald describes topics and this broker only",
                        )))
                }
            };
            let keys: Option<Vec<String>> = resource
                .configuration_keys
                .filter(|keys| !keys.is_empty())
                .map(|keys| keys.iter().map(|k| k.to_string()).collect());
            let configs = entries
                .into_iter()
                .filter(|e| keys.as_ref().is_none_or(|k| k.iter().any(|k| k == e.name)))
                .map(|e| {
                    DescribeConfigsResourceResult::default()
                        .with_name(text(e.name))
                        .with_value(Some(text(e.value)))
                        .with_read_only(e.read_only)
                        .with_config_source(source)
                        .with_config_type(e.config_type)
                })
                .collect();
            result.with_configs(configs)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
