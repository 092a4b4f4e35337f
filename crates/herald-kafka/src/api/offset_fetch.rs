//! OffsetFetch (key 9): committed offsets from the broker's offset store (-1 when none).
//! A null topic list (v2+) means every partition the group has committed.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};

use super::{offset_i64, text, topic_name, Shared};

/// `topic → [(partition, committed offset or -1)]` for one group.
fn committed(
    shared: &Shared,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> BTreeMap<String, Vec<(i32, i64)>> {
    let mut out: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    match topics {
        Some(topics) => {
            for (name, partitions) in topics {
                let list = out.entry(name.clone()).or_default();
                for p in partitions {
                    let offset = u32::try_from(p)
                        .ok()
                        .and_then(|index| shared.broker.committed_offset(group, &name, index))
                        .map_or(-1, offset_i64);
                    list.push((p, offset));
                }
            }
        }
        None => {
            if let Ok(description) = shared.broker.describe_group(group) {
                for lag in description.offsets {
                    if let Some(c) = lag.committed {
                        out.entry(lag.topic).or_default().push((
                            i32::try_from(lag.partition).unwrap_or(i32::MAX),
                            offset_i64(c),
                        ));
                    }
                }
            }
        }
    }
    out
}

pub fn handle(shared: &Shared, version: i16, request: OffsetFetchRequest) -> OffsetFetchResponse {
    if version >= 8 {
        let groups = request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let topics = committed(shared, &g.group_id.0, wanted)
                    .into_iter()
                    .map(|(name, partitions)| {
                        OffsetFetchResponseTopics::default()
                            .with_name(topic_name(name))
                            .with_partitions(
                                partitions
                                    .into_iter()
                                    .map(|(p, offset)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(-1)
                                            .with_metadata(Some(text("")))
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = request.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = committed(shared, &request.group_id.0, wanted)
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(name))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|(p, offset)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(-1)
                                .with_metadata(Some(text("")))
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
