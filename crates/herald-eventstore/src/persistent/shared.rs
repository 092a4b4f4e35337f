//! Persistent subscriptions shared by every gateway on one JetStream: settings in the KV
//! bucket `<PREFIX>_es_subscriptions` (key = group, created with KV `create`; key
//! `<group>.replayed` = parked records below it were replayed), each group's queue of
//! `$all` positions and its parked list in two JetStream streams, and its leases held by
//! a durable consumer fenced by the shared lease table ([`WorkQueue`] / [`SharedLeases`]).
//!
//! Owns: the groups of this gateway's view (followed from the bucket), dispatching, reads,
//! acks, nacks, parking and replay. Invariants: every gateway may dispatch; a source
//! record carries `Nats-Msg-Id` `s<position>` (a replayed one `r<parked index>`), so
//! concurrent dispatchers or replays within the queue stream's duplicate window (10 min)
//! append each position once; a dispatcher starts after the cursor of the queue's last
//! record, so source positions in the queue ascend. An ack returns once JetStream
//! confirmed it; a park appends to the parked stream before terminating the message (a
//! crash in between parks it twice, never loses it). Stream names carry the group's
//! incarnation, so a re-created group never reuses a deleted one's streams.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;
use herald_broker::storage::kv::{escape_key, load_entries, unescape_key, watch_entries};
use herald_broker::storage::{
    JetStreamBackend, JetStreamPartition, LeaseOutcome, LeaseTable, LeasedRecord, WorkQueueConfig,
};
use herald_broker::TopicConfig;
use herald_bus::queue::shared::{LastLease, SharedLeases};
use herald_bus::ReceiptOutcome as QueueOutcome;
use herald_log::{Record, StoredRecord};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::group::{
    decode_parked, encode_parked, truncate, QueueRecord, KIND_REPLAYED, KIND_SOURCE,
};
use super::{
    CreatePersistent, NackAction, ParkedEvent, PersistentEvent, PersistentInfo, PersistentSettings,
    ReceiptOutcome, GROUPS_MAX, READ_EVENTS_MAX, READ_WAIT_MAX, REASON_BYTES_MAX,
};
use crate::error::EventStoreError;
use crate::store::{now_ms, EventStore};

/// The durable consumer of every group's queue stream.
const CONSUMER: &str = "herald-es";
/// Events scanned from the store per dispatch step.
const DISPATCH_BATCH: usize = 1024;
/// Unacknowledged queue messages past which the dispatcher pauses.
const TRACKED_MAX: u64 = 10_000;
/// Most messages leased at once per group (JetStream's `max_ack_pending`).
const LEASED_MAX: i64 = 10_000;
/// Duplicate window of the queue streams: concurrent dispatchers or replays within it
/// append a position once.
const DEDUP_WINDOW_MS: u64 = 10 * 60 * 1000;
/// A waiting read asks JetStream again this often (redeliveries are not signalled).
const POLL: Duration = Duration::from_millis(100);
/// How often each group's leases, counts and parked list are refreshed in the background.
const MAINTAIN_EVERY: Duration = Duration::from_millis(250);
/// How long a read waits for this gateway's mirror to hold a queued position.
const MIRROR_WAIT: Duration = Duration::from_secs(30);
/// Longest a termination waits for JetStream's confirmation.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Parked records replayed per append.
const REPLAY_BATCH: usize = 1024;
/// Longest one attempt to open a group may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often opening a group is retried before the error is returned.
const OPEN_ATTEMPTS: u32 = 5;
/// Pause before following the bucket again after its watch ended (and between retries
/// of groups this gateway failed to open).
const WATCH_RETRY: Duration = Duration::from_millis(500);
/// How often the follower checks its watch against the bucket (one stream info request):
/// when the watch has not delivered a revision the bucket held one check earlier, the
/// whole bucket is loaded again.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// Every how many checks the whole bucket is loaded again whatever the watch delivered
/// (an entry skipped before one delivered escapes the check).
const FULL_RELOAD_CHECKS: u32 = 30;
const REPLAYED_SUFFIX: &str = ".replayed";

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> EventStoreError {
    EventStoreError::Unavailable(format!(
        "JetStream persistent subscriptions: {what}: {error}"
    ))
}

fn broker(error: herald_broker::BrokerError) -> EventStoreError {
    EventStoreError::SubscriptionStorage(error.to_string())
}

fn bus(error: herald_bus::BusError) -> EventStoreError {
    EventStoreError::SubscriptionStorage(error.to_string())
}

/// A group's settings as stored in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SharedSettings {
    group: String,
    target: String,
    start_after: Option<u64>,
    visibility_timeout_ms: u64,
    max_retries: u32,
    created_at_ms: i64,
    /// Names this creation's streams (random, hex).
    incarnation: String,
}

impl SharedSettings {
    fn settings(&self) -> Result<PersistentSettings, EventStoreError> {
        Ok(PersistentSettings {
            group: self.group.clone(),
            target: crate::types::SubscriptionTarget::from_name(&self.target)?,
            start_after: self.start_after,
            visibility_timeout_ms: self.visibility_timeout_ms,
            max_retries: self.max_retries,
            created_at_ms: self.created_at_ms,
        })
    }
}

/// Every group on this JetStream, as this gateway follows them.
pub(crate) struct SharedRegistry {
    backend: JetStreamBackend,
    kv: kv::Store,
    leases: LeaseTable,
    groups: RwLock<BTreeMap<String, Arc<SharedGroup>>>,
    /// Serializes this gateway's opens, creates and deletes.
    admin: tokio::sync::Mutex<()>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl SharedRegistry {
    /// Opens the bucket and every group in it, then follows the bucket.
    pub async fn open(backend: &JetStreamBackend) -> Result<Arc<Self>, EventStoreError> {
        let bucket = format!("{}_es_subscriptions", backend.config().prefix);
        let kv = backend
            .key_value(&bucket, "Herald event store persistent subscriptions")
            .await
            .map_err(broker)?;
        let leases = LeaseTable::open(backend).await.map_err(broker)?;
        let registry = Arc::new(Self {
            backend: backend.clone(),
            kv,
            leases,
            groups: RwLock::new(BTreeMap::new()),
            admin: tokio::sync::Mutex::new(()),
            watcher: Mutex::new(None),
        });
        let (revision, failed) = registry.load().await?;
        let task = tokio::spawn(follow(Arc::downgrade(&registry), revision, failed));
        *registry.watcher.lock() = Some(task);
        Ok(registry)
    }

    /// Opens every group of the bucket not open yet, closes those gone; the revision to
    /// follow from, and the entries of the groups that failed to open (to try again).
    async fn load(&self) -> Result<(u64, Failed), EventStoreError> {
        let (entries, revision) = load_entries(&self.kv, "es subscriptions")
            .await
            .map_err(broker)?;
        let mut present = Vec::new();
        let mut replayed = HashMap::new();
        for entry in entries
            .into_iter()
            .filter(|e| e.operation == Operation::Put)
        {
            match entry.key.strip_suffix(REPLAYED_SUFFIX) {
                Some(group) => {
                    replayed.insert(unescape_key(group), parse_u64(&entry.value));
                }
                None => present.push((entry.key, entry.value)),
            }
        }
        let mut names = Vec::new();
        let mut failed = Failed::new();
        for (key, value) in present {
            match self.open_from(&value).await {
                Ok(group) => names.push(group.settings.group.clone()),
                Err(error) => {
                    tracing::warn!(%error, "opening a persistent subscription failed");
                    names.push(unescape_key(&key));
                    failed.insert(key, value);
                }
            }
        }
        let gone: Vec<String> = self
            .groups
            .read()
            .keys()
            .filter(|n| !names.contains(n))
            .cloned()
            .collect();
        for name in gone {
            // Created since the keys were listed (by this gateway or another)?
            match self.kv.entry(settings_key(&name)).await {
                Ok(Some(entry)) if entry.operation == Operation::Put => {}
                Ok(_) => self.forget(&name),
                Err(error) => {
                    tracing::warn!(%error, group = %name, "checking a persistent subscription failed")
                }
            }
        }
        for (name, before) in replayed {
            if let Some(group) = self.groups.read().get(&name) {
                group.replayed_before.fetch_max(before, Ordering::AcqRel);
            }
        }
        Ok((revision, failed))
    }

    /// Opens the group a bucket value describes (or returns the open one).
    async fn open_from(&self, value: &[u8]) -> Result<Arc<SharedGroup>, EventStoreError> {
        let stored: SharedSettings = serde_json::from_slice(value).map_err(|e| {
            EventStoreError::SubscriptionStorage(format!("bad persistent subscription: {e}"))
        })?;
        let _admin = self.admin.lock().await;
        if let Some(group) = self.groups.read().get(&stored.group) {
            if group.incarnation == stored.incarnation {
                return Ok(Arc::clone(group));
            }
        }
        // Two gateways opening a new group's streams at once can race in JetStream
        // ("subjects overlap"): the loser tries again and finds them.
        let mut attempt = 0;
        let group = loop {
            let opened = tokio::time::timeout(
                OPEN_TIMEOUT,
                SharedGroup::open(&self.backend, &self.leases, &stored),
            )
            .await
            .unwrap_or_else(|_| Err(unavailable("opening a group", "timed out")));
            match opened {
                Ok(group) => break group,
                Err(error) if attempt < OPEN_ATTEMPTS => {
                    attempt += 1;
                    tracing::info!(%error, attempt, "opening a persistent subscription failed; retrying");
                    tokio::time::sleep(WATCH_RETRY / 5 * attempt).await;
                }
                Err(error) => return Err(error),
            }
        };
        let before = match self.kv.entry(replayed_key(&stored.group)).await {
            Ok(Some(e)) if e.operation == Operation::Put => parse_u64(&e.value),
            _ => 0,
        };
        group.replayed_before.fetch_max(before, Ordering::AcqRel);
        if let Some(old) = self
            .groups
            .write()
            .insert(stored.group.clone(), Arc::clone(&group))
        {
            old.shut_down();
        }
        Ok(group)
    }

    fn forget(&self, name: &str) {
        if let Some(group) = self.groups.write().remove(name) {
            group.shut_down();
        }
    }

    /// The group, as this gateway follows it (sync callers).
    pub fn get(&self, name: &str) -> Result<Arc<SharedGroup>, EventStoreError> {
        self.groups
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| EventStoreError::SubscriptionNotFound {
                group: name.to_string(),
            })
    }

    /// The group, asking the bucket when this gateway has not seen it yet (created on
    /// another gateway a moment ago).
    pub async fn get_or_open(&self, name: &str) -> Result<Arc<SharedGroup>, EventStoreError> {
        if let Ok(group) = self.get(name) {
            return Ok(group);
        }
        let not_found = || EventStoreError::SubscriptionNotFound {
            group: name.to_string(),
        };
        if herald_core::name::validate_name("group", name).is_err() {
            return Err(not_found());
        }
        let entry = self
            .kv
            .entry(settings_key(name))
            .await
            .map_err(|e| unavailable(format_args!("reading group {name}"), e))?;
        match entry {
            Some(e) if e.operation == Operation::Put => self.open_from(&e.value).await,
            _ => Err(not_found()),
        }
    }

    pub fn list(&self) -> Vec<Arc<SharedGroup>> {
        self.groups.read().values().cloned().collect()
    }

    pub async fn create(
        &self,
        store: &EventStore,
        request: CreatePersistent,
    ) -> Result<Arc<SharedGroup>, EventStoreError> {
        let settings = super::new_settings(store, &request)?;
        if self.groups.read().len() >= GROUPS_MAX {
            return Err(EventStoreError::invalid(
                "group",
                format!("a store holds at most {GROUPS_MAX} persistent subscriptions"),
            ));
        }
        let stored = SharedSettings {
            group: settings.group.clone(),
            target: settings.target.name(),
            start_after: settings.start_after,
            visibility_timeout_ms: settings.visibility_timeout_ms,
            max_retries: settings.max_retries,
            created_at_ms: settings.created_at_ms,
            incarnation: format!("{:016x}", rand::random::<u64>()),
        };
        let value = serde_json::to_vec(&stored)
            .map_err(|e| EventStoreError::SubscriptionStorage(e.to_string()))?;
        let key = settings_key(&settings.group);
        match self.kv.create(&key, Bytes::from(value.clone())).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                return Err(EventStoreError::SubscriptionExists {
                    group: settings.group,
                })
            }
            Err(e) => return Err(unavailable(format_args!("creating {key}"), e)),
        }
        // A replay marker of an earlier group of this name no longer applies.
        if let Err(e) = self.kv.delete(replayed_key(&settings.group)).await {
            tracing::warn!(error = %e, group = %settings.group, "clearing an old replay marker failed");
        }
        self.open_from(&value).await
    }

    pub async fn delete(&self, name: &str) -> Result<(), EventStoreError> {
        let group = self.get_or_open(name).await?;
        self.kv
            .delete(settings_key(name))
            .await
            .map_err(|e| unavailable(format_args!("deleting group {name}"), e))?;
        if let Err(e) = self.kv.delete(replayed_key(name)).await {
            tracing::warn!(error = %e, group = name, "removing a replay marker failed");
        }
        {
            let _admin = self.admin.lock().await;
            let mut groups = self.groups.write();
            if groups
                .get(name)
                .is_some_and(|g| g.incarnation == group.incarnation)
            {
                groups.remove(name);
            }
        }
        group.shut_down();
        for topic in [&group.queue_topic, &group.parked_topic] {
            if let Err(e) = self.backend.delete_partition(topic, 0).await {
                tracing::warn!(error = %e, topic = %topic, "deleting a persistent subscription stream failed; it is left behind");
            }
        }
        Ok(())
    }

    /// Puts every parked event of `name` back into its queue; returns how many.
    pub async fn replay_parked(&self, name: &str) -> Result<u64, EventStoreError> {
        self.get_or_open(name).await?.replay_parked(&self.kv).await
    }

    /// Stops following the bucket and every group's background work.
    pub fn close(&self) {
        if let Some(task) = self.watcher.lock().take() {
            task.abort();
        }
        for group in self.groups.read().values() {
            group.stop();
        }
    }
}

impl Drop for SharedRegistry {
    fn drop(&mut self) {
        self.close();
    }
}

fn settings_key(group: &str) -> String {
    escape_key(group)
}

fn replayed_key(group: &str) -> String {
    format!("{}{REPLAYED_SUFFIX}", escape_key(group))
}

fn parse_u64(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Bucket entries (key, value) of groups this gateway failed to open, tried again every
/// `WATCH_RETRY`.
type Failed = HashMap<String, Bytes>;

/// Follows the bucket: opens groups created anywhere, closes deleted ones, takes replay
/// markers. Reloads everything when the watch ends.
async fn follow(registry: Weak<SharedRegistry>, mut revision: u64, mut failed: Failed) {
    loop {
        let Some(this) = registry.upgrade() else {
            return;
        };
        // Bounded: a watch that never started was seen once under load (a group created
        // on another gateway never opened here).
        let watch = tokio::time::timeout(
            OPEN_TIMEOUT,
            watch_entries(&this.kv, revision, "es subscriptions"),
        )
        .await
        .unwrap_or_else(|_| {
            Err(herald_broker::BrokerError::Unavailable(
                "starting the watch timed out".to_string(),
            ))
        });
        let changes = match watch {
            Ok(changes) => changes,
            Err(error) => {
                tracing::warn!(%error, "following persistent subscriptions failed");
                drop(this);
                tokio::time::sleep(WATCH_RETRY).await;
                continue;
            }
        };
        drop(this);
        tokio::pin!(changes);
        let mut retry = tokio::time::interval(WATCH_RETRY);
        // The watch alone is not trusted: on nats-server 2.9 a KV purge moved it past
        // entries it had not delivered yet (a group created on one gateway never opened
        // on the other; keys are deleted, not purged, since). Every `RECONCILE_EVERY`
        // the bucket's last revision is read; one the watch still has not delivered a
        // check later makes the whole bucket load again (a watch that is merely busy
        // catches up within a second), as does every `FULL_RELOAD_CHECKS`th check.
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        reconcile.tick().await;
        let mut last_checked: Option<u64> = None;
        let mut checks: u32 = 0;
        loop {
            let entry = tokio::select! {
                entry = changes.next() => match entry {
                    Some(entry) => entry,
                    None => break,
                },
                _ = retry.tick() => {
                    let Some(this) = registry.upgrade() else {
                        return;
                    };
                    let pending: Vec<(String, Bytes)> = failed.drain().collect();
                    for (key, value) in pending {
                        if let Err(error) = this.open_from(&value).await {
                            tracing::warn!(%error, "opening a persistent subscription failed again");
                            failed.insert(key, value);
                        }
                    }
                    continue;
                }
                _ = reconcile.tick() => {
                    let Some(this) = registry.upgrade() else {
                        return;
                    };
                    checks = checks.wrapping_add(1);
                    let behind = last_checked.is_some_and(|last| revision < last);
                    if behind {
                        tracing::warn!(
                            delivered = revision,
                            "the persistent subscriptions watch missed revisions; reloading the bucket"
                        );
                    }
                    if behind || checks.is_multiple_of(FULL_RELOAD_CHECKS) {
                        match this.load().await {
                            Ok((now, more)) => {
                                revision = revision.max(now);
                                failed.extend(more);
                            }
                            Err(error) => {
                                tracing::warn!(%error, "reloading persistent subscriptions failed");
                            }
                        }
                    }
                    last_checked = match this.kv.stream.get_info().await {
                        Ok(info) => Some(info.state.last_sequence),
                        Err(error) => {
                            tracing::warn!(%error, "reading the persistent subscriptions bucket failed");
                            None
                        }
                    };
                    continue;
                }
            };
            let Some(this) = registry.upgrade() else {
                return;
            };
            failed.remove(&entry.key);
            revision = revision.max(entry.revision);
            let put = entry.operation == Operation::Put;
            match entry.key.strip_suffix(REPLAYED_SUFFIX) {
                Some(group) => {
                    if let (true, Some(group)) = (put, this.groups.read().get(&unescape_key(group)))
                    {
                        group
                            .replayed_before
                            .fetch_max(parse_u64(&entry.value), Ordering::AcqRel);
                    }
                }
                None if put => {
                    if let Err(error) = this.open_from(&entry.value).await {
                        tracing::warn!(%error, "opening a persistent subscription failed");
                        failed.insert(entry.key.clone(), entry.value.clone());
                    }
                }
                None => this.forget(&unescape_key(&entry.key)),
            }
        }
        tokio::time::sleep(WATCH_RETRY).await;
        let Some(this) = registry.upgrade() else {
            return;
        };
        match this.load().await {
            Ok((now, more)) => {
                revision = now;
                failed.extend(more);
            }
            Err(error) => tracing::warn!(%error, "reloading persistent subscriptions failed"),
        }
    }
}

/// What this gateway's dispatcher knows of the queue's tail.
#[derive(Debug, Clone, Copy)]
struct Tail {
    /// The queue end these values were read at.
    end: u64,
    /// The last `$all` position examined: every match at or below it is queued.
    cursor: Option<u64>,
}

/// Progress derived from the consumer, refreshed after each operation here and in the
/// background.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    checkpoint: Option<u64>,
    /// The ack floor `checkpoint` was read at.
    floor: u64,
    /// The counts read with that floor (`info` answers both from one refresh, so a
    /// drained group never shows an older checkpoint).
    counts: herald_bus::queue::state::QueueCounts,
}

/// One cached parked record.
#[derive(Debug, Clone)]
struct Parked {
    index: u64,
    position: u64,
    delivery_count: u32,
    reason: String,
    parked_at_ms: i64,
}

/// One group on JetStream, as this gateway sees it.
pub(crate) struct SharedGroup {
    settings: PersistentSettings,
    incarnation: String,
    queue_topic: String,
    parked_topic: String,
    queue: Arc<JetStreamPartition>,
    parked: Arc<JetStreamPartition>,
    leases: SharedLeases,
    client: async_nats::Client,
    ack_wait_ms: u64,
    tail: Mutex<Option<Tail>>,
    dispatch: tokio::sync::Mutex<()>,
    progress: Mutex<Progress>,
    /// Parked records below it were replayed (shared through the bucket).
    replayed_before: AtomicU64,
    /// The parked stream's records this gateway loaded, by index.
    parked_cache: Mutex<Vec<Parked>>,
    /// Reads through this gateway asking for a lease shorter than the ack wait: the
    /// receipt and when this gateway hands its message back.
    short: Mutex<HashMap<String, i64>>,
    changed: Notify,
    deleted: AtomicBool,
    maintainer: Mutex<Option<JoinHandle<()>>>,
}

impl SharedGroup {
    async fn open(
        backend: &JetStreamBackend,
        leases: &LeaseTable,
        stored: &SharedSettings,
    ) -> Result<Arc<Self>, EventStoreError> {
        let settings = stored.settings()?;
        let topic_config = TopicConfig {
            partitions: 1,
            dedup_window_ms: DEDUP_WINDOW_MS,
            ..TopicConfig::default()
        };
        let queue_topic = format!("__es.{}.{}.queue", stored.group, stored.incarnation);
        let parked_topic = format!("__es.{}.{}.parked", stored.group, stored.incarnation);
        let queue = backend
            .open_partition(&queue_topic, 0, &topic_config)
            .await
            .map_err(broker)?;
        let parked = backend
            .open_partition(
                &parked_topic,
                0,
                &TopicConfig {
                    dedup_window_ms: 0,
                    ..topic_config
                },
            )
            .await
            .map_err(broker)?;
        let ack_wait_ms = settings.visibility_timeout_ms;
        let work_queue = queue
            .work_queue(WorkQueueConfig {
                consumer: CONSUMER.to_string(),
                ack_wait: Duration::from_millis(ack_wait_ms),
                max_ack_pending: LEASED_MAX,
                leases: leases.clone(),
            })
            .await
            .map_err(broker)?;
        let group = Arc::new(Self {
            settings,
            incarnation: stored.incarnation.clone(),
            queue_topic,
            parked_topic,
            queue,
            parked,
            leases: SharedLeases::new(work_queue, ack_wait_ms),
            client: backend.context().client(),
            ack_wait_ms,
            tail: Mutex::new(None),
            dispatch: tokio::sync::Mutex::new(()),
            progress: Mutex::new(Progress::default()),
            replayed_before: AtomicU64::new(0),
            parked_cache: Mutex::new(Vec::new()),
            short: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            deleted: AtomicBool::new(false),
            maintainer: Mutex::new(None),
        });
        group.refresh().await;
        let task = tokio::spawn(maintain(Arc::downgrade(&group)));
        *group.maintainer.lock() = Some(task);
        tracing::info!(group = %group.settings.group, queued = group.queue.next_offset(), "persistent subscription opened on JetStream");
        Ok(group)
    }

    fn check_live(&self) -> Result<(), EventStoreError> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(EventStoreError::SubscriptionNotFound {
                group: self.settings.group.clone(),
            });
        }
        Ok(())
    }

    fn stop(&self) {
        if let Some(task) = self.maintainer.lock().take() {
            task.abort();
        }
    }

    fn shut_down(&self) {
        self.deleted.store(true, Ordering::Release);
        self.changed.notify_waiters();
        self.stop();
    }

    /// Settings and counts as of this gateway's last refresh (after each operation
    /// through it, and every 250 ms).
    pub fn info(&self) -> Result<PersistentInfo, EventStoreError> {
        self.check_live()?;
        let progress = *self.progress.lock();
        let counts = progress.counts;
        let tail = *self.tail.lock();
        let end = self.queue.next_offset();
        // From the loaded parked list, as `list_parked` answers (the parked stream's end
        // can be ahead of it until the next refresh).
        let parked = {
            let before = self.replayed_before.load(Ordering::Acquire);
            let cache = self.parked_cache.lock();
            (cache.len() - cache.partition_point(|p| p.index < before)) as u64
        };
        let last_dispatched = tail.and_then(|t| t.cursor).or(self.settings.start_after);
        let mut checkpoint = progress.checkpoint;
        // Everything queued is finished: every examined event is handled.
        if progress.floor >= end && counts.leased == 0 {
            if let Some(t) = tail.filter(|t| t.end == end) {
                checkpoint = checkpoint.max(t.cursor);
            }
        }
        Ok(PersistentInfo {
            settings: self.settings.clone(),
            checkpoint,
            last_dispatched_position: last_dispatched,
            in_flight: counts.leased,
            pending: counts.ready as u64,
            parked,
        })
    }

    /// Renews long leases, hands back short ones that ended, refreshes counts, the
    /// checkpoint and the parked list.
    async fn refresh(&self) {
        let now = now_ms();
        self.release_short(now).await;
        for (receipt, last) in self.leases.lapsed_last(now) {
            let parked = self
                .take_and_park(
                    &receipt,
                    last.offset,
                    last.delivery_count,
                    "visibility timeout expired without an ack",
                    true,
                )
                .await;
            if let Err(error) = parked {
                tracing::warn!(%error, "parking a lapsed last delivery failed; the next read that receives it parks it");
            }
        }
        self.leases.maintain(now).await;
        let counts = self.leases.counts();
        let floor = counts.ack_floor;
        let known = *self.progress.lock();
        let checkpoint = if floor != known.floor || floor == 0 {
            match floor.checked_sub(1) {
                None => Ok(self.settings.start_after),
                Some(below) => self.queue_record(below).await.map(|r| Some(r.cursor)),
            }
        } else {
            Ok(known.checkpoint)
        };
        match checkpoint {
            Ok(checkpoint) => {
                *self.progress.lock() = Progress {
                    checkpoint,
                    floor,
                    counts,
                }
            }
            Err(error) => {
                tracing::debug!(%error, "reading a persistent subscription checkpoint failed")
            }
        }
        if let Err(error) = self.load_parked().await {
            tracing::debug!(%error, "reading a parked list failed");
        }
    }

    /// Hands back the messages of short leases whose time ran out.
    async fn release_short(&self, now: i64) {
        let due: Vec<String> = {
            let mut short = self.short.lock();
            let due: Vec<String> = short
                .iter()
                .filter(|(_, until)| **until <= now)
                .map(|(r, _)| r.clone())
                .collect();
            for receipt in &due {
                short.remove(receipt);
            }
            due
        };
        for receipt in due {
            let Some((offset, count)) = self.leases.parse(&receipt) else {
                continue;
            };
            let result = if count >= self.max_deliveries() {
                self.take_and_park(
                    &receipt,
                    offset,
                    count,
                    "visibility timeout expired without an ack",
                    false,
                )
                .await
                .map(|_| ())
            } else {
                self.leases
                    .release(&receipt, 0)
                    .await
                    .map(|_| ())
                    .map_err(bus)
            };
            if let Err(error) = result {
                tracing::warn!(%error, "handing back an expired lease failed; it lapses at the ack wait");
            }
        }
        self.changed.notify_waiters();
    }

    fn max_deliveries(&self) -> u32 {
        self.settings.max_retries.saturating_add(1)
    }

    /// The queue record at `offset` (refreshing this gateway's view of the end first if
    /// it is beyond it).
    async fn queue_record(&self, offset: u64) -> Result<QueueRecord, EventStoreError> {
        if offset >= self.queue.next_offset() {
            self.queue.refresh().await;
        }
        let records = self
            .queue
            .read(offset, 1, usize::MAX)
            .await
            .map_err(broker)?;
        records
            .first()
            .filter(|r| r.offset == offset)
            .and_then(|r| QueueRecord::decode(&r.value))
            .ok_or_else(|| EventStoreError::Corrupt {
                position: offset,
                reason: format!(
                    "persistent subscription {} has no valid queue record at {offset}",
                    self.settings.group
                ),
            })
    }

    /// This gateway's view of the queue's tail: when the queue grew since it was last
    /// read, the last record's cursor is read again (another gateway may have dispatched
    /// further) and the larger of the two kept (both are true claims).
    async fn tail(&self) -> Result<Tail, EventStoreError> {
        let end = self.queue.next_offset();
        let known = *self.tail.lock();
        if let Some(tail) = known.filter(|t| t.end == end) {
            return Ok(tail);
        }
        let last = match end.checked_sub(1) {
            None => self.settings.start_after,
            Some(last) => Some(self.queue_record(last).await?.cursor),
        };
        let mut known = self.tail.lock();
        let cursor = known.and_then(|k| k.cursor).max(last);
        let tail = Tail { end, cursor };
        *known = Some(Tail {
            end: known.map_or(end, |k| k.end.max(end)),
            cursor,
        });
        Ok(tail)
    }

    /// Appends the positions of the target's visible events after the tail's cursor,
    /// up to this gateway's mirror end or until `TRACKED_MAX` messages are unfinished.
    async fn dispatch(&self, store: &EventStore) -> Result<(), EventStoreError> {
        let next = |cursor: Option<u64>| cursor.map_or(0, |c| c.saturating_add(1));
        let _writer = self.dispatch.lock().await;
        loop {
            let tail = self.tail().await?;
            let from = next(tail.cursor);
            if from >= store.end_position() {
                return Ok(());
            }
            let floor = self.leases.counts().ack_floor;
            if tail.end.saturating_sub(floor) >= TRACKED_MAX {
                return Ok(());
            }
            let target = &self.settings.target;
            let (events, scan_next) =
                store.scan_forwards(from, DISPATCH_BATCH, |stream| target.matches(stream))?;
            let Some(examined) = scan_next.checked_sub(1) else {
                return Ok(());
            };
            let events = store.visible_only(events);
            if !events.is_empty() {
                let timestamp_ms = now_ms();
                let ids = events.iter().map(|e| format!("s{}", e.position)).collect();
                let records = events
                    .iter()
                    .map(|e| Record {
                        timestamp_ms,
                        key: None,
                        value: QueueRecord {
                            kind: KIND_SOURCE,
                            position: e.position,
                            cursor: e.position,
                        }
                        .encode(),
                    })
                    .collect();
                // A duplicate (another dispatcher was first) is in the queue all the same.
                self.queue.append(records, ids).await.map_err(broker)?;
            }
            // Every match up to `examined` is queued now.
            let mut known = self.tail.lock();
            if let Some(k) = known.as_mut() {
                k.cursor = k.cursor.max(Some(examined));
            }
        }
    }

    /// Leases up to `max` events for `visibility_ms`, waiting up to `wait` for one.
    pub async fn read(
        &self,
        store: &EventStore,
        max: usize,
        visibility_ms: Option<u64>,
        wait: Duration,
    ) -> Result<Vec<PersistentEvent>, EventStoreError> {
        let max = max.clamp(1, READ_EVENTS_MAX);
        let visibility = visibility_ms.unwrap_or(self.settings.visibility_timeout_ms);
        let deadline = Instant::now() + wait.min(READ_WAIT_MAX);
        loop {
            self.check_live()?;
            let mut store_end = store.inner.log.watch();
            store_end.borrow_and_update();
            let mut queue_end = self.queue.watch();
            queue_end.borrow_and_update();
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.dispatch(store).await?;
            let leased = self.leases.fetch(max).await.map_err(bus)?;
            if !leased.is_empty() {
                let events = self.deliver(store, leased, visibility).await?;
                if !events.is_empty() {
                    self.refresh().await;
                    return Ok(events);
                }
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                self.refresh().await;
                return Ok(Vec::new());
            }
            let pause = (deadline - now).min(POLL);
            tokio::select! {
                changed = store_end.changed() => {
                    if changed.is_err() {
                        return Err(EventStoreError::Closed);
                    }
                }
                _ = queue_end.changed() => {}
                () = &mut notified => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// The events of freshly leased messages. A message handed out once more than
    /// allowed (its last lease lapsed) is parked; an event hidden since it was queued
    /// is finished as skipped; neither is returned.
    async fn deliver(
        &self,
        store: &EventStore,
        leased: Vec<LeasedRecord>,
        visibility: u64,
    ) -> Result<Vec<PersistentEvent>, EventStoreError> {
        let mut out = Vec::with_capacity(leased.len());
        for lease in leased {
            let Some(record) = QueueRecord::decode(&lease.record.value) else {
                tracing::warn!(group = %self.settings.group, offset = lease.record.offset, "dropping an unreadable queue record");
                if self.leases.take(&lease.receipt, false).await.map_err(bus)? == LeaseOutcome::Done
                {
                    self.terminate(&lease.receipt).await?;
                }
                continue;
            };
            if lease.delivery_count > self.max_deliveries() {
                self.take_and_park(
                    &lease.receipt,
                    lease.record.offset,
                    lease.delivery_count - 1,
                    "visibility timeout expired without an ack",
                    false,
                )
                .await?;
                continue;
            }
            wait_for_mirror(store, record.position).await?;
            let event = store
                .event_at(record.position)?
                .and_then(|e| store.visible_only(vec![e]).pop());
            let Some(event) = event else {
                self.leases.ack(&lease.receipt).await.map_err(bus)?;
                continue;
            };
            let now = now_ms();
            if visibility < self.ack_wait_ms {
                let until = now.saturating_add(i64::try_from(visibility).unwrap_or(i64::MAX));
                self.short.lock().insert(lease.receipt.clone(), until);
            } else {
                if lease.delivery_count >= self.max_deliveries() {
                    // The last allowed delivery: parked by this gateway when it lapses.
                    let lasts = i64::try_from(visibility).unwrap_or(i64::MAX);
                    let last = LastLease {
                        offset: lease.record.offset,
                        delivery_count: lease.delivery_count,
                        expires_ms: now.saturating_add(lasts),
                    };
                    self.leases.watch_last(&lease.receipt, last);
                }
                self.leases.keep(&lease.receipt, visibility, now);
            }
            out.push(PersistentEvent {
                receipt: lease.receipt,
                delivery_count: lease.delivery_count,
                event,
            });
        }
        Ok(out)
    }

    /// Takes the message `receipt` holds (`lapsed`: its lease may have run out, as long
    /// as nobody was given the message since), appends it to the parked list, then
    /// terminates it. `Parked`, or why the receipt no longer holds it.
    async fn take_and_park(
        &self,
        receipt: &str,
        offset: u64,
        delivery_count: u32,
        reason: &str,
        lapsed: bool,
    ) -> Result<ReceiptOutcome, EventStoreError> {
        self.short.lock().remove(receipt);
        match self.leases.take(receipt, lapsed).await.map_err(bus)? {
            LeaseOutcome::Done => {}
            LeaseOutcome::LeaseLost => return Ok(ReceiptOutcome::LeaseLost),
            LeaseOutcome::AlreadyDone => return Ok(ReceiptOutcome::AlreadyDone),
        }
        let position = self.queue_record(offset).await?.position;
        let record = Record {
            timestamp_ms: now_ms(),
            key: Some(Bytes::from(truncate(reason, REASON_BYTES_MAX).into_bytes())),
            value: encode_parked(offset, position, delivery_count),
        };
        self.parked
            .append(vec![record], Vec::new())
            .await
            .map_err(broker)?;
        self.terminate(receipt).await?;
        tracing::info!(group = %self.settings.group, position, "event parked");
        Ok(ReceiptOutcome::Parked)
    }

    /// Never delivers a taken message again; returns once JetStream confirmed it (so
    /// counts read afterwards no longer hold it as leased).
    async fn terminate(&self, receipt: &str) -> Result<(), EventStoreError> {
        let subject = format!("$JS.ACK.{receipt}");
        let reply = tokio::time::timeout(
            ACK_TIMEOUT,
            self.client.request(subject, Bytes::from_static(b"+TERM")),
        )
        .await;
        match reply {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable("terminating a parked message", e)),
            Err(_) => Err(unavailable(
                "terminating a parked message",
                "no confirmation within 5 s",
            )),
        }
    }

    pub async fn ack(
        &self,
        receipts: &[String],
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError> {
        self.per_receipt(receipts, |receipt| async move {
            self.short.lock().remove(&receipt);
            let outcome = self.leases.ack(&receipt).await.map_err(bus)?;
            Ok((receipt, super::group::map_outcome(outcome)))
        })
        .await
    }

    pub async fn nack(
        &self,
        receipts: &[String],
        action: NackAction,
        reason: Option<&str>,
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError> {
        self.per_receipt(receipts, |receipt| async move {
            let Some((offset, count)) = self.leases.parse(&receipt) else {
                return Ok((receipt, ReceiptOutcome::Invalid));
            };
            self.short.lock().remove(&receipt);
            let outcome = match action {
                NackAction::Skip => match self.leases.ack(&receipt).await.map_err(bus)? {
                    QueueOutcome::Acked => ReceiptOutcome::Skipped,
                    other => super::group::map_outcome(other),
                },
                NackAction::Park => {
                    let why = reason.unwrap_or("parked by a consumer");
                    self.take_and_park(&receipt, offset, count, why, false)
                        .await?
                }
                NackAction::Retry { .. } if count >= self.max_deliveries() => {
                    let why = reason.unwrap_or("delivery attempts exhausted");
                    self.take_and_park(&receipt, offset, count, why, false)
                        .await?
                }
                NackAction::Retry { delay_ms } => super::group::map_outcome(
                    self.leases.release(&receipt, delay_ms).await.map_err(bus)?,
                ),
            };
            Ok((receipt, outcome))
        })
        .await
    }

    /// Runs `op` on every receipt concurrently, then refreshes this gateway's view.
    async fn per_receipt<'a, F, Fut>(
        &'a self,
        receipts: &[String],
        op: F,
    ) -> Result<Vec<(String, ReceiptOutcome)>, EventStoreError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<(String, ReceiptOutcome), EventStoreError>> + 'a,
    {
        self.check_live()?;
        let results = futures::future::join_all(receipts.iter().cloned().map(op)).await;
        let outcomes = results.into_iter().collect::<Result<Vec<_>, _>>();
        self.refresh().await;
        self.changed.notify_waiters();
        outcomes
    }

    /// Loads the parked records this gateway has not seen yet.
    async fn load_parked(&self) -> Result<(), EventStoreError> {
        let end = self.parked.next_offset();
        let from = self.parked_cache.lock().last().map_or(0, |p| p.index + 1);
        let from = from.max(self.parked.start_offset());
        if from >= end {
            return Ok(());
        }
        let mut next = from;
        while next < end {
            let want = usize::try_from(end - next).unwrap_or(usize::MAX).min(1024);
            let records = self
                .parked
                .read(next, want, 16 * 1024 * 1024)
                .await
                .map_err(broker)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            let mut cache = self.parked_cache.lock();
            for record in &records {
                if cache.last().is_some_and(|p| p.index >= record.offset) {
                    continue;
                }
                cache.push(parked_of(record)?);
            }
        }
        Ok(())
    }

    /// Up to `max` parked events from parked index `from` (not yet replayed ones only),
    /// as this gateway loaded them.
    pub fn list_parked(
        &self,
        store: &EventStore,
        from: u64,
        max: usize,
    ) -> Result<Vec<ParkedEvent>, EventStoreError> {
        self.check_live()?;
        let from = from.max(self.replayed_before.load(Ordering::Acquire));
        let chosen: Vec<Parked> = {
            let cache = self.parked_cache.lock();
            let start = cache.partition_point(|p| p.index < from);
            cache.iter().skip(start).take(max).cloned().collect()
        };
        chosen
            .into_iter()
            .map(|p| {
                Ok(ParkedEvent {
                    parked_index: p.index,
                    position: p.position,
                    delivery_count: p.delivery_count,
                    reason: p.reason,
                    parked_at_ms: p.parked_at_ms,
                    event: store.event_at(p.position)?,
                })
            })
            .collect()
    }

    /// Puts every parked event back into the queue (new messages, delivery count 0) and
    /// moves the replay marker past them. Returns how many were replayed.
    pub async fn replay_parked(&self, kv: &kv::Store) -> Result<u64, EventStoreError> {
        self.check_live()?;
        self.parked.refresh().await;
        let key = replayed_key(&self.settings.group);
        let (mut from, mut revision) = read_marker(kv, &key).await?;
        from = from.max(self.replayed_before.load(Ordering::Acquire));
        let end = self.parked.next_offset();
        let replayed = end.saturating_sub(from);
        let mut next = from.max(self.parked.start_offset());
        while next < end {
            let want = usize::try_from(end - next)
                .unwrap_or(usize::MAX)
                .min(REPLAY_BATCH);
            let parked = self
                .parked
                .read(next, want, 16 * 1024 * 1024)
                .await
                .map_err(broker)?;
            let Some(last) = parked.last() else { break };
            next = last.offset + 1;
            let _writer = self.dispatch.lock().await;
            let cursor = self.tail().await?.cursor.unwrap_or(0);
            let timestamp_ms = now_ms();
            let mut records = Vec::new();
            let mut ids = Vec::new();
            for r in parked.iter().filter(|r| r.offset < end) {
                let p = parked_of(r)?;
                ids.push(format!("r{}", p.index));
                records.push(Record {
                    timestamp_ms,
                    key: None,
                    value: QueueRecord {
                        kind: KIND_REPLAYED,
                        position: p.position,
                        cursor,
                    }
                    .encode(),
                });
            }
            if !records.is_empty() {
                self.queue.append(records, ids).await.map_err(broker)?;
            }
        }
        // Move the marker to `end` unless another replay moved it further.
        loop {
            if from >= end {
                break;
            }
            let value = Bytes::from(end.to_string());
            let written = if revision == 0 {
                kv.create(&key, value).await.is_ok()
            } else {
                kv.update(&key, value, revision).await.is_ok()
            };
            if written {
                break;
            }
            let (now, rev) = read_marker(kv, &key).await?;
            if now >= end {
                break;
            }
            if rev == revision {
                return Err(unavailable(
                    format_args!("writing {key}"),
                    "the marker did not change",
                ));
            }
            (from, revision) = (now.min(from), rev);
        }
        self.replayed_before.fetch_max(end, Ordering::AcqRel);
        self.changed.notify_waiters();
        self.refresh().await;
        Ok(replayed)
    }
}

/// The replay marker's value and revision (0, 0 when missing).
async fn read_marker(kv: &kv::Store, key: &str) -> Result<(u64, u64), EventStoreError> {
    let entry = kv
        .entry(key)
        .await
        .map_err(|e| unavailable(format_args!("reading {key}"), e))?;
    Ok(match entry {
        Some(e) if e.operation == Operation::Put => (parse_u64(&e.value), e.revision),
        Some(e) => (0, e.revision),
        None => (0, 0),
    })
}

fn parked_of(record: &StoredRecord) -> Result<Parked, EventStoreError> {
    let (_, position, delivery_count) =
        decode_parked(&record.value).ok_or_else(|| EventStoreError::Corrupt {
            position: record.offset,
            reason: "bad parked record in a JetStream parked list".to_string(),
        })?;
    Ok(Parked {
        index: record.offset,
        position,
        delivery_count,
        reason: record
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        parked_at_ms: record.timestamp_ms,
    })
}

/// Waits until this gateway's mirror holds `position` (another gateway may have queued
/// it from a mirror further ahead).
async fn wait_for_mirror(store: &EventStore, position: u64) -> Result<(), EventStoreError> {
    if position < store.end_position() {
        return Ok(());
    }
    let mut end = store.inner.log.watch();
    let reached = tokio::time::timeout(MIRROR_WAIT, end.wait_for(|e| *e > position)).await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(EventStoreError::Closed),
        Err(_) => Err(unavailable(
            format_args!("waiting for the mirror to reach position {position}"),
            "timed out",
        )),
    }
}

/// A group's background work while it is open here.
async fn maintain(group: Weak<SharedGroup>) {
    loop {
        tokio::time::sleep(MAINTAIN_EVERY).await;
        let Some(group) = group.upgrade() else {
            return;
        };
        if group.deleted.load(Ordering::Acquire) {
            return;
        }
        group.refresh().await;
    }
}
