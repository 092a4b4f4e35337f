//! Topic partitions stored in NATS JetStream: one stream per partition (stream sequence
//! `n` = offset `n - 1`), so offsets stay dense and ordered whichever gateway appended.
//! Invariant: `next_offset()` only ever reports sequences the stream acknowledged; every
//! gateway learns other gateways' appends through a headers-only ordered consumer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use herald_log::{Record, StoredRecord};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::TopicConfig;
use crate::error::BrokerError;

/// How often opening a stream is retried when a concurrent creation races it.
const OPEN_RETRIES: u32 = 5;
/// Header carrying the record timestamp (milliseconds since the epoch, decimal).
const HEADER_TIMESTAMP: &str = "Herald-Ts";
/// Header carrying the record key (standard base64; absent when the record has none).
const HEADER_KEY: &str = "Herald-Key";
/// Reads of one partition keep at most this many message requests in flight.
const READ_PIPELINE: usize = 64;
/// Reads of at least this many records go through a short-lived consumer (the leader
/// streams the run in one batch) rather than one message request per record.
const CONSUMER_READ_MIN: u64 = 32;
/// How often each partition refreshes its start offset and size from the stream.
const INFO_REFRESH: Duration = Duration::from_secs(2);
/// How long a starting gateway waits for JetStream (a cluster electing its leader).
const READY_WAIT: Duration = Duration::from_secs(30);
/// Longest stream name Herald creates (JetStream allows 255 bytes).
const STREAM_NAME_MAX: usize = 200;
/// Pause before re-creating a tail consumer that failed.
const TAIL_RETRY: Duration = Duration::from_millis(500);

/// How Herald reaches JetStream (`herald serve --storage jetstream --nats-url ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// NATS server URL(s), comma-separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// Replicas per stream (1 for a single server, 3 for a 3-node cluster).
    pub replicas: usize,
    /// Prefix of every stream name and subject Herald creates.
    pub prefix: String,
}

impl JetStreamConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            replicas: 1,
            prefix: "HERALD".to_string(),
        }
    }
}

/// A connection to JetStream shared by every partition of a broker.
#[derive(Clone)]
pub struct JetStreamBackend {
    client: async_nats::Client,
    js: jetstream::Context,
    config: JetStreamConfig,
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("JetStream: {what}: {error}"))
}

impl JetStreamBackend {
    /// Connects to the NATS server(s) and checks that JetStream is enabled.
    pub async fn connect(config: JetStreamConfig) -> Result<Self, BrokerError> {
        let client = async_nats::ConnectOptions::new()
            .name("herald")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(
                config
                    .url
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .collect::<Vec<&str>>(),
            )
            .await
            .map_err(|e| unavailable(format_args!("connecting to {}", config.url), e))?;
        let js = jetstream::new(client.clone());
        // A cluster answers only once it has elected its JetStream leader: wait a while.
        let deadline = tokio::time::Instant::now() + READY_WAIT;
        loop {
            match jetstream_ready(&client).await {
                Ok(()) => break,
                Err(error) if tokio::time::Instant::now() >= deadline => return Err(error),
                Err(error) => {
                    tracing::info!(%error, "waiting for JetStream");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        Ok(Self { client, js, config })
    }

    pub fn config(&self) -> &JetStreamConfig {
        &self.config
    }

    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Opens (creating) a KV bucket with one value per key. The stream is made here with
    /// the KV layout rather than by `create_key_value`, whose account query does not
    /// parse the answer of NATS 2.9 servers.
    pub async fn key_value(
        &self,
        bucket: &str,
        description: &str,
    ) -> Result<async_nats::jetstream::kv::Store, BrokerError> {
        self.key_value_expiring(bucket, description, Duration::ZERO)
            .await
    }

    /// [`JetStreamBackend::key_value`] whose entries expire `max_age` after their last
    /// write (zero: never).
    pub async fn key_value_expiring(
        &self,
        bucket: &str,
        description: &str,
        max_age: Duration,
    ) -> Result<async_nats::jetstream::kv::Store, BrokerError> {
        self.open_key_value(bucket, description, max_age, true)
            .await
    }

    /// [`JetStreamBackend::key_value_expiring`] whose stream also allows deleting single
    /// messages by sequence (a compare-and-delete that leaves no tombstone) when it is
    /// created here. JetStream cannot lift `deny_delete` from an existing stream: check
    /// the store's `stream.cached_info().config.deny_delete`.
    pub async fn key_value_deletable(
        &self,
        bucket: &str,
        description: &str,
        max_age: Duration,
    ) -> Result<async_nats::jetstream::kv::Store, BrokerError> {
        self.open_key_value(bucket, description, max_age, false)
            .await
    }

    async fn open_key_value(
        &self,
        bucket: &str,
        description: &str,
        max_age: Duration,
        deny_delete: bool,
    ) -> Result<async_nats::jetstream::kv::Store, BrokerError> {
        let config = stream::Config {
            max_age,
            name: format!("KV_{bucket}"),
            description: Some(description.to_string()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            allow_rollup: true,
            deny_delete,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| unavailable(format_args!("creating bucket {bucket}"), e))?;
        self.js
            .get_key_value(bucket)
            .await
            .map_err(|e| unavailable(format_args!("opening bucket {bucket}"), e))
    }

    /// The stream of `topic`/`partition`. Topic names use `[A-Za-z0-9._-]`; `.` is not
    /// allowed in stream names or subject tokens, so it becomes `~` (never in a name).
    /// Names longer than JetStream's limit keep a prefix of the topic plus a hash of all of it.
    pub fn stream_name(&self, topic: &str, partition: u32) -> String {
        let escaped = topic.replace('.', "~");
        let name = format!("{}_{escaped}_{partition}", self.config.prefix);
        if name.len() <= STREAM_NAME_MAX {
            return name;
        }
        let hash = xxhash_rust::xxh3::xxh3_64(topic.as_bytes());
        let keep: String = escaped.chars().take(STREAM_NAME_MAX / 2).collect();
        format!("{}_{keep}~{hash:016x}_{partition}", self.config.prefix)
    }

    fn subject(&self, topic: &str, partition: u32) -> String {
        format!(
            "{}.t.{}.{partition}",
            self.config.prefix.to_ascii_lowercase(),
            topic.replace('.', "~")
        )
    }

    /// Opens the stream of a partition, creating it with the topic's retention.
    pub async fn open_partition(
        &self,
        topic: &str,
        partition: u32,
        config: &TopicConfig,
    ) -> Result<Arc<JetStreamPartition>, BrokerError> {
        let name = self.stream_name(topic, partition);
        let subject = self.subject(topic, partition);
        let mut stream_config = stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        if let Some(ms) = config.retention_ms {
            stream_config.max_age = Duration::from_millis(ms);
        }
        if let Some(bytes) = config.retention_bytes {
            stream_config.max_bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        }
        if config.dedup_window_ms > 0 {
            // JetStream refuses a duplicate window longer than the stream's max age.
            let mut window = Duration::from_millis(config.dedup_window_ms);
            if !stream_config.max_age.is_zero() {
                window = window.min(stream_config.max_age);
            }
            stream_config.duplicate_window = window;
        }
        // Two gateways opening a just-created topic's stream at the same moment: NATS 2.9
        // can answer the second "subjects overlap with an existing stream" (10065) while
        // the first creation completes; asking again finds the stream.
        let mut attempt = 0;
        let mut stream = loop {
            match self.js.get_or_create_stream(stream_config.clone()).await {
                Ok(stream) => break stream,
                Err(e) if attempt < OPEN_RETRIES && e.to_string().contains("10065") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Err(e) => return Err(unavailable(format_args!("opening stream {name}"), e)),
            }
        };
        let state = stream
            .info()
            .await
            .map_err(|e| unavailable(format_args!("reading stream {name}"), e))?
            .state
            .clone();
        let (next, _) = watch::channel(state.last_sequence);
        let partition = Arc::new(JetStreamPartition {
            topic: topic.to_string(),
            partition,
            subject,
            stream,
            js: self.js.clone(),
            client: self.client.clone(),
            next,
            start: AtomicU64::new(start_offset(&state)),
            bytes: AtomicU64::new(state.bytes),
            closed: AtomicBool::new(false),
            tail: parking_lot::Mutex::new(None),
            send: tokio::sync::Mutex::new(()),
            refreshed: Arc::new(parking_lot::Mutex::new(Some(Instant::now()))),
        });
        let tail = tokio::spawn(follow_tail(Arc::downgrade(&partition)));
        *partition.tail.lock() = Some(tail);
        Ok(partition)
    }

    /// Deletes the stream of a partition (topic deletion). A missing stream is fine.
    pub async fn delete_partition(&self, topic: &str, partition: u32) -> Result<(), BrokerError> {
        let name = self.stream_name(topic, partition);
        match self.js.delete_stream(&name).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(unavailable(format_args!("deleting stream {name}"), e)),
        }
    }
}

/// Whether JetStream answers `$JS.API.INFO` (parsed loosely: the account-info shape
/// differs between server versions).
async fn jetstream_ready(client: &async_nats::Client) -> Result<(), BrokerError> {
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request("$JS.API.INFO", Bytes::new()),
    )
    .await
    .map_err(|_| unavailable("asking for account info", "no answer within 5 s"))?
    .map_err(|e| unavailable("JetStream is not enabled on the server", e))?;
    let info: serde_json::Value = serde_json::from_slice(&reply.payload)
        .map_err(|e| unavailable("reading the account info", e))?;
    match info.get("error") {
        Some(error) => Err(unavailable("JetStream is not available", error)),
        None => Ok(()),
    }
}

/// The first offset still stored, from a stream's state.
fn start_offset(state: &stream::State) -> u64 {
    if state.messages == 0 {
        state.last_sequence
    } else {
        state.first_sequence.saturating_sub(1)
    }
}

/// One topic partition backed by one JetStream stream.
pub struct JetStreamPartition {
    topic: String,
    partition: u32,
    subject: String,
    stream: stream::Stream,
    js: jetstream::Context,
    client: async_nats::Client,
    /// `next_offset()`: the stream's last sequence seen by this gateway.
    next: watch::Sender<u64>,
    start: AtomicU64,
    bytes: AtomicU64,
    closed: AtomicBool,
    tail: parking_lot::Mutex<Option<JoinHandle<()>>>,
    /// Held while one append sends its records, so this gateway's batches reach the
    /// stream back to back (Kafka produce responses carry only a base offset).
    send: tokio::sync::Mutex<()>,
    /// When the last stream-info refresh completed; cleared when the end moves (the size
    /// with it) and by a purge this gateway made.
    refreshed: Arc<parking_lot::Mutex<Option<Instant>>>,
}

impl JetStreamPartition {
    /// Publishes every record (pipelined) and waits for all the stream's acks. Offsets
    /// follow the order of `records`, though another gateway's records may sit between.
    /// `dedup_ids[i]` becomes record `i`'s `Nats-Msg-Id`; the stream answers a repeat
    /// within its duplicate window with the original's sequence (`duplicates[i]`).
    pub async fn append(
        &self,
        records: Vec<Record>,
        dedup_ids: Vec<String>,
    ) -> Result<(Vec<u64>, Vec<bool>), BrokerError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(BrokerError::ShuttingDown);
        }
        let mut acks = Vec::with_capacity(records.len());
        let sending = self.send.lock().await;
        let mut dedup_ids = dedup_ids.into_iter();
        for record in records {
            let mut headers = HeaderMap::new();
            if let Some(id) = dedup_ids.next() {
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            }
            headers.insert(HEADER_TIMESTAMP, record.timestamp_ms.to_string().as_str());
            if let Some(key) = &record.key {
                let encoded = base64::engine::general_purpose::STANDARD.encode(key);
                headers.insert(HEADER_KEY, encoded.as_str());
            }
            let ack = self
                .js
                .publish_with_headers(self.subject.clone(), headers, record.value)
                .await
                .map_err(|e| self.error("publishing", e))?;
            acks.push(ack);
        }
        drop(sending);
        let mut offsets = Vec::with_capacity(acks.len());
        let mut duplicates = Vec::with_capacity(acks.len());
        for ack in acks {
            let ack = ack.await.map_err(|e| self.error("publishing", e))?;
            offsets.push(ack.sequence.saturating_sub(1));
            duplicates.push(ack.duplicate);
        }
        if let Some(last) = offsets.iter().max() {
            self.advance(last + 1);
        }
        Ok((offsets, duplicates))
    }

    /// Records from `offset`, fetched with pipelined message requests to the stream
    /// leader (never a possibly lagging replica).
    pub async fn read(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BrokerError> {
        let (start, end) = (self.start_offset(), self.next_offset());
        if offset < start || offset > end {
            return Err(BrokerError::OffsetOutOfRange {
                topic: self.topic.clone(),
                partition: self.partition,
                requested: offset,
                start,
                end,
            });
        }
        let count = (end - offset).min(max_records as u64);
        if count >= CONSUMER_READ_MIN {
            match self.read_by_consumer(offset, count, max_bytes).await {
                Ok(records) if !records.is_empty() => return Ok(records),
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(topic = %self.topic, partition = self.partition, offset, %error, "consumer read failed; reading message by message")
                }
            }
        }
        self.read_by_requests(offset, count, max_bytes).await
    }

    /// `count` records from `offset`, one pipelined message request each.
    async fn read_by_requests(
        &self,
        offset: u64,
        count: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BrokerError> {
        let window = (count as usize).clamp(1, READ_PIPELINE);
        let mut requests = futures::stream::iter((offset + 1..=offset + count).map(|sequence| {
            let stream = self.stream.clone();
            async move { (sequence, stream.get_raw_message(sequence).await) }
        }))
        .buffered(window);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some((sequence, result)) = requests.next().await {
            let message = match result {
                Ok(message) => message,
                // Removed by retention or a purge since `start` was read.
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => continue,
                Err(e) if out.is_empty() => {
                    return Err(self.error(format_args!("reading sequence {sequence}"), e))
                }
                Err(_) => break,
            };
            let record = self.stored_record(message)?;
            let size = record.payload_bytes();
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(record);
        }
        Ok(out)
    }

    /// Up to `count` records from `offset` through an ephemeral consumer (no acks, in
    /// memory, deleted afterwards): the server sends the run in one batch. Records removed
    /// meanwhile are skipped, as with message requests; an error leaves the caller to
    /// fall back to those (for instance a first record larger than `max_bytes`).
    async fn read_by_consumer(
        &self,
        offset: u64,
        count: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>, BrokerError> {
        let config = consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: offset + 1,
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        };
        let reader = self
            .stream
            .create_consumer(config)
            .await
            .map_err(|e| self.error("creating a reader on", e))?;
        let name = reader.cached_info().name.clone();
        let read = async {
            let mut batch = reader
                .fetch()
                .max_messages(count as usize)
                .max_bytes(max_bytes)
                .messages()
                .await
                .map_err(|e| self.error("reading", e))?;
            let mut out = Vec::new();
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| self.error("reading", e))?;
                let info = message.info().map_err(|e| self.error("reading", e))?;
                let sequence = info.stream_sequence;
                if sequence <= offset || sequence > offset + count {
                    break;
                }
                let published = info.published;
                let received_ms =
                    published.unix_timestamp() * 1000 + i64::from(published.millisecond());
                let (headers, payload) = (message.headers.clone(), message.payload.clone());
                out.push(self.decode_message(sequence, headers.as_ref(), payload, received_ms)?);
            }
            Ok::<_, BrokerError>(out)
        }
        .await;
        let stream = self.stream.clone();
        tokio::spawn(async move {
            // Best effort: an undeleted reader expires after its inactive threshold.
            let _ = stream.delete_consumer(&name).await;
        });
        read
    }

    fn stored_record(
        &self,
        message: async_nats::jetstream::message::StreamMessage,
    ) -> Result<StoredRecord, BrokerError> {
        let time = message.time;
        let received_ms = time.unix_timestamp() * 1000 + i64::from(time.millisecond());
        self.decode_message(
            message.sequence,
            Some(&message.headers),
            message.payload,
            received_ms,
        )
    }

    /// The record stored at stream `sequence`: timestamp from `Herald-Ts` (else when the
    /// stream received it), key from `Herald-Key`.
    pub(crate) fn decode_message(
        &self,
        sequence: u64,
        headers: Option<&HeaderMap>,
        payload: Bytes,
        received_ms: i64,
    ) -> Result<StoredRecord, BrokerError> {
        let offset = sequence.saturating_sub(1);
        let header = |name: &str| headers.and_then(|h| h.get(name));
        let timestamp_ms = header(HEADER_TIMESTAMP)
            .and_then(|v| v.as_str().parse::<i64>().ok())
            .unwrap_or(received_ms);
        let key = match header(HEADER_KEY) {
            None => None,
            Some(v) => Some(Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str())
                    .map_err(|e| self.corrupt(offset, format!("bad {HEADER_KEY} header: {e}")))?,
            )),
        };
        Ok(StoredRecord {
            offset,
            timestamp_ms,
            key,
            value: payload,
        })
    }

    /// The first offset whose timestamp is >= `timestamp_ms` (binary search on the
    /// `Herald-Ts` header; timestamps are taken as non-decreasing within a partition,
    /// which holds for one gateway and for gateways whose clocks agree).
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64, BrokerError> {
        let (mut low, mut high) = (self.start_offset(), self.next_offset());
        while low < high {
            let mid = low + (high - low) / 2;
            let before = match self.stream.get_raw_message(mid + 1).await {
                Ok(message) => self.stored_record(message)?.timestamp_ms < timestamp_ms,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => true,
                Err(e) => return Err(self.error("looking up a timestamp", e)),
            };
            if before {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        Ok(low)
    }

    pub fn start_offset(&self) -> u64 {
        self.start.load(Ordering::Acquire).min(self.next_offset())
    }

    pub fn next_offset(&self) -> u64 {
        *self.next.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.next.subscribe()
    }

    pub fn size_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Re-reads start, end and size from the stream's state.
    pub async fn refresh(&self) {
        match self.stream.get_info().await {
            Ok(info) => {
                self.apply_state(&info.state);
                *self.refreshed.lock() = Some(Instant::now());
            }
            Err(error) => {
                tracing::warn!(topic = %self.topic, partition = self.partition, %error, "JetStream stream info failed")
            }
        }
    }

    /// [`Self::refresh`] unless one completed within `max_age` and neither an append (seen
    /// by this gateway) nor a purge made here happened since: bounds how stale retention
    /// and other gateways' purges may look, at one stream-info request per `max_age`.
    pub async fn refresh_within(&self, max_age: Duration) {
        let fresh = self
            .refreshed
            .lock()
            .is_some_and(|at| at.elapsed() < max_age);
        if !fresh {
            self.refresh().await;
        }
    }

    fn apply_state(&self, state: &stream::State) {
        self.start.store(start_offset(state), Ordering::Release);
        self.bytes.store(state.bytes, Ordering::Relaxed);
        self.advance(state.last_sequence);
    }

    /// Removes the records below `offset` in the background (needs a tokio runtime).
    pub fn purge_before(&self, offset: u64) {
        if offset <= self.start_offset() {
            return;
        }
        let stream = self.stream.clone();
        let (topic, partition) = (self.topic.clone(), self.partition);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%topic, partition, offset, "JetStream purge skipped: no runtime");
            return;
        };
        let refreshed = Arc::clone(&self.refreshed);
        runtime.spawn(async move {
            if let Err(error) = stream.purge().sequence(offset + 1).await {
                tracing::warn!(%topic, partition, offset, %error, "JetStream purge failed");
            }
            *refreshed.lock() = None;
        });
    }

    /// Stops the tail follower; later appends fail with `ShuttingDown`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(tail) = self.tail.lock().take() {
            tail.abort();
        }
    }

    fn advance(&self, next: u64) {
        let moved = self.next.send_if_modified(|current| {
            let moved = next > *current;
            if moved {
                *current = next;
            }
            moved
        });
        if moved {
            // The size moved with the end: the next listing re-reads it.
            *self.refreshed.lock() = None;
        }
    }

    /// The stream handle (for consumers over it, e.g. a [`super::work_queue::WorkQueue`]).
    pub(crate) fn stream_handle(&self) -> stream::Stream {
        self.stream.clone()
    }

    pub(crate) fn client_handle(&self) -> async_nats::Client {
        self.client.clone()
    }

    pub(crate) fn error(
        &self,
        what: impl std::fmt::Display,
        error: impl std::fmt::Display,
    ) -> BrokerError {
        unavailable(
            format_args!("{what} {}/{}", self.topic, self.partition),
            error,
        )
    }

    /// `jetstream:<stream name>`, where error messages say the partition lives.
    pub fn location(&self) -> std::path::PathBuf {
        format!("jetstream:{}", self.stream.cached_info().config.name).into()
    }

    fn corrupt(&self, offset: u64, reason: String) -> BrokerError {
        BrokerError::Storage(herald_log::LogError::Corrupt {
            path: self.location(),
            position: offset,
            reason,
        })
    }
}

impl Drop for JetStreamPartition {
    fn drop(&mut self) {
        if let Some(tail) = self.tail.get_mut().take() {
            tail.abort();
        }
    }
}

/// Keeps a partition's `next_offset`, start and size current: a headers-only ordered
/// consumer reports every stored message (whichever gateway appended it), and a periodic
/// stream-info refresh catches purges, retention and a consumer that fell over.
async fn follow_tail(partition: std::sync::Weak<JetStreamPartition>) {
    loop {
        let Some(p) = partition.upgrade() else { return };
        let from = p.next_offset() + 1;
        let consumer = p
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: p.client.new_inbox(),
                headers_only: true,
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await;
        let mut messages = match consumer {
            Ok(consumer) => match consumer.messages().await {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(topic = %p.topic, partition = p.partition, %error, "JetStream tail consumer failed; retrying");
                    drop(p);
                    tokio::time::sleep(TAIL_RETRY).await;
                    continue;
                }
            },
            Err(error) => {
                tracing::warn!(topic = %p.topic, partition = p.partition, %error, "JetStream tail consumer failed; retrying");
                drop(p);
                tokio::time::sleep(TAIL_RETRY).await;
                continue;
            }
        };
        drop(p);
        let mut refresh = tokio::time::interval(INFO_REFRESH);
        loop {
            tokio::select! {
                message = messages.try_next() => {
                    let Some(p) = partition.upgrade() else { return };
                    match message {
                        Ok(Some(message)) => {
                            if let Ok(info) = message.info() {
                                p.advance(info.stream_sequence);
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(topic = %p.topic, partition = p.partition, %error, "JetStream tail consumer stopped; re-creating it");
                            break;
                        }
                    }
                }
                _ = refresh.tick() => {
                    let Some(p) = partition.upgrade() else { return };
                    p.refresh().await;
                }
            }
        }
        tokio::time::sleep(TAIL_RETRY).await;
    }
}
