//! The dispatcher: one reader per source topic partition that has subscriptions,
//! following the log (woken by the partition's `watch()`), matching each event once
//! against its topic's [`RoutingTable`] entry, and appending the matches to their
//! targets (queue logs, forward topics, stream hubs).
//!
//! Durability and no duplicates in queues: each reader's position is checkpointed to
//! `<data_dir>/bus/dispatcher.json` about once a second together with the end offset of
//! every queue log, taken while no reader is between "route" and "record progress"
//! (the `gate`). Every queued copy's key is its source position. At startup each
//! queue's log is scanned from its checkpointed end to its current end to learn the
//! last source offset copied per source partition; readers resume from their
//! checkpoint and skip what was already copied. Forward (`topic`) targets get no such
//! scan: after a crash they may receive again the events of the last checkpoint
//! interval (same `id` and `source`, so the target topic's dedup window drops them).
//!
//! A new subscription starts at the current end of its matching topics: the gate is
//! held exclusively while its start offsets are taken and the routing table swapped,
//! and a reader only routes records below the end it saw before taking the table.
//!
//! Lock order: `gate` (async) before `positions` / `readers` (leaf, sync; never
//! held across an `.await`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_broker::PartitionStore;
use herald_broker::{Broker, BrokerError, EventRecord};
use herald_core::CloudEvent;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::BusError;
use crate::queue::SourcePosition;
use crate::routing::RoutingTable;
use crate::spec::Target;
use crate::subscription::Subscription;

/// Records one reader routes per step.
const READ_RECORDS: usize = 1000;
const READ_BYTES: usize = 4 * 1024 * 1024;
/// Longest a reader sleeps without checking for stop.
const IDLE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub sources: Vec<SourceCursor>,
    pub queues: Vec<QueueCursor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceCursor {
    pub topic: String,
    pub created_at_ms: i64,
    pub partition: u32,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueCursor {
    pub subscription: String,
    pub created_at_ms: i64,
    pub end: u64,
}

pub fn checkpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("bus").join("dispatcher.json")
}

/// Loads the checkpoint (empty if there is none). Blocking.
pub fn load_checkpoint(data_dir: &Path) -> Result<Checkpoint, BusError> {
    let path = checkpoint_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| BusError::io(&path, std::io::Error::other(e))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
        Err(e) => Err(BusError::io(&path, e)),
    }
}

type PartitionKey = (String, u32);

struct Reader {
    created_at_ms: i64,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub struct Dispatcher {
    broker: Broker,
    data_dir: PathBuf,
    pub(crate) gate: tokio::sync::RwLock<()>,
    pub(crate) routing: RwLock<Arc<RoutingTable>>,
    /// Next source offset to route, per partition, with the topic's creation time.
    positions: Mutex<HashMap<PartitionKey, (i64, u64)>>,
    readers: Mutex<HashMap<PartitionKey, Reader>>,
    dirty: AtomicBool,
}

impl Dispatcher {
    pub fn new(broker: Broker, data_dir: PathBuf, checkpoint: &Checkpoint) -> Self {
        let positions = checkpoint
            .sources
            .iter()
            .map(|c| ((c.topic.clone(), c.partition), (c.created_at_ms, c.offset)))
            .collect();
        Self {
            broker,
            data_dir,
            gate: tokio::sync::RwLock::new(()),
            routing: RwLock::new(Arc::new(RoutingTable::default())),
            positions: Mutex::new(positions),
            readers: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(true),
        }
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.routing.read().clone()
    }

    /// Rebuilds the routing table from the broker's topics and `subscriptions`.
    /// Callers that need a consistent start (subscription create) hold the gate.
    pub fn rebuild(&self, subscriptions: &[Arc<Subscription>]) {
        let topics = self.broker.list_topics();
        let table = RoutingTable::build(&topics, subscriptions);
        *self.routing.write() = Arc::new(table);
    }

    /// Starts readers for every routed partition and stops readers of topics that
    /// are gone or have no subscription left.
    pub fn reconcile(self: &Arc<Self>) {
        let table = self.table();
        let mut readers = self.readers.lock();
        readers.retain(|(topic, _), reader| {
            let keep = table
                .topics
                .get(topic)
                .is_some_and(|r| r.created_at_ms == reader.created_at_ms)
                && !reader.task.is_finished();
            if !keep {
                reader.stop.send_replace(true);
            }
            keep
        });
        for (topic, routes) in &table.topics {
            for partition in 0..routes.partitions {
                let key = (topic.clone(), partition);
                if readers.contains_key(&key) {
                    continue;
                }
                let Ok(log) = self
                    .broker
                    .topic(topic)
                    .and_then(|t| t.partition(partition).cloned())
                else {
                    continue;
                };
                let start =
                    self.start_position(topic, routes.created_at_ms, partition, &log, &table);
                let (stop, stop_rx) = watch::channel(false);
                let this = Arc::clone(self);
                let task = tokio::spawn(this.read_loop(
                    topic.clone(),
                    routes.created_at_ms,
                    partition,
                    log,
                    start,
                    stop_rx,
                ));
                readers.insert(
                    key,
                    Reader {
                        created_at_ms: routes.created_at_ms,
                        stop,
                        task,
                    },
                );
            }
        }
    }

    /// Where a new reader starts: its checkpoint, but not before the earliest start
    /// of its subscriptions, within the log.
    fn start_position(
        &self,
        topic: &str,
        created_at_ms: i64,
        partition: u32,
        log: &PartitionStore,
        table: &RoutingTable,
    ) -> u64 {
        let saved = self
            .positions
            .lock()
            .get(&(topic.to_string(), partition))
            .filter(|(created, _)| *created == created_at_ms)
            .map(|(_, offset)| *offset)
            .unwrap_or(0);
        let earliest_start = table
            .topics
            .get(topic)
            .into_iter()
            .flat_map(|r| r.subscriptions())
            .map(|s| s.record.start_offset(topic, created_at_ms, partition))
            .min()
            .unwrap_or(u64::MAX);
        saved
            .max(earliest_start)
            .clamp(log.start_offset(), log.next_offset())
    }

    async fn read_loop(
        self: Arc<Self>,
        topic: String,
        created_at_ms: i64,
        partition: u32,
        log: PartitionStore,
        mut position: u64,
        mut stop: watch::Receiver<bool>,
    ) {
        tracing::debug!(topic, partition, position, "dispatcher reader started");
        loop {
            if *stop.borrow() || self.broker.is_shutting_down() {
                return;
            }
            let mut watch = log.watch();
            position = position.max(log.start_offset());
            if position >= log.next_offset() {
                tokio::select! {
                    changed = watch.changed() => if changed.is_err() { return },
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(IDLE_WAIT) => {}
                }
                continue;
            }
            match self
                .route_step(&topic, created_at_ms, partition, &log, position)
                .await
            {
                Ok(next) => position = next,
                Err(e) => {
                    tracing::warn!(topic, partition, position, error = %e, "dispatcher step failed; retrying");
                    tokio::select! {
                        _ = stop.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }

    /// Routes the records from `position`; returns the next position.
    async fn route_step(
        &self,
        topic: &str,
        created_at_ms: i64,
        partition: u32,
        log: &PartitionStore,
        position: u64,
    ) -> Result<u64, BusError> {
        let _gate = self.gate.read().await;
        // The end is read before the table: see the module docs.
        let end = log.next_offset();
        let table = self.table();
        let records = log.read(position, READ_RECORDS, READ_BYTES).await?;
        let records: Vec<_> = records.into_iter().filter(|r| r.offset < end).collect();
        let Some(last) = records.last().map(|r| r.offset) else {
            return Ok(position);
        };
        let Some(routes) = table.topics.get(topic) else {
            return Ok(last + 1);
        };
        let mut plan = Plan::default();
        for stored in records {
            let record = match EventRecord::from_stored(topic, partition, stored) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(topic, partition, error = %e, "skipping an event that does not decode");
                    continue;
                }
            };
            for sub in routes.route(&record.event) {
                if sub.should_copy(topic, created_at_ms, partition, record.offset) {
                    plan.add(&sub, &record, created_at_ms);
                }
            }
        }
        self.execute(plan, topic, partition).await?;
        self.positions
            .lock()
            .insert((topic.to_string(), partition), (created_at_ms, last + 1));
        self.dirty.store(true, Ordering::Release);
        Ok(last + 1)
    }

    /// Appends every planned copy, then feeds the stream hubs. A target that fails
    /// permanently (missing forward topic, event too large for it) is counted on the
    /// subscription and skipped; any other failure fails the step, which is retried
    /// (targets that succeeded skip their copies then, by `last_copied`).
    async fn execute(&self, plan: Plan, topic: &str, partition: u32) -> Result<(), BusError> {
        let appends = plan.batches.into_values().map(|batch| async move {
            let Some(&last) = batch.offsets.last() else {
                return Ok(());
            };
            let sub = &batch.subscription;
            let count = batch.entries.len() as u64;
            let result = append_with_retry(
                &self.broker,
                &batch.destination,
                batch.entries,
                batch.forced_partition,
                batch.store_ids,
            )
            .await;
            match result {
                Ok(()) => {
                    sub.copied(topic, partition, last);
                    sub.counters.matched.fetch_add(count, Ordering::Relaxed);
                    Ok(())
                }
                Err(
                    e @ (BrokerError::TopicNotFound(_)
                    | BrokerError::Invalid(_)
                    | BrokerError::PayloadTooLarge { .. }),
                ) => {
                    tracing::warn!(subscription = sub.name(), destination = %batch.destination, error = %e, "routing to the target failed; skipping these events");
                    sub.record_error(format!("appending to `{}`: {e}", batch.destination));
                    sub.copied(topic, partition, last);
                    Ok(())
                }
                Err(e) => Err(BusError::from(e)),
            }
        });
        let results = futures::future::join_all(appends).await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(e);
        }
        for (sub, payloads) in plan.streams {
            if let Some(hub) = &sub.streams {
                sub.counters
                    .matched
                    .fetch_add(payloads.len() as u64, Ordering::Relaxed);
                for payload in payloads {
                    hub.broadcast(&payload);
                }
            }
        }
        Ok(())
    }

    /// Writes the checkpoint if anything moved. Takes the gate exclusively while it
    /// reads positions and queue ends.
    pub async fn checkpoint(&self, subscriptions: &[Arc<Subscription>]) -> Result<(), BusError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let checkpoint = {
            let _gate = self.gate.write().await;
            let queues = subscriptions
                .iter()
                .filter_map(|s| {
                    s.queue.as_ref().map(|q| QueueCursor {
                        subscription: s.name().to_string(),
                        created_at_ms: s.record.created_at_ms,
                        end: q.log().next_offset(),
                    })
                })
                .collect();
            let sources = self
                .positions
                .lock()
                .iter()
                .map(
                    |((topic, partition), (created_at_ms, offset))| SourceCursor {
                        topic: topic.clone(),
                        created_at_ms: *created_at_ms,
                        partition: *partition,
                        offset: *offset,
                    },
                )
                .collect();
            Checkpoint { sources, queues }
        };
        let path = checkpoint_path(&self.data_dir);
        let bytes = serde_json::to_vec(&checkpoint)
            .map_err(|e| BusError::io(&path, std::io::Error::other(e)))?;
        let result = tokio::task::spawn_blocking(move || {
            herald_broker::metadata::write_atomically(&path, &bytes)
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.dirty.store(true, Ordering::Release);
                Err(e.into())
            }
            Err(e) => {
                self.dirty.store(true, Ordering::Release);
                Err(BusError::io(&self.data_dir, std::io::Error::other(e)))
            }
        }
    }

    /// Forgets positions of topics that no longer exist (keeps the checkpoint small).
    pub fn forget_missing_topics(&self) {
        let topics: HashMap<String, i64> = self
            .broker
            .list_topics()
            .into_iter()
            .map(|m| (m.name, m.created_at_ms))
            .collect();
        self.positions
            .lock()
            .retain(|(topic, _), (created, _)| topics.get(topic) == Some(created));
    }

    /// Stops every reader and waits for them (each finishes its current step).
    pub async fn stop_readers(&self) {
        let readers: Vec<Reader> = self.readers.lock().drain().map(|(_, r)| r).collect();
        for reader in &readers {
            reader.stop.send_replace(true);
        }
        for reader in readers {
            let _ = reader.task.await;
        }
    }
}

/// One destination's copies from one step.
struct Batch {
    subscription: Arc<Subscription>,
    destination: String,
    forced_partition: Option<u32>,
    entries: Vec<(Option<Bytes>, CloudEvent)>,
    offsets: Vec<u64>,
    /// Queue copies: one store id per entry (see [`Plan::add`]).
    store_ids: Option<Vec<String>>,
}

#[derive(Default)]
struct Plan {
    batches: BTreeMap<String, Batch>,
    streams: Vec<(Arc<Subscription>, Vec<Arc<str>>)>,
}

impl Plan {
    /// Plans `record` (of a topic created at `created_at_ms`) for `sub`. A queued copy's
    /// store id is the topic's creation time and the copy's key: on JetStream every
    /// gateway dispatches, and the queue's stream keeps the first copy of each.
    fn add(&mut self, sub: &Arc<Subscription>, record: &EventRecord, created_at_ms: i64) {
        let (destination, forced_partition, key) = match sub.target() {
            Target::Queue | Target::Webhook(_) => {
                let Some(queue) = &sub.queue else { return };
                let key = SourcePosition {
                    topic: record.topic.clone(),
                    partition: record.partition,
                    offset: record.offset,
                }
                .key();
                (
                    queue.config().topic.clone(),
                    Some(0),
                    Some(Bytes::from(key)),
                )
            }
            Target::Topic { topic } => (
                topic.clone(),
                None,
                record.event.partition_key().map(Bytes::from),
            ),
            Target::Stream(_) => {
                let Some(hub) = &sub.streams else { return };
                if !hub.has_connections() {
                    return;
                }
                let payload: Arc<str> = Arc::from(record.to_json().to_string());
                match self.streams.iter_mut().find(|(s, _)| Arc::ptr_eq(s, sub)) {
                    Some((_, list)) => list.push(payload),
                    None => self.streams.push((Arc::clone(sub), vec![payload])),
                }
                return;
            }
        };
        let batch = self
            .batches
            .entry(format!("{}\u{0}{destination}", sub.name()))
            .or_insert_with(|| Batch {
                subscription: Arc::clone(sub),
                destination,
                forced_partition,
                entries: Vec::new(),
                offsets: Vec::new(),
                store_ids: forced_partition.map(|_| Vec::new()),
            });
        if let (Some(ids), Some(key)) = (&mut batch.store_ids, &key) {
            ids.push(format!("{created_at_ms}/{}", String::from_utf8_lossy(key)));
        }
        batch.entries.push((key, record.event.clone()));
        batch.offsets.push(record.offset);
    }
}

/// Appends, retrying while the broker says the failure is retryable (backpressure).
async fn append_with_retry(
    broker: &Broker,
    topic: &str,
    entries: Vec<(Option<Bytes>, CloudEvent)>,
    forced_partition: Option<u32>,
    store_ids: Option<Vec<String>>,
) -> Result<(), BrokerError> {
    let mut delay = Duration::from_millis(5);
    loop {
        match broker
            .publish_keyed_with_ids(topic, entries.clone(), forced_partition, store_ids.clone())
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_retryable() && !broker.is_shutting_down() => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}
