//! Fetch (key 1): reads partitions from the requested offsets, with Kafka's long poll.
//!
//! With fewer than `min_bytes` available the request waits (woken by the partition logs'
//! append watches, not by polling) until enough arrived, `max_wait_ms` passed or the
//! server stops. Limits: `partition_max_bytes` per partition and `max_bytes` per response,
//! except that the first non-empty partition always returns at least one record (KIP-74).
//! Records come back as uncompressed v2 batches stamped with Herald's append time.
//! Fetch sessions (KIP-227) are not kept: every response has session id 0, which tells
//! clients to send full fetch requests.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use herald_broker::EventRecord;
use kafka_protocol::messages::fetch_request::FetchTopic;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::{offset_i64, Shared};
use crate::error::kafka_code;
use crate::records::encode_fetched;

/// Longest a fetch waits, whatever the client asks.
const WAIT_MAX: Duration = Duration::from_secs(60);
/// Most records read from one partition for one response.
const RECORDS_PER_PARTITION_MAX: usize = 10_000;

pub async fn handle(shared: &Shared, version: i16, request: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0)).min(WAIT_MAX);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let max_bytes = if version >= 3 {
        usize::try_from(request.max_bytes).unwrap_or(0).max(1)
    } else {
        usize::MAX
    };
    let mut stop = shared.stop.clone();
    let mut stopping = false;
    loop {
        let (topics, bytes, errors, watches) = read_all(shared, &request.topics, max_bytes).await;
        let now = Instant::now();
        stopping |= *stop.borrow();
        if errors || bytes >= min_bytes || now >= deadline || stopping || watches.is_empty() {
            return FetchResponse::default().with_responses(topics);
        }
        let waits = watches.into_iter().map(|(mut watch, offset)| {
            Box::pin(async move {
                let _ = watch.wait_for(|end| *end > offset).await;
            })
        });
        tokio::select! {
            _ = futures::future::select_all(waits) => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
            // Stop requested, or the server is gone: answer with what there is.
            _ = stop.wait_for(|s| *s) => stopping = true,
        }
    }
}

type Watches = Vec<(tokio::sync::watch::Receiver<u64>, u64)>;

/// Reads every requested partition once. Returns the topics, the record bytes, whether a
/// partition failed, and a watch (with the end offset seen) per readable partition.
async fn read_all(
    shared: &Shared,
    topics: &[FetchTopic],
    max_bytes: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool, Watches) {
    let mut budget = max_bytes;
    let mut total = 0;
    let mut errors = false;
    let mut watches = Vec::new();
    let mut responses = Vec::with_capacity(topics.len());
    for topic in topics {
        let name = topic.topic.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            let limit = usize::try_from(p.partition_max_bytes)
                .unwrap_or(0)
                .min(budget);
            let (data, size, watch) = read_partition(
                shared,
                &name,
                p.partition,
                p.fetch_offset,
                limit,
                total == 0,
            )
            .await;
            errors |= data.error_code != 0;
            if let Some(w) = watch {
                watches.push(w);
            }
            budget = budget.saturating_sub(size);
            total += size;
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    (responses, total, errors, watches)
}

async fn read_partition(
    shared: &Shared,
    topic: &str,
    partition: i32,
    fetch_offset: i64,
    limit: usize,
    first_with_data: bool,
) -> (
    PartitionData,
    usize,
    Option<(tokio::sync::watch::Receiver<u64>, u64)>,
) {
    let base = PartitionData::default()
        .with_partition_index(partition)
        .with_preferred_read_replica(BrokerId(-1))
        .with_aborted_transactions(Some(Vec::new()));
    let log = match u32::try_from(partition)
        .map_err(|_| ResponseError::UnknownTopicOrPartition.code())
        .and_then(|p| {
            let topic = shared.broker.topic(topic).map_err(|e| kafka_code(&e))?;
            topic.partition(p).cloned().map_err(|e| kafka_code(&e))
        }) {
        Ok(log) => log,
        Err(code) => return (base.with_error_code(code), 0, None),
    };
    let start = log.start_offset();
    let end = log.next_offset();
    let base = base
        .with_high_watermark(offset_i64(end))
        .with_last_stable_offset(offset_i64(end))
        .with_log_start_offset(offset_i64(start));
    let offset = match u64::try_from(fetch_offset) {
        Ok(o) if (start..=end).contains(&o) => o,
        _ => {
            return (
                base.with_error_code(ResponseError::OffsetOutOfRange.code()),
                0,
                None,
            )
        }
    };
    let watch = Some((log.watch(), end));
    if offset == end || (limit == 0 && !first_with_data) {
        return (base.with_records(Some(bytes::Bytes::new())), 0, watch);
    }
    let stored = match log
        .read(offset, RECORDS_PER_PARTITION_MAX, limit.max(1))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(topic, partition, error = %e, "kafka fetch: read failed");
            let code = kafka_code(&e);
            return (base.with_error_code(code), 0, None);
        }
    };
    let mut events = Vec::with_capacity(stored.len());
    for record in stored {
        match EventRecord::from_stored(topic, partition as u32, record) {
            Ok(e) => events.push(e),
            Err(e) => {
                tracing::error!(topic, partition, error = %e, "kafka fetch: undecodable record");
                break;
            }
        }
    }
    let mut out = BytesMut::new();
    if let Err(e) = encode_fetched(&events, &mut out) {
        tracing::error!(topic, partition, error = %e, "kafka fetch: could not encode records");
        return (
            base.with_error_code(ResponseError::UnknownServerError.code()),
            0,
            None,
        );
    }
    let size = out.len();
    (base.with_records(Some(out.freeze())), size, watch)
}
