//! Herald over its Kafka listener, driven by `rskafka` (a pure-Rust Kafka client).
//!
//! The topic is created over HTTP (so it gets the fsync policy); produce and fetch go
//! through the Kafka protocol. Each producer has its own client (own connections) and
//! sends each batch as one Produce request: keyed messages go to their key's partition
//! (FNV-1a hash), unkeyed batches to one partition, round-robin per batch (Kafka's
//! sticky partitioner). Values are plain Kafka records (no `ce_` headers), so Herald
//! fills in the CloudEvent attributes.
//!
//! Consumers fetch the partitions directly (rskafka has no group protocol): member `m`
//! of a group of `M` reads partitions `p` with `p % M == m` from offset 0, keeping its
//! positions client-side and committing nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use futures::future::{try_join_all, BoxFuture};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

use crate::message::Batch;
use crate::workload::Delivered;

/// Most bytes one fetch asks for.
const FETCH_BYTES_MAX: i32 = 4 * 1024 * 1024;
/// How long a fetch waits for new records (ms).
const FETCH_WAIT_MS: i32 = 100;

async fn client(bootstrap: &str) -> Result<Client> {
    ClientBuilder::new(vec![bootstrap.to_string()])
        .build()
        .await
        .with_context(|| format!("connecting to Kafka at {bootstrap}"))
}

async fn partition_clients(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
) -> Result<Vec<PartitionClient>> {
    let client = client(bootstrap).await?;
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let partition = i32::try_from(p).context("partition number")?;
        out.push(
            client
                .partition_client(topic, partition, UnknownTopicHandling::Retry)
                .await
                .with_context(|| format!("Kafka partition {topic}/{p}"))?,
        );
    }
    Ok(out)
}

pub struct KafkaProducer {
    partitions: Arc<Vec<PartitionClient>>,
    next_partition: AtomicUsize,
}

impl KafkaProducer {
    pub async fn connect(bootstrap: &str, topic: &str, partitions: u32) -> Result<Self> {
        Ok(Self {
            partitions: Arc::new(partition_clients(bootstrap, topic, partitions).await?),
            next_partition: AtomicUsize::new(0),
        })
    }

    pub fn send(&self, batch: Batch) -> BoxFuture<'static, Result<()>> {
        let clients = self.partitions.clone();
        let count = clients.len().max(1);
        let sticky = self.next_partition.fetch_add(1, Ordering::Relaxed) % count;
        Box::pin(async move {
            let timestamp = chrono::Utc::now();
            let mut per_partition: Vec<Vec<Record>> = (0..count).map(|_| Vec::new()).collect();
            for i in 0..batch.count {
                let key = batch.key(i);
                let partition = key
                    .as_deref()
                    .map_or(sticky, |k| fnv1a(k.as_bytes()) % count);
                if let Some(records) = per_partition.get_mut(partition) {
                    records.push(Record {
                        key: key.map(String::into_bytes),
                        value: Some(batch.payload.to_vec()),
                        headers: Default::default(),
                        timestamp,
                    });
                }
            }
            let produces = per_partition
                .into_iter()
                .zip(clients.iter())
                .filter(|(records, _)| !records.is_empty())
                .map(|(records, client)| client.produce(records, Compression::NoCompression));
            try_join_all(produces).await?;
            Ok(())
        })
    }
}

fn fnv1a(bytes: &[u8]) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as usize
}

pub struct KafkaConsumer {
    /// (client, next offset) of each partition this member reads.
    partitions: Vec<(PartitionClient, i64)>,
    turn: usize,
}

impl KafkaConsumer {
    /// Member `member` of `members`: reads partitions `p % members == member` from 0.
    pub async fn connect(
        bootstrap: &str,
        topic: &str,
        partitions: u32,
        member: usize,
        members: usize,
    ) -> Result<Self> {
        let all = partition_clients(bootstrap, topic, partitions).await?;
        Ok(Self {
            partitions: all
                .into_iter()
                .enumerate()
                .filter(|(p, _)| p % members.max(1) == member)
                .map(|(_, c)| (c, 0))
                .collect(),
            turn: 0,
        })
    }

    pub async fn poll(&mut self, sink: &mut Delivered) -> Result<()> {
        let count = self.partitions.len();
        let Some((client, offset)) = self.partitions.get_mut(self.turn % count.max(1)) else {
            // More members than partitions: this one idles like a Kafka consumer would.
            tokio::time::sleep(std::time::Duration::from_millis(FETCH_WAIT_MS as u64)).await;
            return Ok(());
        };
        self.turn = self.turn.wrapping_add(1);
        let (records, _high_watermark) = client
            .fetch_records(*offset, 1..FETCH_BYTES_MAX, FETCH_WAIT_MS)
            .await?;
        for r in &records {
            sink.message(r.record.value.as_deref().unwrap_or_default());
        }
        if let Some(last) = records.last() {
            *offset = last.offset + 1;
        }
        Ok(())
    }
}
