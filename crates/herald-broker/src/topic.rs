//! One topic: its metadata and one [`PartitionStore`] per partition.
//!
//! Invariant: `partitions.len() == meta.config.partitions`, fixed for the topic's life.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use herald_core::partitioner::partition_for_key;
use herald_log::PartitionLog;

use crate::storage::{JetStreamBackend, PartitionStore};

use crate::dedup::DedupWindow;
use crate::error::BrokerError;
use crate::metadata::{partition_dir, TopicMeta};

pub struct Topic {
    pub meta: TopicMeta,
    partitions: Vec<PartitionStore>,
    round_robin: AtomicU32,
    dedup: Option<Arc<DedupWindow>>,
}

impl Topic {
    /// Opens (and recovers) every embedded partition log of a topic (blocking I/O).
    pub fn open_local_partitions(
        data_dir: &Path,
        meta: &TopicMeta,
        queue_depth_max: usize,
    ) -> Result<Vec<PartitionStore>, BrokerError> {
        let log_config = meta.config.log_config(queue_depth_max);
        (0..meta.config.partitions)
            .map(|p| {
                PartitionLog::open(partition_dir(data_dir, &meta.name, p), log_config.clone())
                    .map(PartitionStore::Local)
                    .map_err(BrokerError::from)
            })
            .collect()
    }

    /// Opens (creating) the JetStream stream of every partition of a topic.
    pub async fn open_jetstream_partitions(
        backend: &JetStreamBackend,
        meta: &TopicMeta,
    ) -> Result<Vec<PartitionStore>, BrokerError> {
        let mut partitions = Vec::with_capacity(meta.config.partitions as usize);
        for p in 0..meta.config.partitions {
            let partition = backend.open_partition(&meta.name, p, &meta.config).await?;
            partitions.push(PartitionStore::JetStream(partition));
        }
        Ok(partitions)
    }

    /// A topic over its opened partitions; rebuilds the dedup window from them.
    pub async fn new(
        meta: TopicMeta,
        partitions: Vec<PartitionStore>,
    ) -> Result<Self, BrokerError> {
        let dedup = (meta.config.dedup_window_ms > 0)
            .then(|| DedupWindow::new(meta.config.dedup_window_ms, meta.config.dedup_entries_max));
        let topic = Self {
            meta,
            partitions,
            round_robin: AtomicU32::new(0),
            dedup,
        };
        topic.rebuild_dedup_window().await?;
        Ok(topic)
    }

    /// The topic's dedup window, if deduplication is on.
    pub fn dedup(&self) -> Option<&Arc<DedupWindow>> {
        self.dedup.as_ref()
    }

    /// Re-reads the events appended within the dedup window (after a restart).
    async fn rebuild_dedup_window(&self) -> Result<(), BrokerError> {
        let Some(dedup) = &self.dedup else {
            return Ok(());
        };
        let since = chrono::Utc::now().timestamp_millis() - dedup.window_ms();
        for (p, log) in self.partitions.iter().enumerate() {
            // Damaged stored data must not keep the broker from starting: it is skipped
            // here (and reported to whoever reads it).
            let mut offset = match log.offset_for_timestamp(since).await {
                Ok(offset) => offset,
                Err(error) => {
                    tracing::error!(topic = %self.meta.name, partition = p, %error, "dedup window: timestamp lookup failed; scanning the partition");
                    log.start_offset()
                }
            };
            while offset < log.next_offset() {
                let batch = match log.read(offset, 4096, 4 * 1024 * 1024).await {
                    Ok(batch) => batch,
                    Err(error @ BrokerError::Storage(herald_log::LogError::Corrupt { .. })) => {
                        let resume = log.offset_after_damage(offset);
                        tracing::error!(topic = %self.meta.name, partition = p, offset, resume, %error, "dedup window: skipping damaged data");
                        offset = resume;
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                let Some(last) = batch.last() else { break };
                offset = last.offset + 1;
                for stored in batch {
                    match herald_core::codec::decode_event(&stored.value) {
                        Ok(e) => dedup.remember(
                            crate::dedup::dedup_key(&e.source, &e.id),
                            p as u32,
                            stored.offset,
                            stored.timestamp_ms,
                        ),
                        Err(err) => {
                            tracing::warn!(topic = %self.meta.name, partition = p, offset = stored.offset, error = %err, "undecodable event skipped while rebuilding the dedup window")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub fn partitions(&self) -> &[PartitionStore] {
        &self.partitions
    }

    /// The log of `partition`, or a clear error naming the valid range.
    pub fn partition(&self, partition: u32) -> Result<&PartitionStore, BrokerError> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| BrokerError::PartitionNotFound {
                topic: self.meta.name.clone(),
                partition,
                count: self.partition_count(),
            })
    }

    /// Key hash when there is a key (same key, same partition), round-robin otherwise.
    pub fn choose_partition(&self, key: Option<&[u8]>) -> u32 {
        let count = self.partition_count();
        match key {
            Some(k) => partition_for_key(k, count),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % count,
        }
    }

    /// Closes every partition (drain, fsync).
    pub fn close(&self) {
        for (p, log) in self.partitions.iter().enumerate() {
            if let Err(e) = log.close() {
                tracing::error!(topic = %self.meta.name, partition = p, error = %e, "closing partition failed");
            }
        }
    }
}
