//! [`WorkQueue`]: leases over one JetStream partition, kept by JetStream itself (a durable
//! pull consumer, explicit acks), so every gateway on the same JetStream hands out, acks,
//! delays and extends the same leases: no lease lives in a gateway's memory.
//!
//! JetStream does not fence a lapsed delivery (an ack sent with an earlier delivery's
//! subject still acknowledges the message, and NATS 2.9 can lose track of redeliveries
//! when acks arrive for messages it no longer holds), so every lease is also a key of the
//! [`LeaseTable`] (KV `<PREFIX>_leases`): `<queue>.<sequence>` = the delivery count of
//! the lease that holds the message now, written when it is handed out. An ack, nack or
//! dead-lettering first removes that key by compare-and-delete, and only the receipt of the
//! current delivery can: a stale receipt answers `LeaseLost`, a finished one
//! `AlreadyDone`, and neither reaches JetStream.
//!
//! A nack does not remove its key but rewrites it as a "waiting" marker until the message
//! is handed out again, so the table holds a key for every message delivered and not
//! finished. That makes finished records safe to delete ([`WorkQueue::trim`]): below
//! both JetStream's ack floor and the queue's lowest key (NATS 2.9 moves the ack floor
//! past a nacked message, nats-io/nats-server#5727).
//!
//! Invariants: a message is leased to at most one puller until its ack wait passes (then
//! JetStream delivers it again with a higher delivery count); an ack returns only after
//! the server confirmed it; a receipt is the message's ack subject (without `$JS.ACK.`)
//! and is accepted only if it names this queue's stream and consumer; a record is deleted
//! only below [`WorkQueue::done_below`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, kv, AckKind};
use async_nats::HeaderValue;
use bytes::Bytes;
use futures::StreamExt;
use herald_log::StoredRecord;

use crate::error::BrokerError;
use crate::storage::jetstream::JetStreamPartition;
use crate::storage::JetStreamBackend;

/// Prefix of every JetStream ack subject.
const ACK_PREFIX: &str = "$JS.ACK.";
/// Longest one fetch is read.
const FETCH_LIMIT: Duration = Duration::from_secs(1);
/// Longest an ack waits for the server's confirmation.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a scan of one queue's lease keys may take.
const SCAN_LIMIT: Duration = Duration::from_secs(5);
/// Most records one trim deletes, and how many deletes it keeps in flight.
const TRIM_BATCH: u64 = 10_000;
const TRIM_CONCURRENCY: usize = 64;

/// How long a lease entry outlives its last write (longer than any visibility timeout).
const LEASE_ENTRY_MAX_AGE: Duration = Duration::from_secs(3 * 24 * 3600);

/// The current lease of every message handed out by any work queue (see the module docs).
#[derive(Clone)]
pub struct LeaseTable {
    kv: kv::Store,
    js: async_nats::jetstream::Context,
    /// False for a bucket made by an earlier version (`deny_delete`): entries are then
    /// ended with a compare-and-set KV delete, which leaves a tombstone.
    deletable: bool,
}

impl LeaseTable {
    pub async fn open(backend: &JetStreamBackend) -> Result<Self, BrokerError> {
        let bucket = format!("{}_leases", backend.config().prefix);
        let kv = backend
            .key_value_deletable(
                &bucket,
                "Herald work-queue leases: the delivery holding each message",
                LEASE_ENTRY_MAX_AGE,
            )
            .await?;
        let deletable = !kv.stream.cached_info().config.deny_delete;
        if !deletable {
            tracing::info!(
                %bucket,
                "the lease table was made by an earlier Herald: finished leases leave a \
                 tombstone for 3 days (delete the bucket while no queue is in use to lift this)"
            );
        }
        Ok(Self {
            kv,
            js: backend.context().clone(),
            deletable,
        })
    }

    /// Removes the entry written at `revision` if it is still there: a compare-and-delete
    /// by stream sequence (the bucket keeps one message per key, so a newer lease of the
    /// same message has another sequence and stays). Unlike a KV delete or purge it leaves
    /// no tombstone behind, which would stay for [`LEASE_ENTRY_MAX_AGE`]: one per message
    /// ever acknowledged.
    async fn remove(&self, key: &str, revision: u64) -> Result<(), String> {
        if !self.deletable {
            return self
                .kv
                .delete_expect_revision(key, Some(revision))
                .await
                .map_err(|e| e.to_string());
        }
        let subject = format!("STREAM.MSG.DELETE.{}", self.kv.stream_name);
        let answer: serde_json::Value = self
            .js
            .request(
                subject,
                &serde_json::json!({"seq": revision, "no_erase": true}),
            )
            .await
            .map_err(|e| e.to_string())?;
        if answer["success"].as_bool() == Some(true) {
            return Ok(());
        }
        Err(answer["error"]["description"]
            .as_str()
            .unwrap_or("the entry was not removed")
            .to_string())
    }
}

/// What became of a receipt's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The receipt held the message; the operation went through.
    Done,
    /// The message was handed out again since: this receipt no longer holds it.
    LeaseLost,
    /// The message is acknowledged or terminated already.
    AlreadyDone,
}

/// Settings of one work queue.
#[derive(Clone)]
pub struct WorkQueueConfig {
    /// The durable consumer's name (`[A-Za-z0-9_-]`).
    pub consumer: String,
    /// How long a lease lasts without an ack or progress.
    pub ack_wait: Duration,
    /// Most messages leased at once (JetStream stops handing out more beyond it).
    pub max_ack_pending: i64,
    pub leases: LeaseTable,
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
    /// A fetch asks for no more (a request beyond the lease limit stays open until it
    /// expires).
    fetch_max: usize,
    leases: LeaseTable,
    ack_wait: Duration,
    /// This queue's keys in the lease table: the stream's name and creation time, hashed
    /// (a re-created stream of the same name gets other keys).
    lease_prefix: String,
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
        let info = stream.cached_info();
        let identity = format!("{}@{}", info.config.name, info.created);
        let lease_prefix = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(identity.as_bytes()));
        Ok(WorkQueue {
            partition: Arc::clone(self),
            consumer,
            client: self.client_handle(),
            leases: config.leases,
            ack_wait: config.ack_wait,
            lease_prefix,
            stream_name: info.config.name.clone(),
            consumer_name: config.consumer,
            fetch_max: usize::try_from(config.max_ack_pending)
                .unwrap_or(usize::MAX)
                .max(1),
        })
    }
}

impl WorkQueue {
    /// Leases up to `max` messages that are ready now (never waits: callers poll or
    /// follow the partition's end); none while `max_ack_pending` messages are leased.
    pub async fn fetch(&self, max: usize) -> Result<Vec<LeasedRecord>, BrokerError> {
        // No delivery of this fetch can start before now: its lease lasts at least this.
        let expires_ms = lease_expiry(self.ack_wait);
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max.clamp(1, self.fetch_max))
            .messages()
            .await
            .map_err(|e| self.partition.error("leasing from", e))?;
        let mut out = Vec::new();
        // A no-wait fetch ends at once when nothing (more) is ready. A request that asks
        // for more than the lease limit leaves is the exception: the server keeps it open,
        // so it is bounded here (a message it delivers later is leased until its ack wait).
        let deadline = tokio::time::Instant::now() + FETCH_LIMIT;
        loop {
            let Ok(message) = tokio::time::timeout_at(deadline, batch.next()).await else {
                tracing::debug!("a work-queue fetch stayed open; ending it");
                break;
            };
            let Some(message) = message else { break };
            let message = match message {
                Ok(message) => message,
                // At its lease limit (`max_ack_pending`) the consumer answers 409:
                // nothing more to lease until an ack.
                Err(e) if e.to_string().contains("MaxAckPending") => break,
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
        // Each message now belongs to this delivery (a failure leaves them leased in
        // JetStream until their ack wait passes, like a puller that vanished).
        let writes = out.iter().map(|leased| {
            let key = self.lease_key(leased.record.offset + 1);
            let value = lease_value(leased.delivery_count, expires_ms);
            async move { self.leases.kv.put(key, value).await }
        });
        for written in futures::future::join_all(writes).await {
            written.map_err(|e| self.partition.error("recording leases of", e))?;
        }
        Ok(out)
    }

    fn lease_key(&self, sequence: u64) -> String {
        format!("{}.{sequence}", self.lease_prefix)
    }

    /// Whether `receipt` holds its message now: its lease entry and that entry's revision.
    /// With `within_lease`, a lease within [`EXPIRY_MARGIN_MS`] of its end (when JetStream may
    /// hand the message out again) no longer counts.
    async fn current_lease(
        &self,
        receipt: &str,
        within_lease: bool,
    ) -> Result<Result<(String, u64), LeaseOutcome>, BrokerError> {
        let info = self.parse_receipt(receipt).ok_or_else(|| {
            BrokerError::Unavailable(format!("`{receipt}` is not a receipt of this queue"))
        })?;
        let key = self.lease_key(info.offset + 1);
        let entry = self
            .leases
            .kv
            .entry(key.clone())
            .await
            .map_err(|e| self.partition.error("reading a lease of", e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(Err(LeaseOutcome::AlreadyDone));
        };
        let (count, expires_ms) = match parse_lease_value(&entry.value) {
            Some(LeaseEntry::Held {
                delivery_count,
                expires_ms,
            }) => (delivery_count, expires_ms),
            // Handed back by a nack: that receipt's lease is over.
            Some(LeaseEntry::Waiting) => return Ok(Err(LeaseOutcome::AlreadyDone)),
            None => return Ok(Err(LeaseOutcome::LeaseLost)),
        };
        let lapsed = now_ms().saturating_add(EXPIRY_MARGIN_MS) >= expires_ms;
        if count != info.delivery_count || (within_lease && lapsed) {
            return Ok(Err(LeaseOutcome::LeaseLost));
        }
        Ok(Ok((key, entry.revision)))
    }

    /// Ends `receipt`'s lease in the table if it is the current one (compare-and-set to a
    /// waiting marker, which keeps the message from being trimmed): on `Done` the caller
    /// owns the message and must follow with [`WorkQueue::ack_taken`] or
    /// [`WorkQueue::term_taken`], which remove the marker (else JetStream hands the
    /// message out again after its ack wait).
    pub async fn take(&self, receipt: &str) -> Result<LeaseOutcome, BrokerError> {
        self.take_checked(receipt, true, Finish::Wait).await
    }

    /// [`WorkQueue::take`] of a lease whose time ran out but whose message was not handed
    /// out again (yet): to dead-letter a lapsed last delivery.
    pub async fn take_lapsed(&self, receipt: &str) -> Result<LeaseOutcome, BrokerError> {
        self.take_checked(receipt, false, Finish::Wait).await
    }

    async fn take_checked(
        &self,
        receipt: &str,
        within_lease: bool,
        finish: Finish,
    ) -> Result<LeaseOutcome, BrokerError> {
        let (key, revision) = match self.current_lease(receipt, within_lease).await? {
            Ok(current) => current,
            Err(outcome) => return Ok(outcome),
        };
        let ended = match finish {
            Finish::Remove => self.leases.remove(&key, revision).await,
            Finish::Wait => {
                let count = self.parse_receipt(receipt).map_or(0, |r| r.delivery_count);
                self.leases
                    .kv
                    .update(&key, waiting_value(count), revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        };
        match ended {
            Ok(()) => Ok(LeaseOutcome::Done),
            Err(e) => match self.current_lease(receipt, false).await? {
                // Unchanged: the write itself failed.
                Ok((_, now)) if now == revision => {
                    Err(self.partition.error("ending a lease of", e))
                }
                // Handed out again (or ended through another gateway) in between.
                Ok(_) => Ok(LeaseOutcome::LeaseLost),
                Err(outcome) => Ok(outcome),
            },
        }
    }

    /// The offset and delivery count a receipt of this queue names; `None` if it is not
    /// one (wrong stream or consumer, malformed).
    pub fn parse_receipt(&self, receipt: &str) -> Option<ReceiptInfo> {
        parse_receipt(receipt, &self.stream_name, &self.consumer_name)
    }

    /// Acknowledges a message for good if `receipt` holds it; returns once the server
    /// confirmed it.
    pub async fn ack(&self, receipt: &str) -> Result<LeaseOutcome, BrokerError> {
        self.subject(receipt)?;
        let outcome = self.take_checked(receipt, true, Finish::Remove).await?;
        if outcome == LeaseOutcome::Done {
            if let Err(error) = self.confirm_ack(receipt).await {
                // Unacknowledged and without a key, the trim could pass the message if
                // the ack floor did (after an earlier nack): put a marker back.
                let key = self.lease_key(self.parse_receipt(receipt).map_or(0, |r| r.offset) + 1);
                let count = self.parse_receipt(receipt).map_or(0, |r| r.delivery_count);
                if let Err(e) = self.leases.kv.create(&key, waiting_value(count)).await {
                    tracing::debug!(error = %e, "restoring a lease key after a failed ack");
                }
                return Err(error);
            }
        }
        Ok(outcome)
    }

    /// Acknowledges a message taken with [`WorkQueue::take`]; returns once confirmed,
    /// then removes its marker.
    pub async fn ack_taken(&self, receipt: &str) -> Result<(), BrokerError> {
        self.confirm_ack(receipt).await?;
        self.remove_marker(receipt).await;
        Ok(())
    }

    async fn confirm_ack(&self, receipt: &str) -> Result<(), BrokerError> {
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

    /// Removes the waiting marker a take left for `receipt`'s message, once the message is
    /// finished (a marker left behind holds the trim back until it expires, logged).
    async fn remove_marker(&self, receipt: &str) {
        let Some(info) = self.parse_receipt(receipt) else {
            return;
        };
        let key = self.lease_key(info.offset + 1);
        let removed = match self.leases.kv.entry(key.clone()).await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put
                    && parse_lease_value(&entry.value) == Some(LeaseEntry::Waiting) =>
            {
                self.leases.remove(&key, entry.revision).await
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = removed {
            tracing::warn!(%error, %key, "removing a finished message's lease key failed: the queue is not trimmed past it until the key expires");
        }
    }

    /// Never delivers a message taken with [`WorkQueue::take`] again; then removes its
    /// marker.
    pub async fn term_taken(&self, receipt: &str) -> Result<(), BrokerError> {
        self.signal(receipt, AckKind::Term).await?;
        self.remove_marker(receipt).await;
        Ok(())
    }

    /// Releases a lease `receipt` holds: delivered again after `delay` (at once without).
    /// Its key stays in the lease table as a waiting marker until then (see the module
    /// docs).
    pub async fn nak(
        &self,
        receipt: &str,
        delay: Option<Duration>,
    ) -> Result<LeaseOutcome, BrokerError> {
        let outcome = self.take_checked(receipt, true, Finish::Wait).await?;
        if outcome == LeaseOutcome::Done {
            self.signal(receipt, AckKind::Nak(delay.filter(|d| !d.is_zero())))
                .await?;
        }
        Ok(outcome)
    }

    /// Restarts the ack wait of a lease `receipt` holds.
    pub async fn progress(&self, receipt: &str) -> Result<LeaseOutcome, BrokerError> {
        let (key, revision) = match self.current_lease(receipt, true).await? {
            Ok(current) => current,
            Err(outcome) => return Ok(outcome),
        };
        let expires_ms = lease_expiry(self.ack_wait);
        self.signal(receipt, AckKind::Progress).await?;
        let count = self.parse_receipt(receipt).map_or(0, |r| r.delivery_count);
        match self
            .leases
            .kv
            .update(&key, lease_value(count, expires_ms), revision)
            .await
        {
            Ok(_) => Ok(LeaseOutcome::Done),
            // Ended or handed out again in between.
            Err(_) => Ok(match self.current_lease(receipt, false).await? {
                Ok(_) => LeaseOutcome::LeaseLost,
                Err(outcome) => outcome,
            }),
        }
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

    /// Every offset below it is finished for good (acknowledged or terminated): JetStream's
    /// ack floor, lowered to the lowest message this queue has in the lease table (leased,
    /// or waiting after a nack). The consumer is read before the table, so a message the
    /// floor skipped was nacked before and has its marker.
    pub async fn done_below(&self) -> Result<u64, BrokerError> {
        let counts = self.counts().await?;
        let lowest = self.lowest_key().await?;
        Ok(safe_floor(counts.ack_floor, lowest))
    }

    /// Deletes up to [`TRIM_BATCH`] records below [`WorkQueue::done_below`] and appended
    /// at least `min_age` ago (recent copies stay readable, e.g. by the console's event
    /// chains), one message at a time: a stream purge would be shorter, but NATS 2.9 forgets every pending
    /// delivery of the stream's consumers on a purge (leased and nacked messages above it
    /// too would never come back), while deleting a finished message leaves them alone.
    /// Returns the floor and whether records below it are left.
    pub async fn trim(&self, min_age: Duration) -> Result<(u64, bool), BrokerError> {
        let floor = self.done_below().await?;
        self.partition.refresh().await;
        let start = self.partition.start_offset();
        if start >= floor {
            return Ok((floor, false));
        }
        let min_age_ms = i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX);
        let floor = if min_age.is_zero() {
            floor
        } else {
            let young = self
                .partition
                .offset_for_timestamp(now_ms().saturating_sub(min_age_ms))
                .await?;
            floor.min(young)
        };
        if start >= floor {
            return Ok((floor, false));
        }
        let end = floor.min(start + TRIM_BATCH);
        let subject = format!("STREAM.MSG.DELETE.{}", self.stream_name);
        let deletes = futures::stream::iter(start..end).map(|offset| {
            let subject = subject.clone();
            async move {
                let answer: serde_json::Value = self
                    .leases
                    .js
                    .request(
                        subject,
                        &serde_json::json!({"seq": offset + 1, "no_erase": true}),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                // 10037: no message found (deleted by another gateway already).
                if answer["success"].as_bool() == Some(true)
                    || answer["error"]["err_code"].as_u64() == Some(10037)
                {
                    return Ok(());
                }
                Err(answer["error"]["description"]
                    .as_str()
                    .unwrap_or("not deleted")
                    .to_string())
            }
        });
        let mut results = std::pin::pin!(deletes.buffer_unordered(TRIM_CONCURRENCY));
        let mut failed = None;
        while let Some(result) = results.next().await {
            if let Err(error) = result {
                failed.get_or_insert(error);
            }
        }
        self.partition.refresh().await;
        if let Some(error) = failed {
            return Err(self.partition.error("deleting finished records of", error));
        }
        Ok((floor, end < floor))
    }

    /// The lowest stream sequence this queue has a key for in the lease table: a scan of
    /// the keys' latest values (headers only) with an ordered consumer.
    async fn lowest_key(&self) -> Result<Option<u64>, BrokerError> {
        let kv = &self.leases.kv;
        let prefix = format!("{}{}.", kv.prefix, self.lease_prefix);
        let scan = async {
            let consumer = kv
                .stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: self.client.new_inbox(),
                    description: Some("herald lease scan".to_string()),
                    filter_subject: format!("{prefix}>"),
                    headers_only: true,
                    deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                    replay_policy: consumer::ReplayPolicy::Instant,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            if consumer.cached_info().num_pending == 0 {
                return Ok(None);
            }
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            let mut lowest: Option<u64> = None;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| e.to_string())?;
                let removed = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("KV-Operation"))
                    .is_some_and(|op: &HeaderValue| op.as_str() != "PUT");
                let sequence = message
                    .subject
                    .strip_prefix(prefix.as_str())
                    .and_then(|s| s.parse::<u64>().ok());
                if let (false, Some(sequence)) = (removed, sequence) {
                    lowest = Some(lowest.map_or(sequence, |l| l.min(sequence)));
                }
                if message.info().map_err(|e| e.to_string())?.pending == 0 {
                    return Ok(lowest);
                }
            }
            Err("the scan ended early".to_string())
        };
        tokio::time::timeout(SCAN_LIMIT, scan)
            .await
            .map_err(|_| self.partition.error("scanning the leases of", "timed out"))?
            .map_err(|e| self.partition.error("scanning the leases of", e))
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

/// A lease ends this close to its expiry as far as acks are concerned: JetStream may hand
/// the message out again once it passes, and an ack must reach it before.
const EXPIRY_MARGIN_MS: i64 = 25;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// When a lease granted (or renewed) from now on ends at the earliest.
fn lease_expiry(ack_wait: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(ack_wait.as_millis()).unwrap_or(i64::MAX))
}

/// How a lease ends in the table.
#[derive(Debug, Clone, Copy)]
enum Finish {
    /// The message is done (acked, terminated) or about to be: the key goes.
    Remove,
    /// The message goes back to JetStream (nack): the key stays as a waiting marker.
    Wait,
}

/// A lease table value, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseEntry {
    Held {
        delivery_count: u32,
        expires_ms: i64,
    },
    /// Handed back, not delivered again yet.
    Waiting,
}

/// A lease table value: `<delivery count> <expires ms>`.
fn lease_value(delivery_count: u32, expires_ms: i64) -> Bytes {
    Bytes::from(format!("{delivery_count} {expires_ms}"))
}

/// A waiting marker: `<delivery count of the nacked lease> waiting`.
fn waiting_value(delivery_count: u32) -> Bytes {
    Bytes::from(format!("{delivery_count} waiting"))
}

fn parse_lease_value(value: &[u8]) -> Option<LeaseEntry> {
    let text = std::str::from_utf8(value).ok()?;
    let (count, expires) = text.split_once(' ')?;
    let delivery_count = count.parse().ok()?;
    if expires == "waiting" {
        return Some(LeaseEntry::Waiting);
    }
    Some(LeaseEntry::Held {
        delivery_count,
        expires_ms: expires.parse().ok()?,
    })
}

/// The offset below which a queue is done, from JetStream's ack floor (the last stream
/// sequence acknowledged with all before it) and the lowest sequence with a lease key.
fn safe_floor(ack_floor: u64, lowest_key: Option<u64>) -> u64 {
    // Sequence s is offset s - 1: the floor sequence `ack_floor + 1` is offset `ack_floor`.
    match lowest_key {
        Some(sequence) => ack_floor.min(sequence.saturating_sub(1)),
        None => ack_floor,
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
    fn lease_values_round_trip() {
        assert_eq!(
            parse_lease_value(&lease_value(3, 1_700_000_000_000)),
            Some(LeaseEntry::Held {
                delivery_count: 3,
                expires_ms: 1_700_000_000_000
            })
        );
        assert_eq!(
            parse_lease_value(&waiting_value(2)),
            Some(LeaseEntry::Waiting)
        );
        for bad in ["", "3", "x 5", "3 later", "3 waiting extra"] {
            assert_eq!(parse_lease_value(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn the_floor_stays_below_every_message_with_a_key() {
        // Nothing acked, nothing leased.
        assert_eq!(safe_floor(0, None), 0);
        // Sequences 1..=10 acked (offsets 0..=9): offset 10 is the first not done.
        assert_eq!(safe_floor(10, None), 10);
        // The ack floor moved past sequence 4, nacked and waiting: offset 3 stays.
        assert_eq!(safe_floor(10, Some(4)), 3);
        // A key above the ack floor changes nothing.
        assert_eq!(safe_floor(10, Some(12)), 10);
        assert_eq!(safe_floor(10, Some(11)), 10);
    }

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
