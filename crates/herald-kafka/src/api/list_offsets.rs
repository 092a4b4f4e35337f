//! ListOffsets (key 2): offsets by time: earliest (-2, and -4 "earliest local"), latest
//! (-1), the record with the largest timestamp (-3), or the first record appended at or
//! after a timestamp. Timestamps are Herald append times.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

use super::{offset_i64, Shared};
use crate::error::kafka_code;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

pub async fn handle(
    shared: &Shared,
    version: i16,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let (error_code, timestamp, offset) =
                lookup(shared, &name, p.partition_index, p.timestamp).await;
            partitions.push(
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error_code)
                    .with_timestamp(timestamp)
                    .with_offset(offset)
                    .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
            );
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// `(error code, timestamp, offset)` for one partition.
async fn lookup(shared: &Shared, topic: &str, partition: i32, timestamp: i64) -> (i16, i64, i64) {
    let log = match u32::try_from(partition)
        .map_err(|_| ResponseError::UnknownTopicOrPartition.code())
        .and_then(|p| {
            let t = shared.broker.topic(topic).map_err(|e| kafka_code(&e))?;
            t.partition(p).cloned().map_err(|e| kafka_code(&e))
        }) {
        Ok(log) => log,
        Err(code) => return (code, -1, -1),
    };
    let (start, end) = (log.start_offset(), log.next_offset());
    let offset = match timestamp {
        LATEST => return (0, -1, offset_i64(end)),
        EARLIEST | EARLIEST_LOCAL => return (0, -1, offset_i64(start)),
        MAX_TIMESTAMP => {
            if end == start {
                return (0, -1, -1);
            }
            end - 1
        }
        t if t >= 0 => match log.offset_for_timestamp(t).await {
            Ok(o) if o < end => o,
            Ok(_) => return (0, -1, -1),
            Err(e) => return (kafka_code(&e), -1, -1),
        },
        _ => return (ResponseError::InvalidRequest.code(), -1, -1),
    };
    match log.read(offset, 1, 1).await {
        Ok(records) => match records.first() {
            Some(r) => (0, r.timestamp_ms, offset_i64(r.offset)),
            None => (0, -1, -1),
        },
        Err(e) => (kafka_code(&e), -1, -1),
    }
}
