//! [`WorkQueue`]: leases over one JetStream partition, kept by JetStream itself (a durable
//! pull consumer, explicit acks), so every gateway on the same JetStream hands out, acks,
//! delays and extends the same leases: no lease lives in a gateway's memory.
//!
//! Invariants: a message is leased to at most one puller until its ack wait passes (then
//! JetStream delivers it again with a higher delivery count); an ack returns only after
//! the server confirmed it; a receipt is the message's ack subject (without `$JS.ACK.`)
//! and is accepted only if it names this queue's stream and consumer.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, AckKind};
use bytes::Bytes;
use futures::StreamExt;
use herald_log::StoredRecord;

use crate::error::BrokerError;
use crate::storage::jetstream::JetStreamPartition;

/// Prefix of every JetStream ack subject.
const ACK_PREFIX: &str = "$JS.ACK.";
/// Longest an ack waits for the server's confirmation.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of one work queue.
#[derive(Debug, Clone)]
pub struct WorkQueueConfig {
    /// The durable consumer's name (`[A-Za-z0-9_-]`).
    pub consumer: String,
    /// How long a lease lasts without an ack or progress.
    pub ack_wait: Duration,
    /// Most messages leased at once (JetStream stops handing out more beyond it).
    pub max_ack_pending: i64,
}

/// One leased message.
#[derive(Debug, Clone)]
pub struct LeasedRecord {
    pub record: StoredRecord,
    /// 1 for the first delivery.
    pub delivery_count: u32,
    pub receipt: String,
}

/// What a receipt says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptInfo {
    pub offset: u64,
    pub delivery_count: u32,
}

/// Counts of the consumer, as JetStream reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkQueueCounts {
    /// Every offset below it is acknowledged.
    pub ack_floor: u64,
    /// Offsets below it have been delivered at least once.
    pub delivered: u64,
    /// Never delivered yet.
    pub pending: u64,
    /// Leased now (delivered, not acknowledged).
    pub leased: u64,
    /// Delivered more than once and still leased or waiting.
    pub redelivered: u64,
}

/// A cheap-to-clone handle to one work queue.
#[derive(Clone)]
pub struct WorkQueue {
    partition: Arc<JetStreamPartition>,
    consumer: consumer::PullConsumer,
    client: async_nats::Client,
    stream_name: String,
    consumer_name: String,
}

impl JetStreamPartition {
    /// Opens the work queue `config.consumer` over this partition, creating its durable
    /// consumer (from the first record, unlimited deliveries: the caller dead-letters).
    pub async fn work_queue(
        self: &Arc<Self>,
        config: WorkQueueConfig,
    ) -> Result<WorkQueue, BrokerError> {
        let consumer_config = consumer::pull::Config {
            durable_name: Some(config.consumer.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            max_deliver: -1,
            max_ack_pending: config.max_ack_pending,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let stream = self.stream_handle();
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&config.consumer, consumer_config)
            .await
            .map_err(|e| self.error("opening the work queue of", e))?;
        Ok(WorkQueue {
            partition: Arc::clone(self),
            consumer,
            client: self.client_handle(),
            stream_name: stream.cached_info().config.name.clone(),
            consumer_name: config.consumer,
        })
    }
}

impl WorkQueue {
    /// Leases up to `max` messages that are ready now (never waits: callers poll or
    /// follow the partition's end).
    pub async fn fetch(&self, max: usize) -> Result<Vec<LeasedRecord>, BrokerError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max.max(1))
            .messages()
            .await
            .map_err(|e| self.partition.error("leasing from", e))?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    // Messages already received stay leased to us: hand them out.
                    if out.is_empty() {
                        return Err(self.partition.error("leasing from", e));
                    }
                    tracing::warn!(error = %e, "a work-queue fetch ended early");
                    break;
                }
            };
            let Some(reply) = message.reply.as_ref().map(|s| s.to_string()) else {
                continue;
            };
            let info = message
                .info()
                .map_err(|e| self.partition.error("leasing from", e))?;
            let (sequence, delivered) = (info.stream_sequence, info.delivered);
            let published = info.published;
            let received_ms =
                published.unix_timestamp() * 1000 + i64::from(published.millisecond());
            let record = self.partition.decode_message(
                sequence,
                message.headers.as_ref(),
                message.payload.clone(),
                received_ms,
            )?;
            out.push(LeasedRecord {
                record,
                delivery_count: u32::try_from(delivered).unwrap_or(u32::MAX),
                receipt: reply
                    .strip_prefix(ACK_PREFIX)
                    .unwrap_or(reply.as_str())
                    .to_string(),
            });
        }
        Ok(out)
    }

    /// The offset and delivery count a receipt of this queue names; `None` if it is not
    /// one (wrong stream or consumer, malformed).
    pub fn parse_receipt(&self, receipt: &str) -> Option<ReceiptInfo> {
        parse_receipt(receipt, &self.stream_name, &self.consumer_name)
    }

    /// Acknowledges a message for good; returns once the server confirmed it.
    pub async fn ack(&self, receipt: &str) -> Result<(), BrokerError> {
        let subject = self.subject(receipt)?;
        tokio::time::timeout(
            ACK_TIMEOUT,
            self.client.request(subject, Bytes::from(AckKind::Ack)),
        )
        .await
        .map_err(|_| {
            self.partition
                .error("acknowledging in", "no confirmation within 5 s")
        })?
        .map_err(|e| self.partition.error("acknowledging in", e))?;
        Ok(())
    }

    /// Releases a lease: delivered again after `delay` (at once without one).
    pub async fn nak(&self, receipt: &str, delay: Option<Duration>) -> Result<(), BrokerError> {
        self.signal(receipt, AckKind::Nak(delay.filter(|d| !d.is_zero())))
            .await
    }

    /// Restarts the lease's ack wait.
    pub async fn progress(&self, receipt: &str) -> Result<(), BrokerError> {
        self.signal(receipt, AckKind::Progress).await
    }

    /// Never delivers the message again (dead-lettered elsewhere first).
    pub async fn term(&self, receipt: &str) -> Result<(), BrokerError> {
        self.signal(receipt, AckKind::Term).await
    }

    /// The consumer's counts, asked of the server.
    pub async fn counts(&self) -> Result<WorkQueueCounts, BrokerError> {
        let mut consumer = self.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| self.partition.error("reading the work queue of", e))?;
        Ok(WorkQueueCounts {
            ack_floor: info.ack_floor.stream_sequence,
            delivered: info.delivered.stream_sequence,
            pending: info.num_pending,
            leased: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
        })
    }

    /// The records of the partition this queue leases from.
    pub fn partition(&self) -> &Arc<JetStreamPartition> {
        &self.partition
    }

    async fn signal(&self, receipt: &str, kind: AckKind) -> Result<(), BrokerError> {
        let subject = self.subject(receipt)?;
        self.client
            .publish(subject, Bytes::from(kind))
            .await
            .map_err(|e| self.partition.error("releasing in", e))?;
        self.client
            .flush()
            .await
            .map_err(|e| self.partition.error("releasing in", e))
    }

    fn subject(&self, receipt: &str) -> Result<String, BrokerError> {
        if self.parse_receipt(receipt).is_none() {
            return Err(BrokerError::Unavailable(format!(
                "`{receipt}` is not a receipt of this queue"
            )));
        }
        Ok(format!("{ACK_PREFIX}{receipt}"))
    }
}

/// Parses `[<domain>.<account hash>.]<stream>.<consumer>.<delivered>.<stream seq>.
/// <consumer seq>.<timestamp>.<pending>[.<token>]` (ack subject formats v1 and v2).
fn parse_receipt(receipt: &str, stream: &str, consumer: &str) -> Option<ReceiptInfo> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '~' | '.');
    if receipt.len() > 512 || !receipt.chars().all(allowed) {
        return None;
    }
    let tokens: Vec<&str> = receipt.split('.').collect();
    let at = match tokens.len() {
        7 => 0,
        10 => 2,
        _ => return None,
    };
    if tokens.get(at) != Some(&stream) || tokens.get(at + 1) != Some(&consumer) {
        return None;
    }
    let number = |i: usize| tokens.get(at + i).and_then(|t| t.parse::<u64>().ok());
    let delivered = number(2)?;
    let sequence = number(3)?;
    for i in 4..7 {
        number(i)?;
    }
    if sequence == 0 || delivered == 0 {
        return None;
    }
    Some(ReceiptInfo {
        offset: sequence - 1,
        delivery_count: u32::try_from(delivered).unwrap_or(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_name_their_stream_and_consumer() {
        let v1 = "HERALD___sub~q_0.herald-queue.3.18.40.1733130000000000000.5";
        assert_eq!(
            parse_receipt(v1, "HERALD___sub~q_0", "herald-queue"),
            Some(ReceiptInfo {
                offset: 17,
                delivery_count: 3
            })
        );
        let v2 = "hub.ABC123.S.c.1.7.7.1733130000000000000.0.xyz";
        assert_eq!(
            parse_receipt(v2, "S", "c").map(|r| r.offset),
            Some(6),
            "v2 ack subjects carry domain and account hash first"
        );
        for bad in [
            "OTHER.herald-queue.3.18.40.1.5",
            "HERALD___sub~q_0.other.3.18.40.1.5",
            "HERALD___sub~q_0.herald-queue.x.18.40.1.5",
            "HERALD___sub~q_0.herald-queue.3.0.40.1.5",
            "HERALD___sub~q_0.herald-queue.3.18.40.1.5 extra",
            "HERALD___sub~q_0.herald-queue.3.18.*.1.5",
            "",
            "12.abcdef",
        ] {
            assert_eq!(
                parse_receipt(bad, "HERALD___sub~q_0", "herald-queue"),
                None,
                "{bad}"
            );
        }
    }
}
