//! OffsetCommit (key 8): committed offsets go to the broker's durable offset store.
//!
//! Kafka's rules: a member of the current generation may commit (also while the group
//! prepares a rebalance, not while it completes one); generation -1 with no member id
//! commits for a group without members (standalone consumers, tools).

use herald_broker::Assignment;
use herald_core::name::validate_name;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use kafka_protocol::ResponseError;

use super::{Shared, NOT_COORDINATOR};
use crate::error::kafka_code;

pub async fn handle(shared: &Shared, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.0.to_string();
    let group_code = if validate_name("group", &group).is_err() {
        ResponseError::InvalidGroupId.code()
    } else if !shared.coordinates(&group) {
        NOT_COORDINATOR
    } else {
        shared.coordinator.check_commit(
            &group,
            &request.member_id,
            request.generation_id_or_member_epoch,
        )
    };
    // Per partition: its error code, and the offset to commit when it is valid.
    let mut plan: Vec<(String, Vec<(i32, i16)>)> = Vec::new();
    let mut to_commit = Vec::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let known = shared.broker.topic(&name).ok();
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let code = if group_code != 0 {
                group_code
            } else {
                match (
                    &known,
                    u32::try_from(p.partition_index),
                    u64::try_from(p.committed_offset),
                ) {
                    (Some(t), Ok(index), Ok(offset)) if index < t.partition_count() => {
                        to_commit.push((
                            Assignment {
                                topic: name.clone(),
                                partition: index,
                            },
                            offset,
                        ));
                        0
                    }
                    (Some(_), Ok(_), Err(_)) => ResponseError::OffsetOutOfRange.code(),
                    _ => ResponseError::UnknownTopicOrPartition.code(),
                }
            };
            partitions.push((p.partition_index, code));
        }
        plan.push((name, partitions));
    }
    let commit_code = if to_commit.is_empty() {
        0
    } else {
        match shared
            .broker
            .commit_offsets_unchecked(&group, to_commit)
            .await
        {
            Ok(()) => 0,
            Err(e) => {
                tracing::warn!(group, error = %e, "kafka: offset commit failed");
                kafka_code(&e)
            }
        }
    };
    let topics = plan
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(index, code)| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(if code == 0 { commit_code } else { code })
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(super::topic_name(name))
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
