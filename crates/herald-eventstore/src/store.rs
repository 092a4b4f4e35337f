//! [`EventStore`]: streams on top of one herald-log [`PartitionLog`] whose offsets are
//! the `$all` positions.
//!
//! Owns: the write path (per-stream writer lock → expected-version check → one log
//! batch per append → index update), reads of streams and `$all`, stream metadata,
//! deletes, and the data-directory layout (`log/`, `snapshots/`, `.lock`).
//! Invariants: an append is one log batch, so it is all-or-nothing across a crash;
//! appends to one stream are serialized by its writer lock, held until the batch is
//! durable and indexed, so two writers can never both win a version; a write runs in
//! its own task, so a caller that goes away cannot leave the index behind the log.
//! Lock order: a stream's writer lock, then `index` (never held across an `.await`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herald_core::name::validate_name;
use herald_core::CloudEvent;
use herald_log::{AppendOutcome, FsyncPolicy, LogConfig, PartitionLog, Record, StoredRecord};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::error::EventStoreError;
use crate::index::{Change, Index, StreamState};
use crate::persistent::{
    CreatePersistent, NackAction, ParkedEvent, PersistentEvent, PersistentInfo, ReceiptOutcome,
};
use crate::record::{self, Entry};
use crate::snapshot::{FileSnapshots, KvSnapshots, SnapshotStore};
use crate::subscription::CatchUpSubscription;
use crate::types::{
    AppendResult, Direction, ExpectedVersion, RecordedEvent, Snapshot, StreamDescription,
    StreamInfo, StreamMetadata, SubscriptionTarget,
};

/// The reserved name of the global stream.
pub const ALL_STREAM: &str = "$all";
/// Records read from the log per step of a scan.
const SCAN_RECORDS: usize = 512;
/// Neighbouring events fetched by one positioned read (each up to one event in size).
const RUN_RECORDS_MAX: usize = 64;
/// Records read per step of a backwards `$all` read (each up to one event in size).
const BACKWARDS_CHUNK_RECORDS: u64 = 64;

/// Settings of an event store.
#[derive(Debug, Clone)]
pub struct EventStoreConfig {
    /// The log's settings; the default is fsync `always` with group commit.
    pub log: LogConfig,
    /// Largest encoded event accepted. Default 1 MiB.
    pub max_event_bytes: usize,
    /// Most events in one append. Default 10 000.
    pub max_append_events: usize,
    /// Key+value bytes one read gathers before it stops early (the first event is
    /// always returned). Default 16 MiB.
    pub read_bytes_max: usize,
    /// Largest snapshot (its JSON). Default 16 MiB.
    pub max_snapshot_bytes: usize,
    /// Write the index checkpoint once the log has grown this many records past the
    /// last one (also on close). `0`: only on close. Default 100 000.
    pub index_checkpoint_records: u64,
}

impl Default for EventStoreConfig {
    fn default() -> Self {
        Self {
            log: LogConfig {
                fsync: FsyncPolicy::Always,
                ..LogConfig::default()
            },
            max_event_bytes: 1024 * 1024,
            max_append_events: 10_000,
            read_bytes_max: 16 * 1024 * 1024,
            max_snapshot_bytes: 16 * 1024 * 1024,
            index_checkpoint_records: 100_000,
        }
    }
}

/// A handle to an open event store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct EventStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for EventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStore")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    dir: PathBuf,
    config: EventStoreConfig,
    pub(crate) log: Arc<PartitionLog>,
    pub(crate) index: RwLock<Index>,
    /// One writer lock per stream with a write in progress or waiting.
    writers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped after every index change (subscriptions to one stream wait on it).
    pub(crate) changes: watch::Sender<u64>,
    /// Why writes are refused, after a write whose outcome is unknown.
    poisoned: Mutex<Option<String>>,
    snapshots: SnapshotStore,
    persistent: crate::persistent::Groups,
    /// Log appends whose records may not be in the index yet (see [`PendingWrite`]).
    pending_writes: AtomicU64,
    /// The end of the last index checkpoint written or loaded.
    checkpoint_end: AtomicU64,
    /// The end of the checkpoint this open started from (`None`: a full scan).
    opened_from_checkpoint: Option<u64>,
    /// A background checkpoint is running (shared with it: it outlives its store handle).
    checkpointing: Arc<AtomicBool>,
    /// On JetStream: the stream all writes go to (the local log is its mirror).
    pub(crate) remote: Option<Arc<crate::jetstream::Remote>>,
    /// On JetStream: the task applying the stream to the local log.
    follower: crate::jetstream::Follower,
    _lock: File,
}

/// Counts one log append until its records are in the index (or it failed): an index
/// checkpoint is taken only when none is pending, so it covers exactly the records
/// below the log's end.
struct PendingWrite<'a>(&'a AtomicU64);

impl Drop for PendingWrite<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Checks a stream name: a topic-style name (`[A-Za-z0-9._-]`, no `.`/`..`).
pub fn validate_stream_name(stream: &str) -> Result<(), EventStoreError> {
    validate_name("stream", stream).map_err(EventStoreError::from)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl EventStore {
    /// Opens (creating if needed) the store in `dir`: locks it, recovers the log and
    /// rebuilds the stream index from it. Blocking; call it from `spawn_blocking` in
    /// async code.
    pub fn open(
        dir: impl Into<PathBuf>,
        config: EventStoreConfig,
    ) -> Result<Self, EventStoreError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| EventStoreError::io(&dir, e))?;
        let lock = lock_dir(&dir)?;
        let log = PartitionLog::open(dir.join("log"), config.log.clone())?;
        let started = std::time::Instant::now();
        let (index, from_checkpoint) = load_index(&dir, &log)?;
        tracing::info!(
            dir = %dir.display(),
            streams = index.streams.len(),
            end_position = log.next_offset(),
            from_checkpoint = ?from_checkpoint,
            duration_ms = started.elapsed().as_millis() as u64,
            "event store index rebuilt"
        );
        let snapshots = SnapshotStore::Files(FileSnapshots::open(
            dir.join("snapshots"),
            config.max_snapshot_bytes,
        )?);
        let persistent = crate::persistent::Groups::Local(crate::persistent::Registry::open(
            dir.join("persistent"),
        )?);
        let (changes, _) = watch::channel(0);
        let store = Self {
            inner: Arc::new(Inner {
                dir,
                config,
                log,
                index: RwLock::new(index),
                writers: Mutex::new(HashMap::new()),
                changes,
                poisoned: Mutex::new(None),
                snapshots,
                persistent,
                pending_writes: AtomicU64::new(0),
                checkpoint_end: AtomicU64::new(from_checkpoint.unwrap_or(0)),
                opened_from_checkpoint: from_checkpoint,
                checkpointing: Arc::new(AtomicBool::new(false)),
                remote: None,
                follower: crate::jetstream::Follower(Mutex::new(None)),
                _lock: lock,
            }),
        };
        // Scanned a long suffix (or everything): checkpoint now, so the next open is quick.
        let scanned = store.end_position() - from_checkpoint.unwrap_or(0);
        if scanned > 0 && scanned >= store.inner.config.index_checkpoint_records {
            store.write_index_checkpoint();
        }
        Ok(store)
    }

    /// Opens the store on JetStream (`herald serve --storage jetstream`): the stream
    /// `<PREFIX>_ES` is the source of truth, shared by every gateway on the same NATS, and
    /// `<dir>/mirror/` is this gateway's local copy of it, wiped and rebuilt from JetStream
    /// sequence 1 here (the open takes as long as replaying every write once). Snapshots
    /// live in the KV bucket `<PREFIX>_snapshots`; persistent subscriptions are shared by
    /// every gateway (KV `<PREFIX>_es_subscriptions` and a queue and a parked stream per
    /// group, see [`crate::persistent::shared`]).
    pub async fn open_jetstream(
        dir: impl Into<PathBuf>,
        config: EventStoreConfig,
        backend: &herald_broker::storage::JetStreamBackend,
    ) -> Result<Self, EventStoreError> {
        let dir = dir.into();
        let mut config = config;
        // The index is rebuilt from JetStream on every open: no checkpoint to keep.
        config.index_checkpoint_records = 0;
        let log_config = mirror_log_config(&config.log);
        let local = dir.clone();
        let (lock, log) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&local).map_err(|e| EventStoreError::io(&local, e))?;
            let lock = lock_dir(&local)?;
            let mirror = local.join("mirror");
            match std::fs::remove_dir_all(&mirror) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EventStoreError::io(&mirror, e)),
            }
            let log = PartitionLog::open(mirror, log_config)?;
            Ok::<_, EventStoreError>((lock, log))
        })
        .await
        .map_err(|_| EventStoreError::Closed)??;
        let remote = Arc::new(crate::jetstream::Remote::open(backend).await?);
        let persistent = crate::persistent::Groups::Shared(
            crate::persistent::shared::SharedRegistry::open(backend).await?,
        );
        let snapshots = SnapshotStore::Kv(Box::new(
            KvSnapshots::open(backend, config.max_snapshot_bytes).await?,
        ));
        let (changes, _) = watch::channel(0);
        let store = Self {
            inner: Arc::new(Inner {
                dir,
                config,
                log,
                index: RwLock::new(Index::default()),
                writers: Mutex::new(HashMap::new()),
                changes,
                poisoned: Mutex::new(None),
                snapshots,
                persistent,
                pending_writes: AtomicU64::new(0),
                checkpoint_end: AtomicU64::new(0),
                opened_from_checkpoint: None,
                checkpointing: Arc::new(AtomicBool::new(false)),
                remote: Some(Arc::clone(&remote)),
                follower: crate::jetstream::Follower(Mutex::new(None)),
                _lock: lock,
            }),
        };
        let started = std::time::Instant::now();
        let target = remote.last_sequence().await?;
        let task = tokio::spawn(crate::jetstream::follow(Arc::downgrade(&store.inner)));
        *store.inner.follower.0.lock() = Some(task);
        remote.wait_applied(target, None).await?;
        tracing::info!(
            dir = %store.inner.dir.display(),
            stream = remote.stream_name(),
            messages = target,
            streams = store.inner.index.read().streams.len(),
            end_position = store.end_position(),
            duration_ms = started.elapsed().as_millis() as u64,
            "event store mirror rebuilt from JetStream"
        );
        Ok(store)
    }

    /// Writes the index checkpoint if the index holds exactly the log's records (no
    /// append in flight) and the store is healthy. Blocking. Failures are logged: the
    /// next open then scans more of the log.
    pub(crate) fn write_index_checkpoint(&self) {
        let inner = &self.inner;
        if inner.poisoned.lock().is_some() || inner.remote.is_some() {
            return;
        }
        let encoded = {
            let index = inner.index.read();
            let end = inner.log.next_offset();
            if inner.pending_writes.load(Ordering::SeqCst) != 0 {
                return;
            }
            if end <= inner.checkpoint_end.load(Ordering::SeqCst) {
                return;
            }
            crate::index_checkpoint::fingerprint(&inner.log, end)
                .and_then(|f| crate::index_checkpoint::encode(&index, end, f))
                .map(|bytes| (end, bytes))
        };
        let result = encoded.and_then(|(end, bytes)| {
            crate::index_checkpoint::write(&inner.dir, &bytes).map(|()| (end, bytes.len()))
        });
        match result {
            Ok((end, size)) => {
                inner.checkpoint_end.fetch_max(end, Ordering::SeqCst);
                tracing::debug!(end, bytes = size, "index checkpoint written");
            }
            Err(error) => tracing::warn!(%error, "writing the index checkpoint failed"),
        }
    }

    /// Starts a background checkpoint when the log grew enough since the last one.
    fn maybe_checkpoint(&self) {
        let every = self.inner.config.index_checkpoint_records;
        let since = self
            .end_position()
            .saturating_sub(self.inner.checkpoint_end.load(Ordering::SeqCst));
        if every == 0 || since < every || self.inner.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        // A weak handle: a background checkpoint never keeps a dropped store (and its
        // directory lock) alive; `close` waits for it.
        let weak = Arc::downgrade(&self.inner);
        let running = Arc::clone(&self.inner.checkpointing);
        tokio::task::spawn_blocking(move || {
            if let Some(inner) = weak.upgrade() {
                EventStore { inner }.write_index_checkpoint();
            }
            running.store(false, Ordering::Release);
        });
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The log position the index was loaded at from its checkpoint when the store
    /// was opened (the log after it was scanned), or `None` if the whole log was scanned.
    pub fn opened_from_index_checkpoint(&self) -> Option<u64> {
        self.inner.opened_from_checkpoint
    }

    /// The position the next record will get (exclusive end of `$all`).
    pub fn end_position(&self) -> u64 {
        self.inner.log.next_offset()
    }

    /// Appends `events` to `stream` atomically if `expected` holds, and resolves once
    /// they are durable. Versions continue from the stream's last event.
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<CloudEvent>,
    ) -> Result<AppendResult, EventStoreError> {
        validate_stream_name(stream)?;
        let bodies = self.encode_events(events)?;
        let store = self.clone();
        let stream = stream.to_string();
        self.run_write(async move { store.append_locked(&stream, expected, bodies).await })
            .await
    }

    /// Validates, defaults and encodes events on the caller's task.
    fn encode_events(&self, events: Vec<CloudEvent>) -> Result<Vec<Vec<u8>>, EventStoreError> {
        if events.is_empty() {
            return Err(EventStoreError::invalid("events", "must not be empty"));
        }
        let max_events = self.inner.config.max_append_events;
        if events.len() > max_events {
            return Err(EventStoreError::TooManyEvents {
                count: events.len(),
                max: max_events,
            });
        }
        let max_bytes = self.inner.config.max_event_bytes;
        events
            .into_iter()
            .enumerate()
            .map(|(i, mut event)| {
                event.validate().map_err(|e| {
                    EventStoreError::invalid(format!("events[{i}].{}", e.field), e.message)
                })?;
                event.apply_defaults();
                let body = record::encode_event_body(&event);
                if body.len() > max_bytes {
                    return Err(EventStoreError::EventTooLarge {
                        size: body.len(),
                        max: max_bytes,
                    });
                }
                Ok(body)
            })
            .collect()
    }

    /// Runs a write in its own task so it completes (and the index follows the log)
    /// even if the caller's future is dropped.
    async fn run_write<T: Send + 'static>(
        &self,
        write: impl std::future::Future<Output = Result<T, EventStoreError>> + Send + 'static,
    ) -> Result<T, EventStoreError> {
        if let Some(reason) = self.inner.poisoned.lock().clone() {
            return Err(EventStoreError::Poisoned(reason));
        }
        tokio::spawn(write)
            .await
            .unwrap_or(Err(EventStoreError::Closed))
    }

    async fn append_locked(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        bodies: Vec<Vec<u8>>,
    ) -> Result<AppendResult, EventStoreError> {
        let key = Bytes::copy_from_slice(stream.as_bytes());
        let (outcome, first_version) = self
            .write_locked(stream, |state| {
                state.check(stream, expected)?;
                let first_version = state.next_version();
                let timestamp_ms = now_ms();
                let records = bodies
                    .iter()
                    .zip(first_version..)
                    .map(|(body, version)| Record {
                        timestamp_ms,
                        key: Some(key.clone()),
                        value: Bytes::from(record::encode_event_record(stream, version, body)),
                    })
                    .collect();
                Ok((records, first_version))
            })
            .await?;
        Ok(AppendResult {
            next_expected_version: first_version + bodies.len() as u64 - 1,
            position: outcome.last_offset,
        })
    }

    /// Under `stream`'s writer lock: `build` checks the stream's current state and makes
    /// the records of one write, which is then stored as one batch. On JetStream a write
    /// that lost a race with another gateway is rebuilt on the caught-up state (so the
    /// expected-version check runs again), a bounded number of times.
    async fn write_locked<T>(
        &self,
        stream: &str,
        mut build: impl FnMut(&StreamState) -> Result<(Vec<Record>, T), EventStoreError>,
    ) -> Result<(AppendOutcome, T), EventStoreError> {
        let writer = self.writer_lock(stream);
        let result = async {
            let _guard = writer.lock().await;
            let mut conflicts = 0;
            let mut caught_up = false;
            loop {
                let built = {
                    let index = self.inner.index.read();
                    let empty = StreamState::default();
                    let state = index.streams.get(stream).unwrap_or(&empty);
                    let last_sequence = index.last_sequences.get(stream).copied().unwrap_or(0);
                    build(state).map(|(records, value)| (records, value, last_sequence))
                };
                let Some(remote) = &self.inner.remote else {
                    let (records, value, _) = built?;
                    return Ok((self.commit_batch(records, 0).await?, value));
                };
                let (records, value, last_sequence) = match built {
                    Ok(built) => built,
                    // This gateway's mirror may be behind another gateway's write that
                    // the caller has seen: refuse only on the current state.
                    Err(
                        EventStoreError::WrongExpectedVersion { .. }
                        | EventStoreError::StreamNotFound { .. },
                    ) if !caught_up => {
                        remote.catch_up().await?;
                        caught_up = true;
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                match remote.publish(stream, &records, last_sequence).await? {
                    Some(outcome) => return Ok((outcome, value)),
                    None if conflicts < crate::jetstream::CONFLICT_RETRIES => conflicts += 1,
                    None => {
                        return Err(EventStoreError::Unavailable(format!(
                            "stream `{stream}`: {conflicts} writes in a row lost the race \
                             with other gateways; nothing was written"
                        )))
                    }
                }
            }
        }
        .await;
        self.release_writer_lock(stream, writer);
        result
    }

    /// Stores one batch in the local log and applies it to the index: the one path for
    /// local writes and for writes the JetStream mirror applies (`sequence`: the batch's
    /// JetStream sequence, 0 on the embedded log). Every record of a batch belongs to one
    /// stream.
    pub(crate) async fn commit_batch(
        &self,
        records: Vec<Record>,
        sequence: u64,
    ) -> Result<AppendOutcome, EventStoreError> {
        let changes = records
            .iter()
            .map(|r| record::decode_change(&r.value))
            .collect::<Result<Vec<Change>, String>>()
            .map_err(|reason| EventStoreError::Corrupt {
                position: self.end_position(),
                reason,
            })?;
        let (outcome, pending) = self.append_records(records).await?;
        let applied = {
            let mut index = self.inner.index.write();
            let stream = changes.first().map(|c| c.stream().to_string());
            let applied = (outcome.base_offset..)
                .zip(changes)
                .try_for_each(|(position, change)| index.apply(position, change));
            if let (Some(stream), true) = (stream, sequence > 0) {
                index.last_sequences.insert(stream, sequence);
            }
            applied
        };
        if let Err(error) = &applied {
            // The log holds the batch but the index refused it: they no longer agree.
            tracing::error!(%error, "event store index refused a stored batch; refusing further writes");
            self.poison(error.to_string());
        }
        drop(pending);
        self.inner.changes.send_modify(|n| *n += 1);
        self.maybe_checkpoint();
        applied.map(|()| outcome)
    }

    /// Refuses every later write, saying why.
    pub(crate) fn poison(&self, reason: String) {
        self.inner.poisoned.lock().get_or_insert(reason);
    }

    /// Appends one batch; poisons the store when the outcome is unknown.
    async fn append_records(
        &self,
        records: Vec<Record>,
    ) -> Result<(AppendOutcome, PendingWrite<'_>), EventStoreError> {
        self.inner.pending_writes.fetch_add(1, Ordering::SeqCst);
        let pending = PendingWrite(&self.inner.pending_writes);
        match self.inner.log.append(records).await {
            Ok(outcome) => Ok((outcome, pending)),
            Err(error) => {
                let definite = matches!(
                    error,
                    herald_log::LogError::Backpressure
                        | herald_log::LogError::BatchTooLarge { .. }
                        | herald_log::LogError::EmptyBatch
                        | herald_log::LogError::Closed
                ) || error.is_retryable();
                if !definite {
                    tracing::error!(%error, "event store write failed; refusing further writes");
                    self.poison(error.to_string());
                }
                Err(error.into())
            }
        }
    }

    fn writer_lock(&self, stream: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut writers = self.inner.writers.lock();
        Arc::clone(writers.entry(stream.to_string()).or_default())
    }

    /// Drops the stream's writer lock from the map when nobody else holds or waits on it.
    fn release_writer_lock(&self, stream: &str, writer: Arc<tokio::sync::Mutex<()>>) {
        let mut writers = self.inner.writers.lock();
        // The map's reference plus ours: nobody else is waiting.
        if Arc::strong_count(&writer) == 2 {
            writers.remove(stream);
        }
    }

    /// Writes one control record (metadata, delete) for `stream` under its writer lock,
    /// after `make` accepts the current state. Returns the record's position.
    async fn write_control(
        &self,
        stream: String,
        make: impl Fn(&StreamState) -> Result<Entry, EventStoreError> + Send + Sync + 'static,
    ) -> Result<u64, EventStoreError> {
        let store = self.clone();
        self.run_write(async move {
            let (outcome, ()) = store
                .write_locked(&stream, |state| {
                    let value = match make(state)? {
                        Entry::Metadata { stream, metadata } => {
                            record::encode_metadata_record(&stream, &metadata)
                        }
                        Entry::SoftDelete {
                            stream,
                            deleted_before,
                        } => record::encode_soft_delete_record(&stream, deleted_before),
                        Entry::Tombstone { stream } => record::encode_tombstone_record(&stream),
                        Entry::Event { .. } => {
                            return Err(EventStoreError::invalid("record", "not a control record"))
                        }
                    };
                    let record = Record {
                        timestamp_ms: now_ms(),
                        key: Some(Bytes::copy_from_slice(stream.as_bytes())),
                        value: Bytes::from(value),
                    };
                    Ok((vec![record], ()))
                })
                .await?;
            Ok(outcome.last_offset)
        })
        .await
    }

    /// Sets a stream's metadata (the stream need not exist yet).
    pub async fn set_metadata(
        &self,
        stream: &str,
        metadata: StreamMetadata,
    ) -> Result<StreamDescription, EventStoreError> {
        validate_stream_name(stream)?;
        if metadata.max_count == Some(0) {
            return Err(EventStoreError::invalid("max_count", "must be at least 1"));
        }
        let name = stream.to_string();
        self.write_control(name.clone(), move |state| {
            if state.tombstoned {
                return Err(EventStoreError::StreamDeleted {
                    stream: name.clone(),
                });
            }
            Ok(Entry::Metadata {
                stream: name.clone(),
                metadata: metadata.clone(),
            })
        })
        .await?;
        self.describe_stream(stream)
    }

    /// A stream's metadata and lifecycle state (also for deleted streams).
    pub fn describe_stream(&self, stream: &str) -> Result<StreamDescription, EventStoreError> {
        validate_stream_name(stream)?;
        let index = self.inner.index.read();
        index
            .streams
            .get(stream)
            .map(|state| state.describe(stream))
            .ok_or_else(|| EventStoreError::StreamNotFound {
                stream: stream.to_string(),
            })
    }

    /// Soft delete (`hard == false`): hides every current event; the next append
    /// recreates the stream and versions continue. Hard delete: a tombstone, after
    /// which appends fail with `StreamDeleted`. Returns the record's `$all` position.
    pub async fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        hard: bool,
    ) -> Result<u64, EventStoreError> {
        validate_stream_name(stream)?;
        let name = stream.to_string();
        let position = self
            .write_control(name.clone(), move |state| {
                state.check(&name, expected)?;
                if !state.exists() && !hard {
                    return Err(EventStoreError::StreamNotFound {
                        stream: name.clone(),
                    });
                }
                Ok(if hard {
                    Entry::Tombstone {
                        stream: name.clone(),
                    }
                } else {
                    Entry::SoftDelete {
                        deleted_before: state.next_version(),
                        stream: name.clone(),
                    }
                })
            })
            .await?;
        self.inner.snapshots.remove(stream).await?;
        Ok(position)
    }

    /// Up to `max` visible events of `stream` starting at version `from_version`
    /// (inclusive; backwards, `u64::MAX` means the last event).
    pub fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        max: usize,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        validate_stream_name(stream)?;
        let (positions, max_age_ms) = {
            let index = self.inner.index.read();
            let state = index
                .streams
                .get(stream)
                .filter(|s| s.exists() || s.tombstoned);
            let Some(state) = state else {
                return Err(EventStoreError::StreamNotFound {
                    stream: stream.to_string(),
                });
            };
            if state.tombstoned {
                return Err(EventStoreError::StreamDeleted {
                    stream: stream.to_string(),
                });
            }
            let first = state.first_visible_version();
            let next = state.next_version();
            let range: Box<dyn Iterator<Item = u64>> = match direction {
                Direction::Forwards => Box::new(from_version.max(first)..next),
                Direction::Backwards => {
                    let top = from_version.min(next.saturating_sub(1));
                    if next == 0 || top < first {
                        Box::new(std::iter::empty())
                    } else {
                        Box::new((first..=top).rev())
                    }
                }
            };
            // Without an age limit, every selected event is visible: select only `max`.
            let limit = if state.metadata.max_age_ms.is_some() {
                usize::MAX
            } else {
                max
            };
            let positions: Vec<u64> = range
                .filter_map(|v| usize::try_from(v).ok().and_then(|i| state.positions.get(i)))
                .take(limit)
                .copied()
                .collect();
            (positions, state.metadata.max_age_ms)
        };
        let cutoff_ms =
            max_age_ms.map(|age| now_ms().saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)));
        self.read_positions(&positions, max, |event| {
            cutoff_ms.is_none_or(|cutoff| event.recorded_at_ms >= cutoff)
        })
    }

    /// Reads the events at `positions` in the given order, keeping those `keep`
    /// accepts, until `max` are kept or the read byte budget is spent.
    pub(crate) fn read_positions(
        &self,
        positions: &[u64],
        max: usize,
        keep: impl Fn(&RecordedEvent) -> bool,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let mut out = Vec::new();
        let mut bytes_left = self.inner.config.read_bytes_max;
        let mut rest = positions;
        while !rest.is_empty() && out.len() < max && bytes_left > 0 {
            let run = run_length(rest, RUN_RECORDS_MAX);
            let (run_positions, tail) = rest.split_at(run);
            rest = tail;
            let (Some(&a), Some(&b)) = (run_positions.first(), run_positions.last()) else {
                break;
            };
            let (low, high) = (a.min(b), a.max(b));
            let mut records = self.read_log(low, (high - low + 1) as usize, usize::MAX)?;
            if a > b {
                records.reverse();
            }
            for stored in records {
                let size = stored.payload_bytes();
                if let Some(event) = decode_recorded(&stored)? {
                    if keep(&event) {
                        if !out.is_empty() && size > bytes_left {
                            return Ok(out);
                        }
                        bytes_left = bytes_left.saturating_sub(size);
                        out.push(event);
                        if out.len() >= max {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Keeps the events a read may return now (see [`StreamState::is_visible`]):
    /// subscriptions use it so metadata, soft deletes and tombstones hide events there
    /// as they do in stream reads.
    ///
    /// [`StreamState::is_visible`]: crate::index::StreamState::is_visible
    pub(crate) fn visible_only(&self, mut events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        let now = now_ms();
        let index = self.inner.index.read();
        // An event the log holds but the index does not yet (its append is finishing)
        // is the newest of its stream and cannot be deleted yet: visible.
        events.retain(|event| {
            index
                .streams
                .get(&event.stream)
                .is_none_or(|state| state.is_visible(event.version, event.recorded_at_ms, now))
        });
        events
    }

    /// The event at `$all` position `position`, if that record is an event.
    pub(crate) fn event_at(&self, position: u64) -> Result<Option<RecordedEvent>, EventStoreError> {
        let records = self.read_log(position, 1, usize::MAX)?;
        match records.first() {
            Some(stored) if stored.offset == position => decode_recorded(stored),
            _ => Ok(None),
        }
    }

    fn read_log(
        &self,
        from: u64,
        records: usize,
        bytes: usize,
    ) -> Result<Vec<StoredRecord>, EventStoreError> {
        Ok(self.inner.log.read(from, records, bytes)?)
    }

    /// Up to `max` events of `$all` from `from_position` (inclusive). Backwards,
    /// `u64::MAX` means the last event. A position past the end reads nothing.
    pub fn read_all(
        &self,
        from_position: u64,
        max: usize,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        match direction {
            Direction::Forwards => self
                .scan_forwards(from_position, max, |_| true)
                .map(|(events, _)| events),
            Direction::Backwards => self.read_all_backwards(from_position, max),
        }
    }

    /// Scans the log forwards from `from` (inclusive), keeping events `keep` accepts,
    /// until `max` are kept, the byte budget is spent or the end is reached. Returns
    /// them and the position to continue scanning from.
    pub(crate) fn scan_forwards(
        &self,
        from: u64,
        max: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Result<(Vec<RecordedEvent>, u64), EventStoreError> {
        let log = &self.inner.log;
        let mut next = from.max(log.start_offset());
        let mut out = Vec::new();
        let mut bytes_left = self.inner.config.read_bytes_max;
        while out.len() < max && next < log.next_offset() && bytes_left > 0 {
            let records = self.read_log(next, SCAN_RECORDS, bytes_left)?;
            if records.is_empty() {
                break;
            }
            for stored in records {
                next = stored.offset + 1;
                bytes_left = bytes_left.saturating_sub(stored.payload_bytes());
                let matches = stored
                    .key
                    .as_ref()
                    .is_some_and(|k| std::str::from_utf8(k).is_ok_and(&keep));
                if matches {
                    if let Some(event) = decode_recorded(&stored)? {
                        out.push(event);
                        if out.len() >= max {
                            return Ok((out, next));
                        }
                    }
                }
            }
        }
        Ok((out, next))
    }

    fn read_all_backwards(
        &self,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, EventStoreError> {
        let log = &self.inner.log;
        let start = log.start_offset();
        let mut end = from.saturating_add(1).min(log.next_offset());
        let mut out = Vec::new();
        let mut bytes_left = self.inner.config.read_bytes_max;
        while end > start && out.len() < max {
            let chunk_start = end.saturating_sub(BACKWARDS_CHUNK_RECORDS).max(start);
            let mut records =
                self.read_log(chunk_start, (end - chunk_start) as usize, usize::MAX)?;
            records.reverse();
            for stored in records {
                if let Some(event) = decode_recorded(&stored)? {
                    let size = stored.payload_bytes();
                    if !out.is_empty() && size > bytes_left {
                        return Ok(out);
                    }
                    bytes_left = bytes_left.saturating_sub(size);
                    out.push(event);
                    if out.len() >= max {
                        return Ok(out);
                    }
                }
            }
            end = chunk_start;
        }
        Ok(out)
    }

    /// Existing streams (not deleted), sorted by name, after `after`, at most `max`.
    pub fn list_streams(&self, after: Option<&str>, max: usize) -> Vec<StreamInfo> {
        let index = self.inner.index.read();
        let range = match after {
            Some(after) => index
                .streams
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => index.streams.range::<str, _>(..),
        };
        range
            .filter_map(|(name, state)| state.info(name))
            .take(max)
            .collect()
    }

    /// Saves `data` as the snapshot of `stream` at `version`, which must be a version
    /// the stream has. A snapshot older than the stored one is ignored.
    pub async fn save_snapshot(
        &self,
        stream: &str,
        version: u64,
        data: serde_json::Value,
    ) -> Result<(), EventStoreError> {
        validate_stream_name(stream)?;
        {
            let index = self.inner.index.read();
            let state = index.streams.get(stream).filter(|s| s.exists());
            let Some(state) = state else {
                return Err(EventStoreError::StreamNotFound {
                    stream: stream.to_string(),
                });
            };
            if version >= state.next_version() || version < state.deleted_before {
                return Err(EventStoreError::invalid(
                    "version",
                    format!(
                        "stream `{stream}` has versions {}..={}; got {version}",
                        state.deleted_before,
                        state.next_version().saturating_sub(1)
                    ),
                ));
            }
        }
        let snapshot = Snapshot {
            stream: stream.to_string(),
            version,
            data,
        };
        self.inner.snapshots.save(snapshot).await
    }

    /// The latest snapshot of `stream`, if one was saved since its last delete.
    pub async fn load_snapshot(&self, stream: &str) -> Result<Option<Snapshot>, EventStoreError> {
        validate_stream_name(stream)?;
        let deleted_before = {
            let index = self.inner.index.read();
            match index.streams.get(stream) {
                Some(state) if state.exists() => state.deleted_before,
                Some(state) if state.tombstoned => {
                    return Err(EventStoreError::StreamDeleted {
                        stream: stream.to_string(),
                    })
                }
                _ => return Ok(None),
            }
        };
        Ok(self
            .inner
            .snapshots
            .load(stream)
            .await?
            .filter(|s| s.version >= deleted_before))
    }

    /// A catch-up subscription delivering events after `from_position_exclusive`
    /// (`None`: from the beginning), then live ones, with no gap and no duplicate.
    pub fn subscribe(
        &self,
        target: SubscriptionTarget,
        from_position_exclusive: Option<u64>,
    ) -> Result<CatchUpSubscription, EventStoreError> {
        if let SubscriptionTarget::Stream(stream) = &target {
            validate_stream_name(stream)?;
        }
        if let SubscriptionTarget::Category(category) = &target {
            let prefix = SubscriptionTarget::category_prefix(category);
            validate_name("category", prefix.trim_end_matches('-'))
                .map_err(EventStoreError::from)?;
        }
        Ok(CatchUpSubscription::new(
            self.clone(),
            target,
            from_position_exclusive,
        ))
    }

    /// Creates a persistent subscription group (see [`crate::persistent`]).
    pub async fn create_persistent(
        &self,
        request: CreatePersistent,
    ) -> Result<PersistentInfo, EventStoreError> {
        self.inner.persistent.create(self, request).await
    }

    /// Every persistent subscription, sorted by group name.
    pub fn list_persistent(&self) -> Result<Vec<PersistentInfo>, EventStoreError> {
        self.inner.persistent.list()
    }

    /// One group's settings, checkpoint and counts.
    pub fn persistent_info(&self, group: &str) -> Result<PersistentInfo, EventStoreError> {
        self.inner.persistent.info(group)
    }

    /// Deletes a group with its checkpoint and parked list.
    pub async fn delete_persistent(&self, group: &str) -> Result<(), EventStoreError> {
        self.inner.persistent.delete(group).await
    }

    /// Leases up to `max` events of `group` to the caller for `visibility_ms` (default:
    /// the group's), waiting up to `wait` for one. Each event is leased to one reader
    /// at a time; ack or nack it with its receipt before the lease ends.
    pub async fn read_persistent(
        &self,
        group: &str,
        max: usize,
        visibility_ms: Option<u64>,
        wait: std::time::Duration,
    ) -> Result<Vec<PersistentEvent>, EventStoreError> {
        if let Some(ms) = visibility_ms {
            crate::persistent::check_visibility("visibility_timeout_ms", ms)?;
        }
        self.inner
            .persistent
            .read(self, group, max, visibility_ms, wait)
            .await
    }

    /// Acknowledges leased events; returns once it is durable.
    pub async fn ack_persistent(
        &self,
        group: &str,
        receipts: &[String],
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError> {
        check_receipts(receipts)?;
        self.inner.persistent.ack(group, receipts).await
    }

    /// Gives leased events back: retry (possibly delayed), park or skip.
    pub async fn nack_persistent(
        &self,
        group: &str,
        receipts: &[String],
        action: NackAction,
        reason: Option<&str>,
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError> {
        check_receipts(receipts)?;
        self.inner
            .persistent
            .nack(group, receipts, action, reason)
            .await
    }

    /// Up to `max` parked events of `group` from parked index `from`.
    pub fn list_parked(
        &self,
        group: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<ParkedEvent>, EventStoreError> {
        self.inner.persistent.list_parked(self, group, from, max)
    }

    /// Puts every parked event of `group` back into its queue; returns how many.
    pub async fn replay_parked(&self, group: &str) -> Result<u64, EventStoreError> {
        self.inner.persistent.replay_parked(group).await
    }

    /// Flushes and closes the log (waits for queued appends). Later writes fail with
    /// `Closed`; reads keep working.
    pub fn close(&self) -> Result<(), EventStoreError> {
        self.inner.follower.stop();
        if let Some(remote) = &self.inner.remote {
            remote.stop();
        }
        self.inner.persistent.close();
        self.inner.log.close()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.inner.checkpointing.load(Ordering::Acquire)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.write_index_checkpoint();
        Ok(())
    }
}

/// How many leading positions form a run of neighbours (ascending or descending).
fn run_length(positions: &[u64], cap: usize) -> usize {
    let mut iter = positions.windows(2);
    let Some(first) = iter.next() else {
        return positions.len();
    };
    let (Some(&a), Some(&b)) = (first.first(), first.get(1)) else {
        return 1;
    };
    let step: i128 = if b == a + 1 {
        1
    } else if a > 0 && b == a - 1 {
        -1
    } else {
        return 1;
    };
    1 + positions
        .windows(2)
        .take(cap.saturating_sub(1))
        .take_while(|w| match (w.first(), w.get(1)) {
            (Some(&x), Some(&y)) => i128::from(y) - i128::from(x) == step,
            _ => false,
        })
        .count()
}

/// The recorded event a log record holds, or `None` for a control record.
pub(crate) fn decode_recorded(
    stored: &StoredRecord,
) -> Result<Option<RecordedEvent>, EventStoreError> {
    let entry = record::decode(&stored.value).map_err(|reason| EventStoreError::Corrupt {
        position: stored.offset,
        reason,
    })?;
    Ok(match entry {
        Entry::Event {
            stream,
            version,
            event,
        } => Some(RecordedEvent {
            stream,
            version,
            position: stored.offset,
            recorded_at_ms: stored.timestamp_ms,
            event: *event,
        }),
        _ => None,
    })
}

/// The index from the checkpoint plus the log after it, or from the whole log when
/// there is no usable checkpoint. Returns it and the checkpoint's end, if one was used.
fn load_index(dir: &Path, log: &PartitionLog) -> Result<(Index, Option<u64>), EventStoreError> {
    if let Some(checkpoint) = crate::index_checkpoint::load(dir, log) {
        let mut index = checkpoint.index;
        match scan_into(log, &mut index, checkpoint.end) {
            Ok(()) => return Ok((index, Some(checkpoint.end))),
            Err(error) => {
                tracing::warn!(%error, "the log after the index checkpoint does not fit it; full scan")
            }
        }
    }
    let mut index = Index::default();
    scan_into(log, &mut index, log.start_offset())?;
    Ok((index, None))
}

/// Applies every log record from `from` to the end to `index`.
fn scan_into(log: &PartitionLog, index: &mut Index, from: u64) -> Result<(), EventStoreError> {
    let mut next = from;
    let end = log.next_offset();
    while next < end {
        let records = log.read(next, 4096, 64 * 1024 * 1024)?;
        if records.is_empty() {
            break;
        }
        for stored in records {
            next = stored.offset + 1;
            let entry =
                record::decode(&stored.value).map_err(|reason| EventStoreError::Corrupt {
                    position: stored.offset,
                    reason,
                })?;
            index.apply(stored.offset, entry)?;
        }
    }
    Ok(())
}

/// The local log of a JetStream mirror. Its fsync policy is relaxed to `Never`: the
/// mirror is a cache of JetStream (which holds the writes durably, on its replicas), it
/// is wiped and rebuilt on every open, so a crash can lose nothing of it that matters.
/// Its batches must fit any NATS message (`max_payload` is at most 64 MiB).
fn mirror_log_config(log: &LogConfig) -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Never,
        batch_bytes_max: log.batch_bytes_max.max(80 * 1024 * 1024),
        ..log.clone()
    }
}

fn check_receipts(receipts: &[String]) -> Result<(), EventStoreError> {
    let max = crate::persistent::RECEIPTS_MAX;
    if receipts.is_empty() || receipts.len() > max {
        return Err(EventStoreError::invalid(
            "receipts",
            format!("must hold 1..={max} receipts"),
        ));
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<File, EventStoreError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EventStoreError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EventStoreError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(EventStoreError::io(&path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::run_length;

    #[test]
    fn runs_of_neighbouring_positions() {
        assert_eq!(run_length(&[], 64), 0);
        assert_eq!(run_length(&[5], 64), 1);
        assert_eq!(run_length(&[5, 6, 7, 9], 64), 3);
        assert_eq!(run_length(&[5, 6, 7, 8], 2), 2);
        assert_eq!(run_length(&[9, 8, 7, 3], 64), 3);
        assert_eq!(run_length(&[1, 3], 64), 1);
        assert_eq!(run_length(&[0, 1], 64), 2);
    }
}
