//! The [`Broker`]: the engine every front-end drives.
//!
//! Owns the topic table, the consumer groups and the background tasks (retention,
//! session expiry). Lock order: `groups` before `topics`; never hold either across an
//! `.await` or a disk write.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use herald_core::codec::encode_event_to_vec;
use herald_core::name::validate_name;
use herald_core::CloudEvent;
use herald_log::Record;
use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;

use crate::activity::ActivityTracker;
use crate::config::{BrokerConfig, StorageBackend, TopicConfig};
use crate::dedup::{dedup_key, wait_in_flight, Claim, DedupKey, KeyMap};
use crate::delay::{self, DelaySchedule, DelayedTarget, DeliveryBatches, DELAYED_TOPIC};
use crate::error::BrokerError;
use crate::group::{
    Assignment, GroupDescription, GroupState, JoinOptions, MemberDescription, MemberFetch,
    OffsetReset, PartitionLag,
};
use crate::metadata::{self, TopicMeta};
use crate::offsets::{CommittedOffsets, OffsetStore};
use crate::record::EventRecord;
use crate::schemas::SchemaStore;
use crate::storage::{JetStreamBackend, PartitionStore, SharedDefinitions, TopicChange};

mod shared;
use crate::topic::Topic;
use herald_core::schema::{Compatibility, Registration, TypeSummary};
use shared::Shared;

/// Most bytes of events one fetch returns (at least one event is always returned).
pub const FETCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most events one fetch returns.
pub const FETCH_EVENTS_MAX: usize = 10_000;
/// Longest a fetch may wait for new events.
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(60);
/// How old JetStream partition figures (start, size) may be when a listing or `/metrics`
/// answers: at most one stream-info request per partition per this interval.
pub const STATS_MAX_AGE: Duration = Duration::from_millis(250);

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekPosition {
    Offset(u64),
    Earliest,
    Latest,
    /// First event appended at or after this time (ms since the Unix epoch).
    Time(i64),
}

/// A delayed publish: the event is stored and will be appended at `deliver_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledReceipt {
    pub id: String,
    pub deliver_at_ms: i64,
    /// Set when the time had already come and the event was published at once.
    pub delivered: Option<PublishReceipt>,
}

/// Where one published event landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    pub id: String,
    pub partition: u32,
    pub offset: u64,
    /// True when the event was a duplicate within the topic's dedup window: it was not
    /// appended again and `partition`/`offset` are those of its first append.
    pub duplicate: bool,
}

/// The answer to a fetch.
#[derive(Debug, Clone)]
pub struct FetchResult {
    pub events: Vec<EventRecord>,
    pub next_offset: u64,
    pub start_offset: u64,
    pub end_offset: u64,
}

/// A partition's offsets and size.
#[derive(Debug, Clone)]
pub struct PartitionStats {
    pub partition: u32,
    pub start_offset: u64,
    pub end_offset: u64,
    pub size_bytes: u64,
}

/// A member's partitions with the positions its next fetch starts from.
struct MemberPlan {
    generation: u64,
    positions: Vec<(Assignment, u64)>,
    session_timeout: Duration,
}

/// A cheap-to-clone handle to the broker engine.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    config: BrokerConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes topic create/delete (which touch the disk).
    topic_admin: tokio::sync::Mutex<()>,
    groups: Mutex<HashMap<String, GroupState>>,
    /// Serializes the offset-file writes of each group.
    group_writers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    offset_store: OffsetStore,
    delay: Arc<DelaySchedule>,
    schemas: SchemaStore,
    /// Recent publish rates per topic and source (the console's topology view).
    activity: ActivityTracker,
    shutting_down: AtomicBool,
    /// Held (shared) by every publish from its admission to its last partition's append;
    /// shutdown takes it exclusively before closing partitions, so a batch admitted
    /// before shutdown is appended whole, never cut between partitions.
    publishing: tokio::sync::RwLock<()>,
    /// Flips to true at shutdown; long-polling fetches wait on it too.
    shutdown_signal: tokio::sync::watch::Sender<bool>,
    background: Mutex<Vec<JoinHandle<()>>>,
    /// The JetStream connection and the registries gateways share, when partitions live there.
    jetstream: Option<Shared>,
    _lock: File,
}

/// One partition's share of a publish: request indexes, records, dedup ids (JetStream).
type PartitionBatch = (Vec<usize>, Vec<Record>, Vec<String>);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Broker {
    /// Opens the data directory (taking its lock), recovers every topic and starts the
    /// background tasks. Must be called inside a tokio runtime.
    pub async fn open(config: BrokerConfig) -> Result<Self, BrokerError> {
        let started = Instant::now();
        let data_dir = config.data_dir.clone();
        let queue_depth = config.partition_queue_depth_max;
        let backend = match &config.storage {
            StorageBackend::Local => None,
            StorageBackend::JetStream(js) => Some(JetStreamBackend::connect(js.clone()).await?),
        };
        let local = backend.is_none();
        let (lock, mut opened, mut committed, delay, schemas, gateway) =
            tokio::task::spawn_blocking(move || {
                let lock = metadata::lock_data_dir(&data_dir)?;
                let gateway = if local {
                    None
                } else {
                    Some(metadata::gateway_id(&data_dir)?)
                };
                let mut opened = Vec::new();
                // On JetStream the shared registry holds the topics, not this directory.
                if local {
                    for meta in metadata::load_topic_metas(&data_dir)? {
                        let partitions =
                            Topic::open_local_partitions(&data_dir, &meta, queue_depth)?;
                        opened.push((meta, partitions));
                    }
                }
                let committed = if local {
                    OffsetStore::new(&data_dir).load_all()?
                } else {
                    HashMap::new()
                };
                let delay = DelaySchedule::load(data_dir.join("delayed.json"))?;
                let schemas = SchemaStore::load(data_dir.join("schemas.json"))?;
                Ok::<_, BrokerError>((lock, opened, committed, delay, schemas, gateway))
            })
            .await
            .map_err(|e| BrokerError::io(&config.data_dir, std::io::Error::other(e)))??;
        let (jetstream, loaded) = match (backend, gateway) {
            (Some(backend), Some(gateway)) => {
                let (shared, loaded) = Shared::open(backend, gateway).await?;
                for meta in &loaded.topics {
                    let partitions =
                        Topic::open_jetstream_partitions(&shared.backend, meta).await?;
                    opened.push((meta.clone(), partitions));
                }
                committed = loaded.committed.clone();
                (Some(shared), Some(loaded))
            }
            _ => (None, None),
        };
        let mut topics = BTreeMap::new();
        for (meta, partitions) in opened {
            let name = meta.name.clone();
            topics.insert(name, Arc::new(Topic::new(meta, partitions).await?));
        }
        tracing::info!(
            topics = topics.len(),
            groups = committed.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "broker recovered"
        );
        let groups = committed
            .into_iter()
            .map(|(name, offsets)| (name, GroupState::with_committed(offsets)))
            .collect();
        let broker = Self {
            inner: Arc::new(Inner {
                offset_store: OffsetStore::new(&config.data_dir),
                delay: Arc::new(delay),
                schemas,
                activity: ActivityTracker::new(),
                config,
                topics: RwLock::new(topics),
                topic_admin: tokio::sync::Mutex::new(()),
                groups: Mutex::new(groups),
                group_writers: Mutex::new(HashMap::new()),
                shutting_down: AtomicBool::new(false),
                publishing: tokio::sync::RwLock::new(()),
                shutdown_signal: tokio::sync::watch::channel(false).0,
                background: Mutex::new(Vec::new()),
                jetstream,
                _lock: lock,
            }),
        };
        if let Some(loaded) = loaded {
            broker.start_sharing(loaded);
        }
        broker.recover_delayed().await?;
        broker.start_background_tasks();
        Ok(broker)
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    /// Recent publish activity per topic and producer `source`.
    pub fn activity(&self) -> &ActivityTracker {
        &self.inner.activity
    }

    fn start_background_tasks(&self) {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.retention_check_interval;
        let retention = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let broker = Broker { inner };
                let _ = tokio::task::spawn_blocking(move || broker.enforce_retention()).await;
            }
        });
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.session_check_interval;
        let sessions = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Broker { inner }.expire_members(Instant::now()).await;
            }
        });
        let delay = tokio::spawn(run_delay_scheduler(
            Arc::downgrade(&self.inner),
            Arc::clone(&self.inner.delay),
        ));
        self.inner
            .background
            .lock()
            .extend([retention, sessions, delay]);
    }

    fn check_running(&self) -> Result<(), BrokerError> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            Err(BrokerError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// True once `shutdown` began.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    // ---- topics ----

    /// Creates a topic durably. `TopicExists` if it exists.
    pub async fn create_topic(
        &self,
        name: &str,
        config: TopicConfig,
    ) -> Result<TopicMeta, BrokerError> {
        self.check_running()?;
        validate_name("name", name)?;
        config.validate()?;
        let _admin = self.inner.topic_admin.lock().await;
        if self.inner.topics.read().contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let meta = TopicMeta {
            name: name.to_string(),
            config,
            created_at_ms: now_ms(),
        };
        let data_dir = self.inner.config.data_dir.clone();
        let queue_depth = self.inner.config.partition_queue_depth_max;
        let partitions = match &self.inner.jetstream {
            // The registry claims the name for every gateway first; streams follow (a
            // gateway that sees the entry opens, i.e. creates, them too).
            Some(shared) => {
                shared.topics.create(&meta).await?;
                match Topic::open_jetstream_partitions(&shared.backend, &meta).await {
                    Ok(partitions) => partitions,
                    Err(error) => {
                        if let Err(e) = shared.topics.delete(name).await {
                            tracing::error!(topic = name, error = %e, "could not withdraw a topic whose streams failed");
                        }
                        return Err(error);
                    }
                }
            }
            // Partitions first, metadata last: a crash in between leaves a directory
            // without topic.json, which recovery removes.
            None => {
                let dir = data_dir.clone();
                let for_disk = meta.clone();
                tokio::task::spawn_blocking(move || {
                    let partitions = Topic::open_local_partitions(&dir, &for_disk, queue_depth)?;
                    metadata::store_topic_meta(&dir, &for_disk)?;
                    Ok::<_, BrokerError>(partitions)
                })
                .await
                .map_err(|e| BrokerError::io(&data_dir, std::io::Error::other(e)))??
            }
        };
        let topic = Topic::new(meta.clone(), partitions).await?;
        self.inner
            .topics
            .write()
            .insert(name.to_string(), Arc::new(topic));
        tracing::info!(
            topic = name,
            partitions = meta.config.partitions,
            "topic created"
        );
        Ok(meta)
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.check_running()?;
        validate_name("topic", name)?;
        let _admin = self.inner.topic_admin.lock().await;
        let topic = self
            .inner
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_string()))?;
        let data_dir = self.inner.config.data_dir.clone();
        let owned_name = name.to_string();
        let partitions = topic.partition_count();
        let local = self.inner.jetstream.is_none();
        tokio::task::spawn_blocking(move || {
            topic.close();
            if local {
                metadata::delete_topic_dir(&data_dir, &owned_name)
            } else {
                Ok(())
            }
        })
        .await
        .map_err(|e| BrokerError::io(&self.inner.config.data_dir, std::io::Error::other(e)))??;
        if let Some(shared) = &self.inner.jetstream {
            shared.topics.delete(name).await?;
            for p in 0..partitions {
                shared.backend.delete_partition(name, p).await?;
            }
        }
        self.forget_topic_in_groups(name).await;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    async fn forget_topic_in_groups(&self, topic: &str) {
        let counts = self.partition_counts();
        let touched: Vec<String> = {
            let mut groups = self.inner.groups.lock();
            let mut touched = Vec::new();
            for (name, group) in groups.iter_mut() {
                let before = group.committed.len();
                group.committed.retain(|(t, _), _| t != topic);
                if group.committed.len() != before {
                    touched.push(name.clone());
                }
                if group
                    .members
                    .values()
                    .any(|m| m.topics.iter().any(|t| t == topic))
                {
                    group.rebalance(&counts);
                }
            }
            touched
        };
        for group in touched {
            let forget =
                |committed: &mut CommittedOffsets| committed.retain(|(t, _), _| t != topic);
            if let Err(e) = self.persist_offsets(&group, &forget).await {
                tracing::error!(group, error = %e, "could not persist offsets after topic delete");
            }
        }
    }

    /// Opens or closes a topic another gateway created or deleted (JetStream storage).
    async fn apply_topic_change(&self, change: TopicChange) {
        let Some(Shared { backend, .. }) = &self.inner.jetstream else {
            return;
        };
        let _admin = self.inner.topic_admin.lock().await;
        match change {
            TopicChange::Created(meta) => {
                if self.inner.topics.read().contains_key(&meta.name) {
                    return;
                }
                let name = meta.name.clone();
                let opened = match Topic::open_jetstream_partitions(backend, &meta).await {
                    Ok(partitions) => Topic::new(meta, partitions).await,
                    Err(error) => Err(error),
                };
                match opened {
                    Ok(topic) => {
                        self.inner
                            .topics
                            .write()
                            .insert(name.clone(), Arc::new(topic));
                        tracing::info!(topic = %name, "topic created by another gateway opened");
                        self.rebalance_subscribers(&name);
                    }
                    Err(error) => {
                        tracing::error!(topic = %name, %error, "could not open a topic created by another gateway")
                    }
                }
            }
            TopicChange::Deleted(name) => {
                let Some(topic) = self.inner.topics.write().remove(&name) else {
                    return;
                };
                topic.close();
                drop(_admin);
                self.forget_topic_in_groups(&name).await;
                tracing::info!(topic = %name, "topic deleted by another gateway closed");
            }
        }
    }

    /// Every topic's metadata, by name.
    pub fn list_topics(&self) -> Vec<TopicMeta> {
        self.inner
            .topics
            .read()
            .values()
            .map(|t| t.meta.clone())
            .collect()
    }

    /// Re-reads partition sizes and bounds from the storage backend unless read within
    /// the last [`STATS_MAX_AGE`] (JetStream partitions otherwise refresh them every few
    /// seconds; the embedded log is always current). `None`: every topic. Failures are
    /// logged; the cached figures stay.
    pub async fn refresh_stats(&self, topic: Option<&str>) {
        if self.inner.jetstream.is_none() {
            return;
        }
        let topics: Vec<Arc<Topic>> = match topic {
            Some(name) => self.topic(name).into_iter().collect(),
            None => self.inner.topics.read().values().cloned().collect(),
        };
        let refreshes = topics
            .iter()
            .flat_map(|t| t.partitions().iter())
            .map(|p| p.refresh_within(STATS_MAX_AGE));
        join_all(refreshes).await;
    }

    /// The topic called `name`, waiting up to `limit` for it to appear (on JetStream
    /// storage a topic another gateway just created is opened here by the registry
    /// follower a moment later). Other errors return at once.
    pub async fn wait_for_topic(
        &self,
        name: &str,
        limit: Duration,
    ) -> Result<Arc<Topic>, BrokerError> {
        let deadline = Instant::now() + limit;
        loop {
            match self.topic(name) {
                Err(BrokerError::TopicNotFound(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        validate_name("topic", name)?;
        self.inner
            .topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::TopicNotFound(name.to_string()))
    }

    /// Offsets and sizes of each partition of a topic.
    pub fn topic_stats(&self, name: &str) -> Result<Vec<PartitionStats>, BrokerError> {
        let topic = self.topic(name)?;
        Ok(topic
            .partitions()
            .iter()
            .enumerate()
            .map(|(p, log)| PartitionStats {
                partition: p as u32,
                start_offset: log.start_offset(),
                end_offset: log.next_offset(),
                size_bytes: log.size_bytes(),
            })
            .collect())
    }

    fn partition_counts(&self) -> BTreeMap<String, u32> {
        self.inner
            .topics
            .read()
            .iter()
            .map(|(n, t)| (n.clone(), t.partition_count()))
            .collect()
    }

    // ---- publish ----

    /// Validates, encodes and appends `events`, grouped into one atomic batch per
    /// partition. Resolves when every batch is durable under the topic's fsync policy.
    /// Receipts come back in request order. The key of each event is its `partitionkey`.
    pub async fn publish(
        &self,
        topic_name: &str,
        events: Vec<CloudEvent>,
        forced_partition: Option<u32>,
    ) -> Result<Vec<PublishReceipt>, BrokerError> {
        let entries = events
            .into_iter()
            .map(|e| {
                let key = e.partition_key().map(Bytes::from);
                (key, e)
            })
            .collect();
        self.publish_keyed(topic_name, entries, forced_partition)
            .await
    }

    /// Like [`Broker::publish`], with an explicit record key per event (Kafka keys are
    /// raw bytes). The key picks the partition unless `forced_partition` is given.
    pub async fn publish_keyed(
        &self,
        topic_name: &str,
        entries: Vec<(Option<Bytes>, CloudEvent)>,
        forced_partition: Option<u32>,
    ) -> Result<Vec<PublishReceipt>, BrokerError> {
        self.publish_keyed_with_ids(topic_name, entries, forced_partition, None)
            .await
    }

    /// [`Broker::publish_keyed`] where, on JetStream, `store_ids[i]` (one per event) is
    /// the id the stream deduplicates event `i` by across gateways (e.g. a copy's source
    /// position), instead of its `source`+`id`. The embedded log ignores them.
    pub async fn publish_keyed_with_ids(
        &self,
        topic_name: &str,
        mut entries: Vec<(Option<Bytes>, CloudEvent)>,
        forced_partition: Option<u32>,
        store_ids: Option<Vec<String>>,
    ) -> Result<Vec<PublishReceipt>, BrokerError> {
        self.check_running()?;
        let _admitted = self.inner.publishing.read().await;
        self.check_running()?;
        let topic = self.topic(topic_name)?;
        if entries.is_empty() {
            return Err(herald_core::ValidationError::new("body", "no events to publish").into());
        }
        if store_ids
            .as_ref()
            .is_some_and(|ids| ids.len() != entries.len())
        {
            return Err(herald_core::ValidationError::new(
                "body",
                "one store id per event is needed",
            )
            .into());
        }
        if let Some(p) = forced_partition {
            topic.partition(p)?;
        }
        let max = topic
            .meta
            .config
            .max_event_bytes
            .unwrap_or(self.inner.config.max_event_bytes);
        let timestamp_ms = now_ms();
        {
            let schemas = self.inner.schemas.registry.read();
            for (index, (_, event)) in entries.iter_mut().enumerate() {
                event.apply_defaults();
                event.validate().map_err(|e| {
                    herald_core::ValidationError::new(format!("[{index}].{}", e.field), e.message)
                })?;
                schemas
                    .validate_event(event)
                    .map_err(|error| BrokerError::EventSchema { index, error })?;
            }
        }
        let (keys, claims, reservation): (Vec<DedupKey>, _, _) = match topic.dedup() {
            Some(window) => {
                let keys: Vec<DedupKey> = entries
                    .iter()
                    .map(|(_, e)| dedup_key(&e.source, &e.id))
                    .collect();
                let (claims, reservation) = window.claim_batch(&keys, timestamp_ms);
                (keys, claims, Some(reservation))
            }
            None => (
                Vec::new(),
                entries.iter().map(|_| Claim::New).collect(),
                None,
            ),
        };
        let jetstream = topic
            .partitions()
            .first()
            .is_some_and(PartitionStore::is_jetstream);
        let mut batches: BTreeMap<u32, PartitionBatch> = BTreeMap::new();
        for (index, (key, event)) in entries.iter_mut().enumerate() {
            if !matches!(claims[index], Claim::New) {
                continue;
            }
            let value = encode_event_to_vec(event);
            if value.len() > max {
                return Err(BrokerError::PayloadTooLarge {
                    index,
                    size: value.len(),
                    max,
                });
            }
            // On JetStream an unkeyed event's partition follows its dedup key, so a retry
            // through another gateway reaches the same stream, which drops the repeat.
            let dedup_id = keys.get(index).filter(|_| jetstream);
            let partition = forced_partition.unwrap_or_else(|| match (key.as_deref(), dedup_id) {
                (None, Some(id)) => (*id % u128::from(topic.partition_count())) as u32,
                (key, _) => topic.choose_partition(key),
            });
            let entry = batches.entry(partition).or_default();
            entry.0.push(index);
            entry.1.push(Record {
                timestamp_ms,
                key: key.take(),
                value: Bytes::from(value),
            });
            match store_ids.as_ref().filter(|_| jetstream) {
                Some(ids) => entry.2.extend(ids.get(index).cloned()),
                None => {
                    if let Some(id) = dedup_id {
                        entry.2.push(format!("{id:032x}"));
                    }
                }
            }
        }
        let appends = batches
            .into_iter()
            .map(|(partition, (indexes, records, dedup_ids))| {
                let log = topic.partition(partition).cloned();
                let sizes: Vec<u64> = records.iter().map(record_payload_bytes).collect();
                async move {
                    let appended = log?.append(records, dedup_ids).await?;
                    // JetStream answers a message id it already stored as a duplicate
                    // (another gateway's copy): stored once, so counted once.
                    let (count, bytes) = (0..indexes.len())
                        .filter(|&i| !appended.is_duplicate(i))
                        .fold((0, 0), |(n, b), i| {
                            (n + 1, b + sizes.get(i).copied().unwrap_or(0))
                        });
                    count_appended(topic_name, partition, count, bytes);
                    Ok::<_, BrokerError>((partition, indexes, appended))
                }
            });
        let mut receipts: Vec<Option<PublishReceipt>> = vec![None; entries.len()];
        let mut positions: KeyMap<(u32, u64)> = KeyMap::default();
        if reservation.is_some() {
            positions.reserve(entries.len());
        }
        let mut failure = None;
        for result in join_all(appends).await {
            match result {
                Ok((partition, indexes, appended)) => {
                    for (i, index) in indexes.into_iter().enumerate() {
                        let Some(offset) = appended.offset(i) else {
                            failure = Some(BrokerError::Unavailable(format!(
                                "the store acknowledged fewer records than were appended to {topic_name}/{partition}"
                            )));
                            break;
                        };
                        if let Some(&key) = keys.get(index) {
                            positions.insert(key, (partition, offset));
                        }
                        receipts[index] = Some(PublishReceipt {
                            id: entries[index].1.id.clone(),
                            partition,
                            offset,
                            duplicate: appended.is_duplicate(i),
                        });
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        // Receipts so far are the events this call appended (dedup-window duplicates come
        // below), less those JetStream already held under the same message id.
        self.inner.activity.record_appended(
            topic_name,
            receipts
                .iter()
                .zip(&entries)
                .filter(|(receipt, _)| receipt.as_ref().is_some_and(|r| !r.duplicate))
                .map(|(_, (_, event))| event.source.as_str()),
            timestamp_ms,
        );
        if let Some(reservation) = reservation {
            reservation.complete(positions, now_ms());
        }
        if let Some(e) = failure {
            return Err(e);
        }
        for (index, claim) in claims.into_iter().enumerate() {
            let position = match claim {
                Claim::New => continue,
                Claim::Duplicate { partition, offset } => Some((partition, offset)),
                Claim::SameAs(first) => receipts[first].as_ref().map(|r| (r.partition, r.offset)),
                Claim::InFlight(rx) => match keys.get(index) {
                    Some(&key) => wait_in_flight(key, rx).await,
                    None => None,
                },
            };
            // A concurrent publish of the same key failed: the client should retry.
            let (partition, offset) = position.ok_or(BrokerError::Backpressure)?;
            receipts[index] = Some(PublishReceipt {
                id: entries[index].1.id.clone(),
                partition,
                offset,
                duplicate: true,
            });
        }
        Ok(receipts.into_iter().flatten().collect())
    }

    // ---- schemas ----

    /// Registers `schema` for events of type `ty` (a new version, or the existing equal
    /// one). Refused when it is invalid or, in backward mode, not backward compatible.
    /// On JetStream the shared registry changes, for every gateway.
    pub async fn register_schema(
        &self,
        ty: &str,
        schema: &serde_json::Value,
        compatibility: Option<Compatibility>,
    ) -> Result<Registration, BrokerError> {
        self.check_running()?;
        let Some(shared) = &self.inner.jetstream else {
            return self.inner.schemas.register(ty, schema, compatibility);
        };
        let (registration, registry, revision) = shared
            .schemas
            .update(|r| crate::schemas::register_in(r, ty, schema, compatibility))
            .await?;
        self.inner.schemas.replace(registry, revision);
        Ok(registration)
    }

    /// Every type with a schema.
    pub fn list_schemas(&self) -> Vec<TypeSummary> {
        self.inner.schemas.list()
    }

    /// A schema version (latest when `version` is None): (version, schema JSON).
    pub fn schema(
        &self,
        ty: &str,
        version: Option<u32>,
    ) -> Result<(u32, serde_json::Value), BrokerError> {
        self.inner.schemas.get(ty, version).ok_or_else(|| {
            BrokerError::Schema(match version {
                Some(version) => herald_core::schema::RegistryError::UnknownVersion {
                    ty: ty.to_string(),
                    version,
                },
                None => herald_core::schema::RegistryError::UnknownType { ty: ty.to_string() },
            })
        })
    }

    /// Deletes every version of a type's schema; returns how many.
    pub async fn delete_schema(&self, ty: &str) -> Result<usize, BrokerError> {
        self.check_running()?;
        let Some(shared) = &self.inner.jetstream else {
            return self.inner.schemas.delete(ty);
        };
        let (deleted, registry, revision) = shared
            .schemas
            .update(|r| crate::schemas::delete_in(r, ty))
            .await?;
        self.inner.schemas.replace(registry, revision);
        Ok(deleted)
    }

    // ---- definitions shared by every gateway ----

    /// The table of work-queue leases every gateway on this JetStream shares; `None` on
    /// the embedded log.
    pub fn lease_table(&self) -> Option<crate::storage::LeaseTable> {
        self.inner.jetstream.as_ref().map(|s| s.leases.clone())
    }

    /// The definitions of `namespace` every gateway on this JetStream shares (bus
    /// subscriptions); `None` on the embedded log.
    pub async fn shared_definitions(
        &self,
        namespace: &str,
    ) -> Result<Option<SharedDefinitions>, BrokerError> {
        match &self.inner.jetstream {
            Some(shared) => Ok(Some(
                SharedDefinitions::open(&shared.backend, namespace).await?,
            )),
            None => Ok(None),
        }
    }

    // ---- delayed delivery ----

    /// Creates the delayed topic if needed; on the embedded log, schedules every
    /// undelivered delayed event (on JetStream the lease holder does, see `shared.rs`).
    async fn recover_delayed(&self) -> Result<(), BrokerError> {
        if self.topic(DELAYED_TOPIC).is_err() {
            let mut config = TopicConfig::with_partitions(1);
            config.dedup_window_ms = 0;
            match self.create_topic(DELAYED_TOPIC, config).await {
                Ok(_) => {}
                // Another gateway created it at the same moment: the registry follower
                // opens it here shortly.
                Err(BrokerError::TopicExists(_)) if self.inner.jetstream.is_some() => {
                    self.wait_for_topic(DELAYED_TOPIC, Duration::from_secs(10))
                        .await?;
                }
                Err(error) => return Err(error),
            }
        }
        if self.inner.jetstream.is_none() {
            self.schedule_delayed_from(self.inner.delay.floor()).await?;
            tracing::info!(pending = self.inner.delay.len(), "delayed events scheduled");
        }
        Ok(())
    }

    /// The delayed topic's partition, once it exists.
    fn delayed_log(&self) -> Option<PartitionStore> {
        let topic = self.topic(DELAYED_TOPIC).ok()?;
        topic.partition(0).ok().cloned()
    }

    /// Schedules the stored delayed events from offset `from` to the end (skipping damaged
    /// data); returns the offset scanned up to.
    async fn schedule_delayed_from(&self, from: u64) -> Result<u64, BrokerError> {
        let log = self.topic(DELAYED_TOPIC)?.partition(0)?.clone();
        let mut offset = from.max(log.start_offset());
        while offset < log.next_offset() {
            let batch = match log.read(offset, 4096, FETCH_BYTES_MAX).await {
                Ok(batch) => batch,
                Err(error @ BrokerError::Storage(herald_log::LogError::Corrupt { .. })) => {
                    let resume = log.offset_after_damage(offset);
                    tracing::error!(offset, resume, %error, "delayed events: skipping damaged data");
                    offset = resume;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let Some(last) = batch.last() else { break };
            offset = last.offset + 1;
            for stored in batch {
                let at = herald_core::codec::decode_event(&stored.value)
                    .ok()
                    .and_then(|mut e| delay::unmark(&mut e))
                    .map_or(i64::MIN, |t| t.deliver_at_ms);
                self.inner.delay.schedule(stored.offset, at);
            }
        }
        Ok(offset)
    }

    /// Publishes events that become visible in `topic_name` at `deliver_at_ms`. They are
    /// durable when this returns; a time not in the future publishes at once.
    pub async fn publish_delayed(
        &self,
        topic_name: &str,
        entries: Vec<(Option<Bytes>, CloudEvent)>,
        forced_partition: Option<u32>,
        deliver_at_ms: i64,
    ) -> Result<Vec<ScheduledReceipt>, BrokerError> {
        let topic = self.topic(topic_name)?;
        if let Some(p) = forced_partition {
            topic.partition(p)?;
        }
        let now = now_ms();
        if deliver_at_ms > now.saturating_add(delay::DELAY_MS_MAX) {
            return Err(herald_core::ValidationError::new(
                "deliver_at",
                "is more than a year away",
            )
            .into());
        }
        if deliver_at_ms <= now {
            let receipts = self
                .publish_keyed(topic_name, entries, forced_partition)
                .await?;
            return Ok(receipts
                .into_iter()
                .map(|r| ScheduledReceipt {
                    id: r.id.clone(),
                    deliver_at_ms: now,
                    delivered: Some(r),
                })
                .collect());
        }
        let target = DelayedTarget {
            topic: topic_name.to_string(),
            partition: forced_partition,
            deliver_at_ms,
        };
        let marked = entries
            .into_iter()
            .map(|(key, mut event)| {
                delay::mark(&mut event, &target);
                (key, event)
            })
            .collect();
        let receipts = self.publish_keyed(DELAYED_TOPIC, marked, Some(0)).await?;
        // On JetStream the lease holder (maybe another gateway) schedules what it sees
        // appended to the shared delayed topic.
        if self.inner.jetstream.is_none() {
            for r in &receipts {
                self.inner.delay.schedule(r.offset, deliver_at_ms);
            }
            self.inner.delay.wake.notify_one();
        }
        Ok(receipts
            .into_iter()
            .map(|r| ScheduledReceipt {
                id: r.id,
                deliver_at_ms,
                delivered: None,
            })
            .collect())
    }

    /// Delivers due delayed events to their targets; returns how many were handled.
    async fn deliver_due(&self) -> Result<usize, BrokerError> {
        if !self.delivers_delayed() {
            return Ok(0);
        }
        let due = self.inner.delay.take_due(now_ms(), 1000);
        if due.is_empty() {
            return Ok(0);
        }
        let log = self.topic(DELAYED_TOPIC)?.partition(0)?.clone();
        let mut batches: DeliveryBatches = BTreeMap::new();
        let mut delivered = Vec::new();
        for &(_, offset) in &due {
            let stored = log
                .read(offset, 1, FETCH_BYTES_MAX)
                .await?
                .into_iter()
                .next();
            let Some(stored) = stored.filter(|s| s.offset == offset) else {
                tracing::error!(offset, "delayed event is missing from the log; dropped");
                delivered.push(offset);
                continue;
            };
            let mut event = match herald_core::codec::decode_event(&stored.value) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(offset, error = %e, "delayed event does not decode; dropped");
                    delivered.push(offset);
                    continue;
                }
            };
            match delay::unmark(&mut event) {
                Some(t) => batches
                    .entry((t.topic, t.partition))
                    .or_default()
                    .push((offset, stored.key, event)),
                None => delivered.push(offset),
            }
        }
        for ((topic, partition), items) in batches {
            let offsets: Vec<u64> = items.iter().map(|(o, _, _)| *o).collect();
            let entries = items.into_iter().map(|(_, k, e)| (k, e)).collect();
            match self.publish_keyed(&topic, entries, partition).await {
                Ok(_) => delivered.extend(offsets),
                Err(BrokerError::TopicNotFound(_)) => {
                    tracing::warn!(
                        topic,
                        count = offsets.len(),
                        "delayed events dropped: their topic was deleted"
                    );
                    delivered.extend(offsets);
                }
                Err(e) => {
                    tracing::warn!(topic, error = %e, "delayed delivery failed; retrying in 1 s");
                    self.inner.delay.retry_at(&offsets, now_ms() + 1000);
                }
            }
        }
        let end = log.next_offset();
        let count = delivered.len();
        if self.inner.jetstream.is_some() {
            let checkpoint = self.inner.delay.record_delivered(&delivered, end)?;
            self.store_delayed_checkpoint(checkpoint).await?;
            return Ok(count);
        }
        let schedule = Arc::clone(&self.inner.delay);
        tokio::task::spawn_blocking(move || schedule.mark_delivered(&delivered, end))
            .await
            .map_err(|e| {
                BrokerError::io(&self.inner.config.data_dir, std::io::Error::other(e))
            })??;
        Ok(count)
    }

    // ---- fetch ----

    /// Resolves a seek position to an offset of `log`.
    pub async fn resolve_position(
        log: &PartitionStore,
        position: SeekPosition,
    ) -> Result<u64, BrokerError> {
        Ok(match position {
            SeekPosition::Offset(o) => o,
            SeekPosition::Earliest => log.start_offset(),
            SeekPosition::Latest => log.next_offset(),
            SeekPosition::Time(ms) => log.offset_for_timestamp(ms).await?,
        })
    }

    /// Reads up to `max` events of one partition from `position`. With `wait > 0` and
    /// nothing to return yet, waits (woken by the append) up to `wait` for events.
    pub async fn fetch(
        &self,
        topic_name: &str,
        partition: u32,
        position: SeekPosition,
        max: usize,
        wait: Duration,
    ) -> Result<FetchResult, BrokerError> {
        let topic = self.topic(topic_name)?;
        let log = topic.partition(partition)?.clone();
        let offset = Self::resolve_position(&log, position).await?;
        let max = max.clamp(1, FETCH_EVENTS_MAX);
        let deadline = Instant::now() + wait.min(FETCH_WAIT_MAX);
        loop {
            let mut watch = log.watch();
            let (start, end) = (log.start_offset(), log.next_offset());
            if offset < start || offset > end {
                return Err(BrokerError::OffsetOutOfRange {
                    topic: topic_name.to_string(),
                    partition,
                    requested: offset,
                    start,
                    end,
                });
            }
            let stored = log.read(offset, max, FETCH_BYTES_MAX).await?;
            let now = Instant::now();
            if !stored.is_empty() || now >= deadline || self.is_shutting_down() {
                let events = stored
                    .into_iter()
                    .map(|r| EventRecord::from_stored(topic_name, partition, r))
                    .collect::<Result<Vec<_>, _>>()?;
                let next_offset = events.last().map_or(offset, |e| e.offset + 1);
                // The end as of the read (not re-sampled: an append landing meanwhile would
                // make an empty page look as if it stopped short of the end).
                return Ok(FetchResult {
                    events,
                    next_offset,
                    start_offset: start,
                    end_offset: end.max(next_offset),
                });
            }
            let mut shutdown = self.inner.shutdown_signal.subscribe();
            let woke = tokio::time::timeout(deadline - now, async {
                tokio::select! {
                    r = watch.wait_for(|end| *end > offset) => r.is_ok(),
                    _ = shutdown.wait_for(|s| *s) => false,
                }
            })
            .await;
            if matches!(woke, Ok(false)) {
                // The log was closed (topic deleted) or the broker is shutting down.
                return Err(BrokerError::ShuttingDown);
            }
        }
    }

    // ---- retention ----

    /// Applies every topic's retention once (blocking I/O).
    pub fn enforce_retention(&self) {
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        let now = now_ms();
        for topic in topics {
            for (p, log) in topic.partitions().iter().enumerate() {
                match log.enforce_retention(now) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        topic = topic.name(),
                        partition = p,
                        segments = n,
                        "retention deleted segments"
                    ),
                    Err(e) => {
                        tracing::error!(topic = topic.name(), partition = p, error = %e, "retention failed")
                    }
                }
            }
        }
    }

    // ---- consumer groups ----

    /// Adds a member to `group` (creating the group) and rebalances. On JetStream storage
    /// the member is announced to every gateway before this returns.
    pub async fn join_group(
        &self,
        group: &str,
        options: JoinOptions,
    ) -> Result<(String, u64, Vec<Assignment>), BrokerError> {
        self.check_running()?;
        validate_name("group", group)?;
        if options.topics.is_empty() {
            return Err(
                herald_core::ValidationError::new("topics", "list at least one topic").into(),
            );
        }
        for t in &options.topics {
            self.topic(t)?;
        }
        let member_id = format!("{group}-{}", uuid::Uuid::new_v4().simple());
        let counts = self.partition_counts();
        let generation = {
            let mut groups = self.inner.groups.lock();
            let state = groups.entry(group.to_string()).or_default();
            state.join(member_id.clone(), options, Instant::now(), &counts);
            tracing::info!(group, member = %member_id, generation = state.generation, "member joined");
            state.generation
        };
        if let Err(error) = self.announce_member(group, &member_id).await {
            // Unannounced, the other gateways would not count it: it must not exist here.
            if let Some(state) = self.inner.groups.lock().get_mut(group) {
                state.leave(&member_id, &self.partition_counts());
            }
            return Err(error);
        }
        // Other gateways' members may have changed the assignment meanwhile.
        let groups = self.inner.groups.lock();
        let state = groups.get(group);
        let assignments = state
            .and_then(|s| s.members.get(&member_id))
            .map(|m| m.assignments.clone())
            .unwrap_or_default();
        let generation = state.map_or(generation, |s| s.generation);
        Ok((member_id, generation, assignments))
    }

    /// Removes a member and rebalances.
    pub async fn leave_group(&self, group: &str, member_id: &str) -> Result<(), BrokerError> {
        let counts = self.partition_counts();
        {
            let mut groups = self.inner.groups.lock();
            let state = group_mut(&mut groups, group)?;
            if !state.leave(member_id, &counts) {
                return Err(BrokerError::MemberNotFound {
                    group: group.into(),
                    member: member_id.into(),
                });
            }
            tracing::info!(
                group,
                member = member_id,
                generation = state.generation,
                "member left"
            );
        }
        self.withdraw_members(vec![(group.to_string(), member_id.to_string())])
            .await;
        Ok(())
    }

    /// Records a heartbeat; returns the current generation and the member's assignments.
    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
    ) -> Result<(u64, Vec<Assignment>), BrokerError> {
        let mut groups = self.inner.groups.lock();
        let state = group_mut(&mut groups, group)?;
        let generation = state.generation;
        let member = state.touch_member(group, member_id)?;
        Ok((generation, member.assignments.clone()))
    }

    async fn expire_members(&self, now: Instant) {
        let counts = self.partition_counts();
        let mut expired = Vec::new();
        {
            let mut groups = self.inner.groups.lock();
            for (name, state) in groups.iter_mut() {
                for member in state.expire(now, &counts) {
                    tracing::info!(group = %name, member = %member, generation = state.generation, "member session expired");
                    expired.push((name.clone(), member));
                }
            }
        }
        if !expired.is_empty() {
            self.withdraw_members(expired).await;
        }
    }

    /// Where a member starts on `a`: committed offset (if still in the log), else its reset policy.
    fn initial_position(
        &self,
        committed: Option<u64>,
        reset: OffsetReset,
        a: &Assignment,
    ) -> Result<u64, BrokerError> {
        let topic = self.topic(&a.topic)?;
        let log = topic.partition(a.partition)?;
        let (start, end) = (log.start_offset(), log.next_offset());
        Ok(match committed {
            Some(c) if (start..=end).contains(&c) => c,
            _ => match reset {
                OffsetReset::Earliest => start,
                OffsetReset::Latest => end,
            },
        })
    }

    /// Snapshot of a member's partitions and positions (heartbeat included).
    fn member_plan(&self, group: &str, member_id: &str) -> Result<MemberPlan, BrokerError> {
        let mut groups = self.inner.groups.lock();
        let state = group_mut(&mut groups, group)?;
        let committed = state.committed.clone();
        let generation = state.generation;
        let member = state.touch_member(group, member_id)?;
        let n = member.assignments.len();
        let mut plan = Vec::with_capacity(n);
        for i in 0..n {
            let a = member.assignments[(member.cursor + i) % n].clone();
            let position = match member.positions.get(&a) {
                Some(p) => *p,
                None => {
                    let c = committed.get(&(a.topic.clone(), a.partition)).copied();
                    let p = self.initial_position(c, member.reset, &a)?;
                    member.positions.insert(a.clone(), p);
                    p
                }
            };
            plan.push((a, position));
        }
        if n > 0 {
            member.cursor = (member.cursor + 1) % n;
        }
        Ok(MemberPlan {
            generation,
            positions: plan,
            session_timeout: member.session_timeout,
        })
    }

    /// Fetches events for a group member from its assigned partitions, advancing its
    /// positions (not its committed offsets). Long-polls up to `wait`.
    pub async fn fetch_for_member(
        &self,
        group: &str,
        member_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<MemberFetch, BrokerError> {
        let max = max.clamp(1, FETCH_EVENTS_MAX);
        let started = Instant::now();
        loop {
            let MemberPlan {
                generation,
                positions: plan,
                session_timeout,
            } = self.member_plan(group, member_id)?;
            let wait_total = wait.min(session_timeout / 2).min(FETCH_WAIT_MAX);
            let mut watches = Vec::new();
            let mut events = Vec::new();
            for (a, position) in &plan {
                if events.len() >= max {
                    break;
                }
                let topic = self.topic(&a.topic)?;
                let log = topic.partition(a.partition)?;
                watches.push((log.watch(), *position));
                let position = (*position).max(log.start_offset());
                let stored = log
                    .read(position, max - events.len(), FETCH_BYTES_MAX)
                    .await?;
                for r in stored {
                    events.push(EventRecord::from_stored(&a.topic, a.partition, r)?);
                }
            }
            let elapsed = started.elapsed();
            if !events.is_empty() || elapsed >= wait_total || (plan.is_empty() && wait.is_zero()) {
                return self.advance_member(group, member_id, generation, events);
            }
            if plan.is_empty() {
                tokio::time::sleep((wait_total - elapsed).min(Duration::from_millis(100))).await;
                continue;
            }
            let waits = watches.into_iter().map(|(mut w, position)| {
                Box::pin(async move {
                    let _ = w.wait_for(|end| *end > position).await;
                })
            });
            let mut shutdown = self.inner.shutdown_signal.subscribe();
            let _ = tokio::time::timeout(wait_total - elapsed, async {
                tokio::select! {
                    _ = futures::future::select_all(waits) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
            })
            .await;
            self.check_running()?;
        }
    }

    fn advance_member(
        &self,
        group: &str,
        member_id: &str,
        generation: u64,
        mut events: Vec<EventRecord>,
    ) -> Result<MemberFetch, BrokerError> {
        let mut groups = self.inner.groups.lock();
        let state = group_mut(&mut groups, group)?;
        let current_generation = state.generation;
        let member = state.touch_member(group, member_id)?;
        if current_generation != generation {
            // Rebalanced while reading: hand out only events of partitions still owned.
            events.retain(|e| {
                member.positions.contains_key(&Assignment {
                    topic: e.topic.clone(),
                    partition: e.partition,
                })
            });
        }
        count_delivered(group, &events);
        for e in &events {
            let a = Assignment {
                topic: e.topic.clone(),
                partition: e.partition,
            };
            if let Some(p) = member.positions.get_mut(&a) {
                *p = (*p).max(e.offset + 1);
            }
        }
        Ok(MemberFetch {
            generation: current_generation,
            assignments: member.assignments.clone(),
            events,
        })
    }

    /// Commits offsets for a member. `offsets == None` commits its current positions.
    /// Every partition must be assigned to the member. Durable when this returns.
    pub async fn commit_offsets(
        &self,
        group: &str,
        member_id: &str,
        offsets: Option<Vec<(Assignment, u64)>>,
    ) -> Result<Vec<(Assignment, u64)>, BrokerError> {
        self.check_running()?;
        let writer = self.group_writer(group);
        let _serial = writer.lock().await;
        let committed = {
            let mut groups = self.inner.groups.lock();
            let state = group_mut(&mut groups, group)?;
            let generation = state.generation;
            let member = state.touch_member(group, member_id)?;
            let offsets = match offsets {
                Some(list) => list,
                None => member
                    .positions
                    .iter()
                    .map(|(a, p)| (a.clone(), *p))
                    .collect(),
            };
            for (a, _) in &offsets {
                if !member.assignments.contains(a) {
                    return Err(BrokerError::NotAssigned {
                        topic: a.topic.clone(),
                        partition: a.partition,
                        generation,
                    });
                }
            }
            for (a, offset) in &offsets {
                let end = self.topic(&a.topic)?.partition(a.partition)?.next_offset();
                if *offset > end {
                    return Err(BrokerError::OffsetOutOfRange {
                        topic: a.topic.clone(),
                        partition: a.partition,
                        requested: *offset,
                        start: 0,
                        end,
                    });
                }
            }
            offsets
        };
        self.persist_offsets_locked(group, &|stored| {
            for (a, offset) in &committed {
                stored.insert((a.topic.clone(), a.partition), *offset);
            }
        })
        .await?;
        Ok(committed)
    }

    fn group_writer(&self, group: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .group_writers
            .lock()
            .entry(group.to_string())
            .or_default()
            .clone()
    }

    async fn persist_offsets(
        &self,
        group: &str,
        change: &(dyn Fn(&mut CommittedOffsets) + Sync),
    ) -> Result<(), BrokerError> {
        let writer = self.group_writer(group);
        let _serial = writer.lock().await;
        self.persist_offsets_locked(group, change).await
    }

    /// Applies `change` to the group's committed offsets and writes them; caller holds the
    /// group's writer lock. On JetStream the change is applied to the offsets stored there
    /// (another gateway may have committed other partitions meanwhile).
    async fn persist_offsets_locked(
        &self,
        group: &str,
        change: &(dyn Fn(&mut CommittedOffsets) + Sync),
    ) -> Result<(), BrokerError> {
        let snapshot: CommittedOffsets = {
            let mut groups = self.inner.groups.lock();
            let state = groups.entry(group.to_string()).or_default();
            change(&mut state.committed);
            state.committed.clone()
        };
        if let Some(shared) = &self.inner.jetstream {
            let (stored, revision) = shared.offsets.update(group, &snapshot, change).await?;
            // Unless a newer commit from elsewhere was applied meanwhile, this is current.
            if shared.offsets.revision(group) == revision {
                if let Some(state) = self.inner.groups.lock().get_mut(group) {
                    state.committed = stored;
                }
            }
            return Ok(());
        }
        let store = self.inner.offset_store.clone();
        let group = group.to_string();
        tokio::task::spawn_blocking(move || store.store(&group, &snapshot))
            .await
            .map_err(|e| BrokerError::io(&self.inner.config.data_dir, std::io::Error::other(e)))?
    }

    /// Commits offsets without membership checks, for front-ends that run their own group
    /// protocol (Kafka's JoinGroup/SyncGroup). Durable when this returns.
    pub async fn commit_offsets_unchecked(
        &self,
        group: &str,
        offsets: Vec<(Assignment, u64)>,
    ) -> Result<(), BrokerError> {
        self.check_running()?;
        validate_name("group", group)?;
        self.persist_offsets(group, &|committed| {
            for (a, offset) in &offsets {
                committed.insert((a.topic.clone(), a.partition), *offset);
            }
        })
        .await
    }

    /// The committed offset of a group on one partition, if any.
    pub fn committed_offset(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        self.inner
            .groups
            .lock()
            .get(group)
            .and_then(|g| g.committed.get(&(topic.to_string(), partition)).copied())
    }

    /// Sets the committed offsets of `topic` for an empty group.
    pub async fn reset_group(
        &self,
        group: &str,
        topic_name: &str,
        to: SeekPosition,
    ) -> Result<(), BrokerError> {
        self.check_running()?;
        validate_name("group", group)?;
        let topic = self.topic(topic_name)?;
        let mut positions = Vec::new();
        for (p, log) in topic.partitions().iter().enumerate() {
            let offset = Self::resolve_position(log, to)
                .await?
                .clamp(log.start_offset(), log.next_offset());
            positions.push((p as u32, offset));
        }
        let writer = self.group_writer(group);
        let _serial = writer.lock().await;
        if self
            .inner
            .groups
            .lock()
            .get(group)
            .is_some_and(|state| !state.members.is_empty())
        {
            return Err(BrokerError::GroupNotEmpty(group.to_string()));
        }
        self.persist_offsets_locked(group, &|committed| {
            for (p, offset) in &positions {
                committed.insert((topic_name.to_string(), *p), *offset);
            }
        })
        .await
    }

    /// Deletes an empty group and its committed offsets.
    pub async fn delete_group(&self, group: &str) -> Result<(), BrokerError> {
        self.check_running()?;
        let writer = self.group_writer(group);
        let _serial = writer.lock().await;
        {
            let mut groups = self.inner.groups.lock();
            let state = groups
                .get(group)
                .ok_or_else(|| BrokerError::GroupNotFound(group.to_string()))?;
            if !state.members.is_empty() {
                return Err(BrokerError::GroupNotEmpty(group.to_string()));
            }
            groups.remove(group);
        }
        if let Some(shared) = &self.inner.jetstream {
            return shared.offsets.remove(group).await;
        }
        let store = self.inner.offset_store.clone();
        let name = group.to_string();
        tokio::task::spawn_blocking(move || store.remove(&name))
            .await
            .map_err(|e| BrokerError::io(&self.inner.config.data_dir, std::io::Error::other(e)))?
    }

    /// Names of all known groups.
    pub fn list_groups(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.groups.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Members, assignments, committed offsets and lag of a group.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription, BrokerError> {
        let groups = self.inner.groups.lock();
        let state = groups
            .get(group)
            .ok_or_else(|| BrokerError::GroupNotFound(group.to_string()))?;
        let members = state
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                topics: m.topics.clone(),
                assignments: m.assignments.clone(),
            })
            .collect();
        let mut topics: Vec<String> = state.subscribed_topics();
        topics.extend(state.committed.keys().map(|(t, _)| t.clone()));
        topics.sort();
        topics.dedup();
        let mut offsets = Vec::new();
        for name in topics {
            let Ok(topic) = self.topic(&name) else {
                continue;
            };
            for (p, log) in topic.partitions().iter().enumerate() {
                let committed = state.committed.get(&(name.clone(), p as u32)).copied();
                let end_offset = log.next_offset();
                let from = committed
                    .unwrap_or(log.start_offset())
                    .max(log.start_offset());
                offsets.push(PartitionLag {
                    topic: name.clone(),
                    partition: p as u32,
                    committed,
                    end_offset,
                    lag: end_offset.saturating_sub(from),
                });
            }
        }
        Ok(GroupDescription {
            name: group.to_string(),
            generation: state.generation,
            members,
            offsets,
        })
    }

    // ---- lifecycle ----

    /// Stops accepting work, drains and fsyncs every partition. Idempotent.
    pub async fn shutdown(&self) {
        if self.inner.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.shutdown_signal.send_replace(true);
        // Publishes under way finish (bounded: one stuck on unreachable storage must
        // not hold the shutdown).
        if tokio::time::timeout(PUBLISH_DRAIN, self.inner.publishing.write())
            .await
            .is_err()
        {
            tracing::warn!("publishes under way did not finish in time; closing anyway");
        }
        for task in self.inner.background.lock().drain(..) {
            task.abort();
        }
        let topics: Vec<Arc<Topic>> = self.inner.topics.read().values().cloned().collect();
        let _ = tokio::task::spawn_blocking(move || {
            for topic in topics {
                topic.close();
            }
        })
        .await;
        tracing::info!("broker shut down: all partitions flushed");
    }
}

/// The state of `group`, or `GroupNotFound`.
/// Longest shutdown waits for publishes under way.
const PUBLISH_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Counter of events appended per topic/partition (`metrics` facade).
pub const APPENDED_EVENTS_METRIC: &str = "herald_appended_events_total";
/// Counter of bytes appended per topic/partition: each event's encoded form plus its key.
pub const APPENDED_BYTES_METRIC: &str = "herald_appended_bytes_total";
/// Counter of events handed to consumer-group members per group/topic.
pub const GROUP_DELIVERED_METRIC: &str = "herald_group_delivered_events_total";

fn record_payload_bytes(record: &Record) -> u64 {
    (record.value.len() + record.key.as_ref().map_or(0, Bytes::len)) as u64
}

fn count_appended(topic: &str, partition: u32, events: usize, bytes: u64) {
    let labels = [
        ("topic", topic.to_string()),
        ("partition", partition.to_string()),
    ];
    metrics::counter!(APPENDED_EVENTS_METRIC, &labels).increment(events as u64);
    metrics::counter!(APPENDED_BYTES_METRIC, &labels).increment(bytes);
}

fn count_delivered(group: &str, events: &[EventRecord]) {
    let mut start = 0;
    while let Some(first) = events.get(start) {
        let run = events
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|e| e.topic == first.topic)
            .count();
        let labels = [("group", group.to_string()), ("topic", first.topic.clone())];
        metrics::counter!(GROUP_DELIVERED_METRIC, &labels).increment(run as u64);
        start += run;
    }
}

fn group_mut<'a>(
    groups: &'a mut HashMap<String, GroupState>,
    group: &str,
) -> Result<&'a mut GroupState, BrokerError> {
    groups
        .get_mut(group)
        .ok_or_else(|| BrokerError::GroupNotFound(group.to_string()))
}

/// Background task: sleeps until the next delayed event is due (or a new one is
/// scheduled), then delivers what is due. Holds the broker only while delivering.
async fn run_delay_scheduler(broker: std::sync::Weak<Inner>, schedule: Arc<DelaySchedule>) {
    loop {
        let wait_ms = schedule
            .next_due_ms()
            .map_or(60_000, |t| (t - now_ms()).clamp(0, 60_000));
        if wait_ms > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait_ms as u64)) => {}
                _ = schedule.wake.notified() => {}
            }
        }
        let Some(inner) = broker.upgrade() else {
            return;
        };
        let broker_handle = Broker { inner };
        if broker_handle.is_shutting_down() {
            return;
        }
        if let Err(e) = broker_handle.deliver_due().await {
            tracing::error!(error = %e, "delayed delivery failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
