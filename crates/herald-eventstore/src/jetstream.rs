//! The event store on NATS JetStream: JetStream is the log, each gateway keeps a local
//! mirror. One JetStream stream `<PREFIX>_ES` holds every write (one message per append,
//! metadata change or delete, on subject `<prefix>.es.<stream>`); a follower applies its
//! messages in sequence order to this gateway's local log and index, through the same
//! path as embedded writes, so `$all` positions are identical on every gateway.
//!
//! Owns: publishing a write with `Nats-Expected-Last-Subject-Sequence` (optimistic
//! concurrency across gateways), the mirror follower, and waiting for the mirror.
//! Invariants: a write returns only once JetStream acknowledged it *and* the mirror
//! applied it (read-your-writes on the writing gateway); the mirror applies messages in
//! sequence order, each one whole or not at all; a message that is not a valid write at
//! the mirror's state is skipped by every gateway alike (so they never diverge).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures::TryStreamExt;
use herald_broker::storage::kv::{escape_key, unescape_key};
use herald_broker::storage::JetStreamBackend;
use herald_log::{AppendOutcome, Record};
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

use crate::error::EventStoreError;
use crate::index::{Change, Index};
use crate::store::{EventStore, Inner};

/// How often a write that lost the race with another gateway is rebuilt and retried.
pub(crate) const CONFLICT_RETRIES: u32 = 16;
/// Header naming this gateway's pending write, so the mirror can hand it its positions.
const HEADER_WRITE: &str = "Herald-Write";
/// Header carrying the subject sequence the write expected to follow. JetStream checks it
/// (`Nats-Expected-Last-Subject-Sequence`) and the mirror checks it again: a clustered
/// NATS 2.9 can accept two racing writes that expected the same sequence, and the mirror
/// then skips the second on every gateway, so it never takes effect anywhere.
const HEADER_EXPECTS: &str = "Herald-Expects";
/// How long a write acknowledged by JetStream waits for the mirror to apply it.
const APPLY_WAIT: Duration = Duration::from_secs(30);
/// Pause before re-creating a mirror consumer that failed.
const FOLLOW_RETRY: Duration = Duration::from_millis(500);
/// Room left in a NATS message for the headers next to the payload.
const HEADER_ROOM_BYTES: usize = 512;

/// What became of one message in the mirror: its positions, or why it was skipped.
type Applied = Result<AppendOutcome, String>;

/// What the mirror has done: the last JetStream sequence applied, or why it stopped.
#[derive(Clone, Debug, Default)]
struct MirrorState {
    applied: u64,
    failed: Option<String>,
}

/// This gateway's connection to the event store's JetStream stream.
pub(crate) struct Remote {
    js: jetstream::Context,
    client: async_nats::Client,
    stream: stream::Stream,
    stream_name: String,
    /// `<prefix lowercase>.es.`; a stream's subject is this plus its escaped name.
    subject_prefix: String,
    /// Unique per opened store: names this gateway's writes in [`HEADER_WRITE`].
    gateway: String,
    next_write: AtomicU64,
    /// Writes published by this gateway and not yet applied, by their header value:
    /// told where the mirror put them, or why it skipped them.
    waiters: Mutex<HashMap<String, oneshot::Sender<Applied>>>,
    state: watch::Sender<MirrorState>,
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> EventStoreError {
    EventStoreError::Unavailable(format!("JetStream: {what}: {error}"))
}

impl Remote {
    /// Opens (creating) `<PREFIX>_ES` on the backend's JetStream.
    pub(crate) async fn open(backend: &JetStreamBackend) -> Result<Self, EventStoreError> {
        let config = backend.config();
        let stream_name = format!("{}_ES", config.prefix);
        let subject_prefix = format!("{}.es.", config.prefix.to_ascii_lowercase());
        let js = backend.context().clone();
        let stream = js
            .get_or_create_stream(stream::Config {
                name: stream_name.clone(),
                description: Some("Herald event store: one message per write".to_string()),
                subjects: vec![format!("{subject_prefix}>")],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                // The event store's history is its truth: nothing ages out or is removed.
                deny_delete: true,
                deny_purge: true,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(format_args!("opening stream {stream_name}"), e))?;
        Ok(Self {
            client: js.client(),
            js,
            stream,
            stream_name,
            subject_prefix,
            gateway: format!("{:016x}", rand::random::<u64>()),
            next_write: AtomicU64::new(0),
            waiters: Mutex::new(HashMap::new()),
            state: watch::Sender::new(MirrorState::default()),
        })
    }

    pub(crate) fn stream_name(&self) -> &str {
        &self.stream_name
    }

    fn subject(&self, stream: &str) -> String {
        format!("{}{}", self.subject_prefix, escape_key(stream))
    }

    /// The last JetStream sequence the mirror applied.
    pub(crate) fn applied(&self) -> u64 {
        self.state.borrow().applied
    }

    /// The stream's last sequence now (what the mirror must reach to be current).
    pub(crate) async fn last_sequence(&self) -> Result<u64, EventStoreError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| unavailable(format_args!("reading stream {}", self.stream_name), e))?;
        Ok(info.state.last_sequence)
    }

    /// Waits until the mirror holds every write JetStream has now.
    pub(crate) async fn catch_up(&self) -> Result<(), EventStoreError> {
        let last = self.last_sequence().await?;
        self.wait_applied(last, Some(APPLY_WAIT)).await
    }

    /// Waits until the mirror applied `sequence` (or stopped), at most `limit` if given.
    pub(crate) async fn wait_applied(
        &self,
        sequence: u64,
        limit: Option<Duration>,
    ) -> Result<(), EventStoreError> {
        let mut state = self.state.subscribe();
        let wait = state.wait_for(|s| s.applied >= sequence || s.failed.is_some());
        let reached = match limit {
            Some(limit) => tokio::time::timeout(limit, wait).await.map_err(|_| {
                EventStoreError::Unavailable(format!(
                    "this gateway's mirror of JetStream did not reach sequence {sequence} \
                     within {limit:?}"
                ))
            })?,
            None => wait.await,
        };
        let reached = reached.map_err(|_| EventStoreError::Closed)?;
        match &reached.failed {
            Some(reason) => Err(EventStoreError::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    /// Publishes one write of `stream` expecting the stream's last JetStream message to
    /// be `last_sequence` (0: none). `Some(outcome)`: stored and applied here, at these
    /// positions. `None`: another gateway wrote the stream first; the mirror has caught up
    /// since, so the caller re-checks on the current state and may retry.
    pub(crate) async fn publish(
        &self,
        stream: &str,
        records: &[Record],
        last_sequence: u64,
    ) -> Result<Option<AppendOutcome>, EventStoreError> {
        if let Some(reason) = &self.state.borrow().failed {
            return Err(EventStoreError::Poisoned(reason.clone()));
        }
        let payload = crate::batch::encode(records);
        let max = self.client.max_payload();
        if payload.len() + HEADER_ROOM_BYTES > max {
            return Err(EventStoreError::AppendTooLarge {
                size: payload.len() as u64,
                max: max.saturating_sub(HEADER_ROOM_BYTES) as u64,
            });
        }
        let write = format!(
            "{}-{}",
            self.gateway,
            self.next_write.fetch_add(1, Ordering::Relaxed)
        );
        let (sender, applied) = oneshot::channel();
        self.waiters.lock().insert(write.clone(), sender);
        let _waiting = Waiting {
            remote: self,
            write: &write,
        };
        let message = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(payload))
            .expected_last_subject_sequence(last_sequence)
            .header(HEADER_EXPECTS, last_sequence.to_string().as_str())
            .header(HEADER_WRITE, write.as_str());
        match self.send(stream, message, records, max).await? {
            Some(sequence) => self.await_applied(stream, sequence, applied).await,
            None => Ok(None),
        }
    }

    /// Publishes a write; its JetStream sequence, or `None` when JetStream refused it for
    /// losing the race (the mirror has caught up since).
    async fn send(
        &self,
        stream: &str,
        message: jetstream::message::PublishMessage,
        records: &[Record],
        max_payload: usize,
    ) -> Result<Option<u64>, EventStoreError> {
        let acked = async {
            self.js
                .send_publish(self.subject(stream), message)
                .await?
                .await
        }
        .await;
        match acked {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                self.catch_up().await?;
                Ok(None)
            }
            Err(error) if error.kind() == PublishErrorKind::MaxPayloadExceeded => {
                Err(EventStoreError::AppendTooLarge {
                    size: records.iter().map(|r| r.value.len() as u64).sum(),
                    max: max_payload as u64,
                })
            }
            Err(error) => Err(unavailable(
                format_args!("writing stream `{stream}` (outcome unknown)"),
                error,
            )),
        }
    }

    /// Waits for the mirror to apply this gateway's write stored at `sequence`.
    async fn await_applied(
        &self,
        stream: &str,
        sequence: u64,
        applied: oneshot::Receiver<Applied>,
    ) -> Result<Option<AppendOutcome>, EventStoreError> {
        match tokio::time::timeout(APPLY_WAIT, applied).await {
            Ok(Ok(Ok(outcome))) => Ok(Some(outcome)),
            // Stored, but skipped by every gateway (JetStream let it through though it lost
            // the race): it took effect nowhere, so it is a lost race like any other.
            Ok(Ok(Err(reason))) => {
                tracing::warn!(
                    stream,
                    sequence,
                    %reason,
                    "a write JetStream accepted was skipped by the mirror; re-checking"
                );
                self.catch_up().await?;
                Ok(None)
            }
            Ok(Err(_)) => Err(match &self.state.borrow().failed {
                Some(reason) => EventStoreError::Poisoned(reason.clone()),
                None => EventStoreError::Closed,
            }),
            Err(_) => Err(EventStoreError::Unavailable(format!(
                "the write is stored in JetStream (sequence {sequence}) but this gateway's \
                 mirror has not applied it within {APPLY_WAIT:?}"
            ))),
        }
    }

    /// Fails the writes waiting for the mirror (the store is closing).
    pub(crate) fn stop(&self) {
        self.waiters.lock().clear();
    }

    /// Stops the mirror for good: later writes and waits fail with `reason`.
    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the event store mirror of JetStream stopped");
        self.state.send_modify(|s| {
            s.failed.get_or_insert(reason);
        });
        self.waiters.lock().clear();
    }

    /// Applies one message of the stream to `store` (in sequence order).
    async fn apply(
        &self,
        store: &EventStore,
        message: jetstream::Message,
    ) -> Result<(), EventStoreError> {
        let sequence = message
            .info()
            .map_err(|e| unavailable("reading a message's sequence", e))?
            .stream_sequence;
        if sequence <= self.applied() {
            return Ok(()); // Delivered again after the consumer was re-created.
        }
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let write = header(HEADER_WRITE);
        let expects = header(HEADER_EXPECTS).and_then(|v| v.parse::<u64>().ok());
        match self.validate(store, &message.subject, &message.payload, expects) {
            Ok(records) => {
                let outcome = store.commit_batch(records, sequence).await?;
                self.state.send_modify(|s| s.applied = sequence);
                if let Some(sender) = write.and_then(|w| self.waiters.lock().remove(&w)) {
                    let _ = sender.send(Ok(outcome));
                }
            }
            Err(reason) => {
                // Every gateway sees the same message at the same state: all skip it.
                tracing::error!(
                    stream = %self.stream_name,
                    sequence,
                    %reason,
                    "skipping a JetStream message that is not a valid event-store write"
                );
                // It is still the last message on its subject: the next write there
                // must expect it.
                if let Some(stream) = message
                    .subject
                    .strip_prefix(self.subject_prefix.as_str())
                    .map(unescape_key)
                {
                    store
                        .inner
                        .index
                        .write()
                        .last_sequences
                        .insert(stream, sequence);
                }
                self.state.send_modify(|s| s.applied = sequence);
                if let Some(sender) = write.and_then(|w| self.waiters.lock().remove(&w)) {
                    let _ = sender.send(Err(reason));
                }
            }
        }
        Ok(())
    }

    /// The records of a message if it is a write the store could have made at its
    /// current state: a well-formed batch of full records of one stream, on that
    /// stream's subject, made expecting the stream's current last subject sequence
    /// (`expects`), whose changes the index accepts.
    fn validate(
        &self,
        store: &EventStore,
        subject: &str,
        payload: &Bytes,
        expects: Option<u64>,
    ) -> Result<Vec<Record>, String> {
        let records = crate::batch::decode(payload)?;
        let mut changes = Vec::with_capacity(records.len());
        for record in &records {
            let entry = crate::record::decode(&record.value)?;
            if record.key.as_deref() != Some(entry.stream().as_bytes()) {
                return Err("a record's key is not its stream".to_string());
            }
            changes.push(Change::from(entry));
        }
        let stream = changes.first().map(|c| c.stream().to_string());
        let Some(stream) = stream.filter(|s| changes.iter().all(|c| c.stream() == s)) else {
            return Err("a write must touch exactly one stream".to_string());
        };
        crate::store::validate_stream_name(&stream).map_err(|e| e.to_string())?;
        if subject != self.subject(&stream) {
            return Err(format!("stream `{stream}` written on subject {subject}"));
        }
        let (current, last_sequence) = {
            let index = store.inner.index.read();
            let last_sequence = index.last_sequences.get(&stream).copied().unwrap_or(0);
            (index.streams.get(&stream).cloned(), last_sequence)
        };
        if expects != Some(last_sequence) {
            return Err(format!(
                "written expecting subject sequence {expects:?}, but the last is {last_sequence}"
            ));
        }
        // Dry run on a copy of the stream's state.
        let mut scratch = Index::default();
        scratch
            .streams
            .insert(stream.clone(), current.unwrap_or_default());
        let base = store.end_position();
        for (position, change) in (base..).zip(changes) {
            scratch.apply(position, change).map_err(|e| e.to_string())?;
        }
        Ok(records)
    }
}

/// Removes a write's waiter once its publisher stops waiting (done, failed or dropped).
struct Waiting<'a> {
    remote: &'a Remote,
    write: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.remote.waiters.lock().remove(self.write);
    }
}

/// The mirror: follows `<PREFIX>_ES` with an ordered push consumer from the sequence after
/// the last one applied, re-creating it after a failure, until the store is dropped or a
/// local write fails (then the store is poisoned and the mirror stops).
pub(crate) async fn follow(store: Weak<Inner>) {
    loop {
        let Some(remote) = store.upgrade().and_then(|inner| inner.remote.clone()) else {
            return;
        };
        let from = remote.applied() + 1;
        let consumer = remote
            .stream
            .create_consumer(consumer::push::OrderedConfig {
                deliver_subject: remote.client.new_inbox(),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await;
        let messages = match consumer {
            Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, from, "event store mirror: consumer failed; retrying");
                drop(remote);
                tokio::time::sleep(FOLLOW_RETRY).await;
                continue;
            }
        };
        loop {
            let message = match messages.try_next().await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "event store mirror: consumer stopped; re-creating it");
                    break;
                }
            };
            let Some(inner) = store.upgrade() else { return };
            let handle = EventStore { inner };
            if let Err(error) = remote.apply(&handle, message).await {
                let reason = format!("applying JetStream to the local mirror failed: {error}");
                handle.poison(reason.clone());
                remote.fail(reason);
                return;
            }
        }
        drop(remote);
        tokio::time::sleep(FOLLOW_RETRY).await;
    }
}

/// Keeps the mirror's task from outliving the store.
pub(crate) struct Follower(pub(crate) Mutex<Option<tokio::task::JoinHandle<()>>>);

impl Follower {
    pub(crate) fn stop(&self) {
        if let Some(task) = self.0.lock().take() {
            task.abort();
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}
