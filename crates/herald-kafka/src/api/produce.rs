//! Produce (key 0): record batches → CloudEvents appended to the partition's log.
//!
//! Each batch becomes one atomic broker append on its partition, acknowledged once it is
//! durable under the topic's fsync policy (so `acks=1` and `acks=all` mean the same thing
//! on a single node; `acks=0` gets no response at all). Idempotent batches (producer id
//! ≥ 0) go through the sequence check in `producer`: a retried batch gets its original
//! offset back, a gap gets `OUT_OF_ORDER_SEQUENCE_NUMBER`.

use bytes::Bytes;
use herald_broker::BrokerError;
use herald_core::CloudEvent;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::{offset_i64, text, Session, Shared};
use crate::error::kafka_code;
use crate::producer::{check_sequence, AppendedBatch, Verdict};
use crate::records::{decode_batches, record_to_event, ProducedBatch};

/// Where one partition's batches landed, or why not.
struct Outcome {
    error_code: i16,
    base_offset: i64,
    message: Option<String>,
    bad_record: Option<usize>,
}

impl Outcome {
    fn error(code: i16, message: impl Into<String>) -> Self {
        Self {
            error_code: code,
            base_offset: -1,
            message: Some(message.into()),
            bad_record: None,
        }
    }
}

pub async fn handle(
    shared: &Shared,
    session: &Session,
    version: i16,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    let transactional = request
        .transactional_id
        .as_ref()
        .is_some_and(|t| !t.0.is_empty());
    let mut responses = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        responses.push(produce_topic(shared, session, version, topic, transactional).await);
    }
    if request.acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

async fn produce_topic(
    shared: &Shared,
    session: &Session,
    version: i16,
    topic: TopicProduceData,
    transactional: bool,
) -> TopicProduceResponse {
    let name = topic.name.0.to_string();
    let source = event_source(&session.client_id, &name);
    let exists = shared.topic_or_create(&name, true).await;
    // Partitions append concurrently: each waits for its own log's group commit.
    let appends = topic.partition_data.into_iter().map(|partition| {
        let (name, source, exists) = (&name, &source, &exists);
        async move {
            let index = partition.index;
            let outcome = match (exists, transactional) {
                (_, true) => Outcome::error(
                    ResponseError::TransactionalIdAuthorizationFailed.code(),
                    "Herald does not support transactions",
                ),
                (Err(e), _) => Outcome::error(kafka_code(e), e.to_string()),
                (Ok(_), false) => produce_partition(shared, name, source, partition).await,
            };
            partition_response(shared, name, index, version, outcome)
        }
    });
    let partitions = futures::future::join_all(appends).await;
    TopicProduceResponse::default()
        .with_name(topic.name)
        .with_partition_responses(partitions)
}

fn partition_response(
    shared: &Shared,
    topic: &str,
    index: i32,
    version: i16,
    outcome: Outcome,
) -> PartitionProduceResponse {
    let log_start_offset = u32::try_from(index)
        .ok()
        .and_then(|p| {
            shared
                .broker
                .topic(topic)
                .ok()?
                .partition(p)
                .ok()
                .map(|l| l.start_offset())
        })
        .map_or(-1, offset_i64);
    let mut response = PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(outcome.error_code)
        .with_base_offset(outcome.base_offset)
        .with_log_append_time_ms(if outcome.error_code == 0 {
            chrono::Utc::now().timestamp_millis()
        } else {
            -1
        })
        .with_log_start_offset(log_start_offset);
    if version >= 8 {
        response = response.with_error_message(outcome.message.clone().map(text));
        if let Some(bad) = outcome.bad_record {
            response = response.with_record_errors(vec![BatchIndexAndErrorMessage::default()
                .with_batch_index(i32::try_from(bad).unwrap_or(i32::MAX))
                .with_batch_index_error_message(outcome.message.map(text))]);
        }
    }
    response
}

/// `/kafka/<client id>`, or `/kafka/<topic>` when the client id is empty or not usable.
fn event_source(client_id: &str, topic: &str) -> String {
    let usable = !client_id.is_empty() && !client_id.chars().any(char::is_control);
    if usable {
        format!("/kafka/{client_id}")
    } else {
        format!("/kafka/{topic}")
    }
}

async fn produce_partition(
    shared: &Shared,
    topic: &str,
    source: &str,
    partition: PartitionProduceData,
) -> Outcome {
    let Ok(index) = u32::try_from(partition.index) else {
        return Outcome::error(
            ResponseError::UnknownTopicOrPartition.code(),
            format!("partition {} does not exist", partition.index),
        );
    };
    let Some(records) = partition.records else {
        return Outcome::error(ResponseError::CorruptMessage.code(), "no records");
    };
    let batches = match decode_batches(&records, shared.options.batch_bytes_max) {
        Ok(b) => b,
        Err(e) => return Outcome::error(e.kafka_code(), e.to_string()),
    };
    let mut first_offset = None;
    for batch in batches {
        let outcome = produce_batch(shared, topic, index, source, batch).await;
        if outcome.error_code != 0 {
            return outcome;
        }
        first_offset.get_or_insert(outcome.base_offset);
    }
    match first_offset {
        Some(base_offset) => Outcome {
            error_code: 0,
            base_offset,
            message: None,
            bad_record: None,
        },
        None => Outcome::error(ResponseError::CorruptMessage.code(), "no record batches"),
    }
}

async fn produce_batch(
    shared: &Shared,
    topic: &str,
    partition: u32,
    source: &str,
    batch: ProducedBatch,
) -> Outcome {
    if batch.transactional || batch.control {
        return Outcome::error(
            ResponseError::InvalidRecord.code(),
            "transactional and control batches are not supported",
        );
    }
    if batch.records.is_empty() {
        return Outcome::error(ResponseError::CorruptMessage.code(), "empty record batch");
    }
    let mut entries: Vec<(Option<Bytes>, CloudEvent)> = Vec::with_capacity(batch.records.len());
    for (i, record) in batch.records.iter().enumerate() {
        match record_to_event(record, source) {
            Ok(event) => entries.push((record.key.clone(), event)),
            Err(e) => {
                let mut outcome =
                    Outcome::error(ResponseError::InvalidRecord.code(), e.to_string());
                outcome.bad_record = Some(i);
                return outcome;
            }
        }
    }
    if batch.producer_id < 0 {
        return append(shared, topic, partition, entries).await;
    }
    let first = batch.base_sequence;
    let last = batch.last_sequence();
    let key = (topic.to_string(), partition);
    let producer = shared
        .producers
        .handle(batch.producer_id, batch.producer_epoch);
    let admitted = producer
        .lock()
        .await
        .admit(batch.producer_epoch, &key, first);
    let sequences = match admitted {
        Ok(s) => s,
        Err(code) => return refused(code, first, last, batch.producer_id),
    };
    let mut sequences = sequences.lock().await;
    match check_sequence(Some(&sequences), first, last) {
        Verdict::Duplicate { base_offset } => Outcome {
            error_code: 0,
            base_offset: offset_i64(base_offset),
            message: None,
            bad_record: None,
        },
        Verdict::Reject(code) => refused(code, first, last, batch.producer_id),
        Verdict::Append => {
            let outcome = append(shared, topic, partition, entries).await;
            if outcome.error_code == 0 {
                sequences.record(AppendedBatch {
                    first_sequence: first,
                    last_sequence: last,
                    base_offset: u64::try_from(outcome.base_offset).unwrap_or(0),
                });
            }
            outcome
        }
    }
}

fn refused(code: i16, first: i32, last: i32, producer_id: i64) -> Outcome {
    Outcome::error(
        code,
        format!("sequence {first}..={last} of producer {producer_id} refused"),
    )
}

async fn append(
    shared: &Shared,
    topic: &str,
    partition: u32,
    entries: Vec<(Option<Bytes>, CloudEvent)>,
) -> Outcome {
    match shared
        .broker
        .publish_keyed(topic, entries, Some(partition))
        .await
    {
        Ok(receipts) => match receipts.first() {
            Some(first) => Outcome {
                error_code: 0,
                base_offset: offset_i64(first.offset),
                message: None,
                bad_record: None,
            },
            None => Outcome::error(ResponseError::UnknownServerError.code(), "no receipt"),
        },
        Err(e) => {
            if matches!(e, BrokerError::Storage(_) | BrokerError::Io { .. }) {
                tracing::error!(topic, partition, error = %e, "kafka produce failed");
            }
            let mut outcome = Outcome::error(kafka_code(&e), e.to_string());
            if let BrokerError::PayloadTooLarge { index, .. } = e {
                outcome.bad_record = Some(index);
            }
            outcome
        }
    }
}

#[cfg(test)]
mod tests {
    use super::event_source;

    #[test]
    fn source_prefers_the_client_id() {
        assert_eq!(event_source("rdkafka", "orders"), "/kafka/rdkafka");
        assert_eq!(event_source("", "orders"), "/kafka/orders");
        assert_eq!(event_source("bad\u{7}", "orders"), "/kafka/orders");
    }
}
