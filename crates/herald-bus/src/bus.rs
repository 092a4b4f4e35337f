//! [`Bus`]: the handle front-ends use: subscription admin, queue operations,
//! dead-letter listing and redrive, push-stream connections, filter testing.
//!
//! Owns the subscription table, the [`Dispatcher`] and the background tasks
//! (supervisor: topology changes and checkpoints; per queue: maintenance; per webhook
//! subscription: the deliverer).
//!
//! On JetStream storage the definitions are shared by every gateway (KV, see
//! [`SharedDefinitions`]): each gateway follows them, runs every subscription and
//! dispatches every event; queue copies are deduplicated by JetStream (one store id per
//! source position) and queue leases are JetStream's, so any gateway serves any queue.
//!
//! Lock order: `admin` (async, serializes create/delete and applying followed changes)
//! before the dispatcher's `gate` (async) before `subscriptions` (sync, leaf; never held
//! across `.await`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use herald_broker::storage::{DefinitionChange, SharedDefinitions};
use herald_broker::{Broker, BrokerError, EventRecord, SeekPosition};
use herald_core::{CloudEvent, ExtensionValue};
use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::dispatcher::{load_checkpoint, Checkpoint, Dispatcher};
use crate::error::BusError;
use crate::matching::{Filter, TopicPattern, INTERNAL_TOPIC_PREFIX};
use crate::queue::state::ReceiptOutcome;
use crate::queue::{ensure_topic, ext, now_ms, Message, Queue, QueueConfig, SourcePosition};
use crate::spec::{SubscriptionSpec, Target, QUEUE_TOPIC_PREFIX};
use crate::store::{self, SubscriptionRecord, TopicStart};
use crate::stream::StreamReceiver;
use crate::subscription::Subscription;
use crate::webhook::Deliverer;

/// Most subscriptions one server holds.
pub const SUBSCRIPTIONS_MAX: usize = 10_000;
/// The namespace of subscription definitions shared among gateways (JetStream storage).
const SUBSCRIPTION_DEFINITIONS: &str = "subscriptions";
/// Pause before following shared definitions again after the watch ended.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);
/// How long shutdown waits for in-flight deliveries, in total.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Most dead-letter records one list or redrive reads.
pub const DLQ_READ_MAX: usize = 10_000;

/// Settings of the bus.
#[derive(Debug, Clone)]
pub struct BusConfig {
    pub data_dir: PathBuf,
    /// How often the dispatcher's positions are checkpointed.
    pub checkpoint_interval: Duration,
    /// How often topic creation/deletion is looked for.
    pub topology_interval: Duration,
    /// Hosts webhooks may target (and be redirected to); default: any.
    pub webhook_hosts: crate::allowlist::HostAllowList,
}

impl BusConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            checkpoint_interval: Duration::from_secs(1),
            topology_interval: Duration::from_millis(200),
            webhook_hosts: crate::allowlist::HostAllowList::any(),
        }
    }
}

/// Follows up to 10 redirects, and with an allow-list only to allowed hosts.
fn redirect_policy(hosts: crate::allowlist::HostAllowList) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else if hosts.allows_url(attempt.url()) {
            attempt.follow()
        } else {
            attempt.error("redirect to a host outside the webhook allow-list")
        }
    })
}

/// Which dead-letter records a redrive moves.
#[derive(Debug, Clone)]
pub enum RedriveSelection {
    All,
    Offsets(Vec<u64>),
}

/// A cheap-to-clone handle to the event bus.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    config: BusConfig,
    subscriptions: RwLock<BTreeMap<String, Arc<Subscription>>>,
    admin: tokio::sync::Mutex<()>,
    dispatcher: Arc<Dispatcher>,
    topology: Notify,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    http: reqwest::Client,
    /// JetStream storage: the definitions every gateway shares.
    definitions: Option<SharedDefinitions>,
}

/// A shared definition's record; `None` (logged) if it does not parse.
fn parse_definition(name: &str, bytes: &[u8]) -> Option<SubscriptionRecord> {
    match serde_json::from_slice::<SubscriptionRecord>(bytes) {
        Ok(record) if record.spec.name == name => Some(record),
        Ok(_) => {
            tracing::warn!(
                subscription = name,
                "skipping a shared definition stored under another name"
            );
            None
        }
        Err(e) => {
            tracing::warn!(subscription = name, error = %e, "skipping a shared definition that does not parse");
            None
        }
    }
}

/// The highest source offset per partition found in a queue log from `from` on.
async fn scan_copied(queue: &Queue, from: u64) -> Result<HashMap<(String, u32), u64>, BusError> {
    let log = queue.log();
    let mut offset = from.clamp(log.start_offset(), log.next_offset());
    let mut out: HashMap<(String, u32), u64> = HashMap::new();
    while offset < log.next_offset() {
        let records = log.read(offset, 4096, 16 * 1024 * 1024).await?;
        let Some(last) = records.last().map(|r| r.offset) else {
            break;
        };
        offset = last + 1;
        for record in records {
            if let Some(p) = record.key.as_deref().and_then(SourcePosition::parse) {
                let entry = out.entry((p.topic, p.partition)).or_insert(p.offset);
                *entry = (*entry).max(p.offset);
            }
        }
    }
    Ok(out)
}

impl Bus {
    /// Opens the bus over `broker`: loads subscriptions, recovers their queues and the
    /// dispatcher's checkpoint, and starts dispatching. Must run inside tokio.
    pub async fn open(broker: Broker, config: BusConfig) -> Result<Bus, BusError> {
        let data_dir = config.data_dir.clone();
        let redirects = redirect_policy(config.webhook_hosts.clone());
        let definitions = broker.shared_definitions(SUBSCRIPTION_DEFINITIONS).await?;
        let shared = definitions.is_some();
        let (local_records, checkpoint) = tokio::task::spawn_blocking(move || {
            Ok::<_, BusError>((store::load_all(&data_dir)?, load_checkpoint(&data_dir)?))
        })
        .await
        .map_err(|e| BusError::io(&config.data_dir, std::io::Error::other(e)))??;
        let (records, revision) = match &definitions {
            Some(definitions) => {
                // Definitions kept in this data directory (made before subscriptions were
                // shared) move to the shared bucket once (a name taken meanwhile wins), so
                // a later delete through any gateway is not undone by this file.
                for record in &local_records {
                    let bytes = serde_json::to_vec(record)
                        .map_err(|e| BusError::io(&config.data_dir, std::io::Error::other(e)))?;
                    if definitions
                        .create(&record.spec.name, Bytes::from(bytes))
                        .await?
                    {
                        tracing::info!(subscription = %record.spec.name, "subscription from this data directory shared with every gateway");
                    }
                    let (dir, name) = (config.data_dir.clone(), record.spec.name.clone());
                    tokio::task::spawn_blocking(move || store::remove(&dir, &name))
                        .await
                        .map_err(|e| BusError::io(&config.data_dir, std::io::Error::other(e)))??;
                }
                let (loaded, revision) = definitions.load().await?;
                let records = loaded
                    .into_iter()
                    .filter_map(|(name, bytes)| parse_definition(&name, &bytes))
                    .collect();
                (records, revision)
            }
            None => (local_records, 0),
        };
        // Queue topics without a subscription are leftovers of an interrupted delete (on
        // JetStream another gateway may be creating one right now: left alone there).
        let topics = if shared {
            Vec::new()
        } else {
            broker.list_topics()
        };
        for meta in topics {
            if let Some(name) = meta.name.strip_prefix(QUEUE_TOPIC_PREFIX) {
                let owned = records
                    .iter()
                    .any(|r: &SubscriptionRecord| r.spec.name == name && r.spec.target.has_queue());
                if !owned {
                    tracing::warn!(topic = %meta.name, "deleting the queue topic of a deleted subscription");
                    match broker.delete_topic(&meta.name).await {
                        Ok(()) | Err(BrokerError::TopicNotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let dispatcher = Arc::new(Dispatcher::new(
            broker.clone(),
            config.data_dir.clone(),
            &checkpoint,
        ));
        let bus = Bus {
            inner: Arc::new(Inner {
                broker,
                config,
                subscriptions: RwLock::new(BTreeMap::new()),
                admin: tokio::sync::Mutex::new(()),
                dispatcher,
                topology: Notify::new(),
                stop: watch::channel(false).0,
                tasks: Mutex::new(Vec::new()),
                http: reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .redirect(redirects)
                    .build()
                    .map_err(|e| {
                        BusError::io(std::path::Path::new("http"), std::io::Error::other(e))
                    })?,
                definitions,
            }),
        };
        let count = records.len();
        for record in records {
            let sub = bus.activate(record, Some(&checkpoint)).await?;
            bus.inner
                .subscriptions
                .write()
                .insert(sub.name().to_string(), sub);
        }
        bus.inner.dispatcher.rebuild(&bus.subscription_list());
        bus.inner.dispatcher.reconcile();
        let supervisor = tokio::spawn(bus.clone().supervise());
        bus.inner.tasks.lock().push(supervisor);
        if bus.inner.definitions.is_some() {
            let follower = tokio::spawn(bus.clone().follow_definitions(revision));
            bus.inner.tasks.lock().push(follower);
        }
        tracing::info!(subscriptions = count, "event bus started");
        Ok(bus)
    }

    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    fn subscription_list(&self) -> Vec<Arc<Subscription>> {
        self.inner.subscriptions.read().values().cloned().collect()
    }

    /// Builds the live subscription for `record`: opens its queue (recovering its
    /// state and, with a checkpoint, what the dispatcher already copied into it) and
    /// starts its background tasks.
    async fn activate(
        &self,
        record: SubscriptionRecord,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Arc<Subscription>, BusError> {
        let spec = &record.spec;
        let pattern =
            TopicPattern::parse(&spec.topic).map_err(|m| BusError::invalid("topic", m))?;
        let mut last_copied = HashMap::new();
        let queue = if spec.target.has_queue() {
            let queue = Queue::open(
                self.inner.broker.clone(),
                QueueConfig {
                    subscription: spec.name.clone(),
                    topic: spec.queue_topic(),
                    dead_letter_topic: spec.dead_letter_topic(),
                    visibility_timeout_ms: spec.visibility_timeout_ms,
                    max_deliveries: spec.max_deliveries,
                    tracked_max: spec.max_tracked_messages,
                    one_at_a_time: matches!(&spec.target, Target::Webhook(w) if w.ordered_by_key),
                },
                store::state_dir(&self.inner.config.data_dir, &spec.name),
            )
            .await?;
            if self.inner.definitions.is_some() && checkpoint.is_none() {
                // Other gateways may have copied into it already (JetStream storage).
                last_copied = scan_copied(&queue, 0).await?;
            } else if let Some(checkpoint) = checkpoint {
                let from = checkpoint
                    .queues
                    .iter()
                    .find(|q| {
                        q.subscription == spec.name && q.created_at_ms == record.created_at_ms
                    })
                    .map_or(0, |q| q.end);
                last_copied = scan_copied(&queue, from).await?;
            }
            Some(queue)
        } else {
            None
        };
        let sub = Arc::new(Subscription::new(record, pattern, queue, last_copied));
        self.start_tasks(&sub);
        Ok(sub)
    }

    fn start_tasks(&self, sub: &Arc<Subscription>) {
        let Some(queue) = &sub.queue else { return };
        let mut tasks = self.inner.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(
            Arc::clone(queue).run_maintenance(sub.stop.subscribe()),
        ));
        if let (Target::Webhook(target), Some(stats)) = (sub.target(), &sub.webhook) {
            let deliverer = Deliverer {
                subscription: sub.name().to_string(),
                queue: Arc::clone(queue),
                target: target.clone(),
                max_deliveries: sub.record.spec.max_deliveries,
                client: self.inner.http.clone(),
                stats: Arc::clone(stats),
                hosts: self.inner.config.webhook_hosts.clone(),
            };
            tasks.push(tokio::spawn(deliverer.run(sub.stop.subscribe())));
        }
    }

    /// Topology changes and checkpoints, until shutdown.
    async fn supervise(self) {
        let mut stop = self.inner.stop.subscribe();
        let mut topics: Vec<(String, i64)> = Vec::new();
        let mut last_checkpoint = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = self.inner.topology.notified() => {}
                _ = tokio::time::sleep(self.inner.config.topology_interval) => {}
            }
            let now_topics: Vec<(String, i64)> = self
                .inner
                .broker
                .list_topics()
                .into_iter()
                .filter(|m| !m.name.starts_with(INTERNAL_TOPIC_PREFIX))
                .map(|m| (m.name, m.created_at_ms))
                .collect();
            if now_topics != topics {
                topics = now_topics;
                self.inner.dispatcher.rebuild(&self.subscription_list());
                self.inner.dispatcher.forget_missing_topics();
            }
            self.inner.dispatcher.reconcile();
            if last_checkpoint.elapsed() >= self.inner.config.checkpoint_interval {
                last_checkpoint = tokio::time::Instant::now();
                if let Err(e) = self
                    .inner
                    .dispatcher
                    .checkpoint(&self.subscription_list())
                    .await
                {
                    tracing::warn!(error = %e, "dispatcher checkpoint failed; will retry");
                }
            }
        }
    }

    // ---- subscriptions ----

    /// Creates a subscription from its JSON definition. It receives events appended
    /// to matching topics after this returns (and from the start of matching topics
    /// created later).
    pub async fn create_subscription(&self, definition: Value) -> Result<Value, BusError> {
        if self.inner.broker.is_shutting_down() {
            return Err(BusError::ShuttingDown);
        }
        let spec = SubscriptionSpec::from_json(definition)?;
        let (pattern, _filter) = spec.validate()?;
        if let Target::Webhook(target) = &spec.target {
            let allowed = reqwest::Url::parse(&target.url)
                .is_ok_and(|url| self.inner.config.webhook_hosts.allows_url(&url));
            if !allowed {
                return Err(BusError::invalid(
                    "target.url",
                    "its host is not in the server's webhook allow-list",
                ));
            }
        }
        let _admin = self.inner.admin.lock().await;
        if self.inner.subscriptions.read().contains_key(&spec.name) {
            return Err(BusError::SubscriptionExists(spec.name));
        }
        if self.inner.subscriptions.read().len() >= SUBSCRIPTIONS_MAX {
            return Err(BusError::invalid(
                "name",
                format!("this server already has the maximum of {SUBSCRIPTIONS_MAX} subscriptions"),
            ));
        }
        if spec.target.has_queue() {
            ensure_topic(&self.inner.broker, &spec.dead_letter_topic()).await?;
        }
        let name = spec.name.clone();
        // Exclusive gate: no reader routes while the start offsets are taken and the
        // table swapped (see `dispatcher`).
        let gate = Arc::clone(&self.inner.dispatcher);
        let _gate = gate.gate.write().await;
        let mut start = BTreeMap::new();
        for meta in self.inner.broker.list_topics() {
            if !pattern.matches(&meta.name) {
                continue;
            }
            let offsets = self
                .inner
                .broker
                .topic_stats(&meta.name)?
                .into_iter()
                .map(|p| p.end_offset)
                .collect();
            start.insert(
                meta.name.clone(),
                TopicStart {
                    created_at_ms: meta.created_at_ms,
                    offsets,
                },
            );
        }
        let record = SubscriptionRecord {
            spec,
            created_at_ms: now_ms(),
            start,
        };
        let sub = match &self.inner.definitions {
            Some(definitions) => {
                // Shared: the definition is created first (atomically, for every gateway).
                let bytes = serde_json::to_vec(&record).map_err(|e| {
                    BusError::io(std::path::Path::new(&name), std::io::Error::other(e))
                })?;
                if !definitions.create(&name, Bytes::from(bytes)).await? {
                    return Err(BusError::SubscriptionExists(name));
                }
                match self.activate(record, None).await {
                    Ok(sub) => sub,
                    Err(e) => {
                        if let Err(e) = definitions.remove(&name).await {
                            tracing::warn!(subscription = %name, error = %e, "could not remove the definition of a subscription that failed");
                        }
                        return Err(e);
                    }
                }
            }
            None => {
                let sub = self.activate(record.clone(), None).await?;
                let data_dir = self.inner.config.data_dir.clone();
                let stored = tokio::task::spawn_blocking(move || store::store(&data_dir, &record))
                    .await
                    .map_err(|e| {
                        BusError::io(&self.inner.config.data_dir, std::io::Error::other(e))
                    });
                if let Err(e) = stored.and_then(|r| r) {
                    sub.stop.send_replace(true);
                    if let Some(queue) = &sub.queue {
                        let _ = self.inner.broker.delete_topic(&queue.config().topic).await;
                    }
                    return Err(e);
                }
                sub
            }
        };
        self.inner
            .subscriptions
            .write()
            .insert(name.clone(), Arc::clone(&sub));
        self.inner.dispatcher.rebuild(&self.subscription_list());
        self.inner.dispatcher.reconcile();
        tracing::info!(subscription = %name, target = sub.target().kind(), topic = sub.pattern().as_str(), "subscription created");
        Ok(sub.describe())
    }

    pub fn list_subscriptions(&self) -> Vec<Value> {
        self.subscription_list()
            .iter()
            .map(|s| s.describe())
            .collect()
    }

    fn get(&self, name: &str) -> Result<Arc<Subscription>, BusError> {
        self.inner
            .subscriptions
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::SubscriptionNotFound(name.to_string()))
    }

    pub fn describe_subscription(&self, name: &str) -> Result<Value, BusError> {
        Ok(self.get(name)?.describe())
    }

    /// Deletes a subscription, its queue and queue state (its dead-letter topic stays).
    pub async fn delete_subscription(&self, name: &str) -> Result<(), BusError> {
        let _admin = self.inner.admin.lock().await;
        if let Some(definitions) = &self.inner.definitions {
            // Shared: removed for every gateway first (each stops its copy).
            self.get(name)?;
            definitions.remove(name).await?;
        }
        let sub = self.deactivate(name).await?;
        if let Some(queue) = &sub.queue {
            match self.inner.broker.delete_topic(&queue.config().topic).await {
                Ok(()) | Err(BrokerError::TopicNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(subscription = name, "subscription deleted");
        Ok(())
    }

    /// Stops and forgets a subscription here (its definition file and queue state go with
    /// it; its queue topic stays, for the caller).
    async fn deactivate(&self, name: &str) -> Result<Arc<Subscription>, BusError> {
        let sub = {
            let gate = Arc::clone(&self.inner.dispatcher);
            let _gate = gate.gate.write().await;
            let sub = self
                .inner
                .subscriptions
                .write()
                .remove(name)
                .ok_or_else(|| BusError::SubscriptionNotFound(name.to_string()))?;
            self.inner.dispatcher.rebuild(&self.subscription_list());
            sub
        };
        self.inner.dispatcher.reconcile();
        sub.stop.send_replace(true);
        if let Some(hub) = &sub.streams {
            hub.close_all();
        }
        let data_dir = self.inner.config.data_dir.clone();
        let owned = name.to_string();
        let queue = sub.queue.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(queue) = queue {
                queue.close();
            }
            store::remove(&data_dir, &owned)
        })
        .await
        .map_err(|e| BusError::io(&self.inner.config.data_dir, std::io::Error::other(e)))??;
        Ok(sub)
    }

    /// JetStream storage: applies the definitions other gateways create and delete,
    /// until shutdown. After the watch ends, reloads everything and reconciles.
    async fn follow_definitions(self, mut revision: u64) {
        let Some(definitions) = self.inner.definitions.clone() else {
            return;
        };
        let mut stop = self.inner.stop.subscribe();
        loop {
            match definitions.watch(revision).await {
                Ok(changes) => {
                    tokio::pin!(changes);
                    loop {
                        let change = tokio::select! {
                            _ = stop.wait_for(|s| *s) => return,
                            change = changes.next() => change,
                        };
                        let Some(change) = change else { break };
                        self.apply_definition(change).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "following shared subscriptions failed; retrying")
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(FOLLOW_RETRY) => {}
            }
            // Catch up with whatever the watch missed.
            match definitions.load().await {
                Ok((loaded, now)) => {
                    revision = now;
                    let names: Vec<String> = loaded.iter().map(|(n, _)| n.clone()).collect();
                    for (name, value) in loaded {
                        self.apply_definition(DefinitionChange {
                            name,
                            value: Some(value),
                        })
                        .await;
                    }
                    let gone: Vec<String> = self
                        .inner
                        .subscriptions
                        .read()
                        .keys()
                        .filter(|n| !names.contains(n))
                        .cloned()
                        .collect();
                    for name in gone {
                        self.apply_definition(DefinitionChange { name, value: None })
                            .await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reloading shared subscriptions failed"),
            }
        }
    }

    /// Starts a subscription another gateway created, or stops one it deleted.
    async fn apply_definition(&self, change: DefinitionChange) {
        let _admin = self.inner.admin.lock().await;
        let known = self.inner.subscriptions.read().get(&change.name).cloned();
        match (change.value, known) {
            (Some(bytes), None) => {
                let Some(record) = parse_definition(&change.name, &bytes) else {
                    return;
                };
                let gate = Arc::clone(&self.inner.dispatcher);
                let _gate = gate.gate.write().await;
                match self.activate(record, None).await {
                    Ok(sub) => {
                        self.inner
                            .subscriptions
                            .write()
                            .insert(change.name.clone(), sub);
                        self.inner.dispatcher.rebuild(&self.subscription_list());
                        tracing::info!(subscription = %change.name, "subscription created by another gateway started here");
                    }
                    Err(e) => {
                        tracing::warn!(subscription = %change.name, error = %e, "starting a subscription created by another gateway failed")
                    }
                }
            }
            (Some(bytes), Some(sub)) => {
                // The same name re-created elsewhere after a delete this gateway missed.
                let same = parse_definition(&change.name, &bytes)
                    .is_some_and(|r| r.created_at_ms == sub.record.created_at_ms);
                if !same {
                    tracing::warn!(subscription = %change.name, "a subscription was replaced on another gateway; restarting it here");
                    if let Err(e) = self.deactivate(&change.name).await {
                        tracing::warn!(subscription = %change.name, error = %e, "stopping the replaced subscription failed");
                    }
                    drop(_admin);
                    Box::pin(self.apply_definition(DefinitionChange {
                        name: change.name,
                        value: Some(bytes),
                    }))
                    .await;
                    return;
                }
            }
            (None, Some(_)) => match self.deactivate(&change.name).await {
                Ok(_) => {
                    tracing::info!(subscription = %change.name, "subscription deleted by another gateway stopped here")
                }
                Err(e) => {
                    tracing::warn!(subscription = %change.name, error = %e, "stopping a subscription deleted by another gateway failed")
                }
            },
            (None, None) => {}
        }
        self.inner.dispatcher.reconcile();
    }

    // ---- queues ----

    fn queue_of(&self, name: &str, pull: bool) -> Result<Arc<Queue>, BusError> {
        let sub = self.get(name)?;
        if pull && matches!(sub.target(), Target::Webhook(_)) {
            return Err(BusError::WrongTarget {
                name: name.to_string(),
                target: "webhook",
                needs: "a queue subscription (webhook subscriptions are consumed by the server)",
            });
        }
        sub.queue.clone().ok_or(BusError::WrongTarget {
            name: name.to_string(),
            target: sub.target().kind(),
            needs: "a queue or webhook subscription",
        })
    }

    pub async fn pull(
        &self,
        name: &str,
        max: usize,
        visibility_ms: Option<u64>,
        wait: Duration,
    ) -> Result<Vec<Message>, BusError> {
        if let Some(v) = visibility_ms {
            if v == 0 || v > crate::spec::VISIBILITY_TIMEOUT_MS_MAX {
                return Err(BusError::invalid(
                    "visibility_timeout_ms",
                    format!(
                        "must be between 1 and {}",
                        crate::spec::VISIBILITY_TIMEOUT_MS_MAX
                    ),
                ));
            }
        }
        self.queue_of(name, true)?
            .pull(max, visibility_ms, wait)
            .await
    }

    pub async fn ack(
        &self,
        name: &str,
        receipts: &[String],
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError> {
        self.queue_of(name, false)?.ack(receipts).await
    }

    pub async fn nack(
        &self,
        name: &str,
        receipts: &[String],
        delay_ms: u64,
        reason: Option<&str>,
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError> {
        self.queue_of(name, false)?
            .nack(receipts, delay_ms, reason)
            .await
    }

    pub async fn extend(
        &self,
        name: &str,
        receipts: &[String],
        visibility_ms: u64,
    ) -> Result<Vec<(String, ReceiptOutcome)>, BusError> {
        if visibility_ms == 0 || visibility_ms > crate::spec::VISIBILITY_TIMEOUT_MS_MAX {
            return Err(BusError::invalid(
                "visibility_timeout_ms",
                format!(
                    "must be between 1 and {}",
                    crate::spec::VISIBILITY_TIMEOUT_MS_MAX
                ),
            ));
        }
        self.queue_of(name, false)?
            .extend(receipts, visibility_ms)
            .await
    }

    // ---- dead letters ----

    /// Dead-letter records of subscription `name` in `partition` of its dead-letter
    /// topic, from `offset` (default: the start), at most `max`.
    pub async fn dead_letters(
        &self,
        name: &str,
        partition: u32,
        offset: Option<u64>,
        max: usize,
    ) -> Result<(Vec<Value>, u64), BusError> {
        let queue = self.queue_of(name, false)?;
        let topic = queue.config().dead_letter_topic.clone();
        let position = offset.map_or(SeekPosition::Earliest, SeekPosition::Offset);
        let result = self
            .inner
            .broker
            .fetch(
                &topic,
                partition,
                position,
                max.clamp(1, DLQ_READ_MAX),
                Duration::ZERO,
            )
            .await?;
        let records = result
            .events
            .iter()
            .filter(|r| belongs_to(r, name))
            .map(dead_letter_json)
            .collect();
        Ok((records, result.next_offset))
    }

    /// Copies dead-lettered events of `name` back into its queue (or to `to_topic`),
    /// without Herald's dead-letter extensions, keeping their ids. The dead-letter
    /// records stay (an audit trail). Returns how many were moved.
    pub async fn redrive(
        &self,
        name: &str,
        partition: u32,
        selection: RedriveSelection,
        to_topic: Option<String>,
    ) -> Result<usize, BusError> {
        let queue = self.queue_of(name, false)?;
        if let Some(t) = &to_topic {
            herald_core::name::validate_name("to_topic", t)?;
            if t.starts_with(INTERNAL_TOPIC_PREFIX) {
                return Err(BusError::invalid(
                    "to_topic",
                    "internal topics cannot be written",
                ));
            }
            self.inner.broker.topic(t)?;
        }
        let dlq = queue.config().dead_letter_topic.clone();
        let records = self.read_dead_letters(&dlq, partition, &selection).await?;
        let mut entries: Vec<(Option<Bytes>, CloudEvent)> = Vec::new();
        for record in records.into_iter().filter(|r| belongs_to(r, name)) {
            let mut event = record.event;
            for x in ext::ALL {
                event.extensions.remove(x);
            }
            entries.push((record.key, event));
        }
        let count = entries.len();
        for chunk in entries.chunks(1000) {
            match &to_topic {
                None => queue.append(chunk.to_vec()).await?,
                Some(t) => {
                    let events = chunk.iter().map(|(_, e)| e.clone()).collect();
                    self.inner.broker.publish(t, events, None).await?;
                }
            }
        }
        tracing::info!(subscription = name, count, to = ?to_topic, "dead letters redriven");
        Ok(count)
    }

    async fn read_dead_letters(
        &self,
        topic: &str,
        partition: u32,
        selection: &RedriveSelection,
    ) -> Result<Vec<EventRecord>, BusError> {
        let log = self
            .inner
            .broker
            .topic(topic)?
            .partition(partition)?
            .clone();
        let mut out = Vec::new();
        match selection {
            RedriveSelection::Offsets(offsets) => {
                if offsets.len() > DLQ_READ_MAX {
                    return Err(BusError::invalid(
                        "offsets",
                        format!("at most {DLQ_READ_MAX} per request"),
                    ));
                }
                for &offset in offsets {
                    if offset < log.start_offset() || offset >= log.next_offset() {
                        return Err(BusError::invalid(
                            "offsets",
                            format!(
                                "offset {offset} is not in the dead-letter topic (it holds {}..{})",
                                log.start_offset(),
                                log.next_offset()
                            ),
                        ));
                    }
                    for stored in log.read(offset, 1, usize::MAX).await? {
                        out.push(EventRecord::from_stored(topic, partition, stored)?);
                    }
                }
            }
            RedriveSelection::All => {
                let mut offset = log.start_offset();
                let end = log.next_offset();
                while offset < end && out.len() < DLQ_READ_MAX {
                    let stored = log
                        .read(
                            offset,
                            (DLQ_READ_MAX - out.len()).min(1000),
                            8 * 1024 * 1024,
                        )
                        .await?;
                    let Some(last) = stored.last().map(|r| r.offset) else {
                        break;
                    };
                    offset = last + 1;
                    for s in stored.into_iter().filter(|s| s.offset < end) {
                        out.push(EventRecord::from_stored(topic, partition, s)?);
                    }
                }
            }
        }
        Ok(out)
    }

    // ---- push streams ----

    /// A new live connection to a `stream` subscription.
    pub fn connect_stream(&self, name: &str) -> Result<StreamReceiver, BusError> {
        let sub = self.get(name)?;
        let hub = sub.streams.as_ref().ok_or(BusError::WrongTarget {
            name: name.to_string(),
            target: sub.target().kind(),
            needs: "a stream subscription",
        })?;
        hub.connect().ok_or_else(|| {
            BusError::invalid(
                "name",
                format!(
                    "subscription `{name}` has the maximum of {} connections",
                    crate::stream::CONNECTIONS_MAX
                ),
            )
        })
    }

    // ---- lifecycle ----

    /// Stops dispatching and delivering, checkpoints, and closes every queue journal.
    /// Call before the broker's shutdown. Idempotent.
    pub async fn shutdown(&self) {
        if self.inner.stop.send_replace(true) {
            return;
        }
        let subs = self.subscription_list();
        for sub in &subs {
            sub.stop.send_replace(true);
            if let Some(hub) = &sub.streams {
                hub.close_all();
            }
        }
        self.inner.dispatcher.stop_readers().await;
        if let Err(e) = self.inner.dispatcher.checkpoint(&subs).await {
            tracing::warn!(error = %e, "final dispatcher checkpoint failed");
        }
        // In-flight webhook requests get a bounded grace period, all together.
        let tasks: Vec<JoinHandle<()>> = self.inner.tasks.lock().drain(..).collect();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        let queues: Vec<Arc<Queue>> = subs.iter().filter_map(|s| s.queue.clone()).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for queue in queues {
                queue.close();
            }
        })
        .await;
        tracing::info!("event bus stopped");
    }

    /// Tells the supervisor to look at topics now (e.g. after a topic was created).
    pub fn topology_changed(&self) {
        self.inner.topology.notify_one();
    }
}

fn belongs_to(record: &EventRecord, subscription: &str) -> bool {
    record
        .event
        .extensions
        .get(ext::SUBSCRIPTION)
        .and_then(ExtensionValue::as_str)
        == Some(subscription)
}

fn dead_letter_json(record: &EventRecord) -> Value {
    let x = &record.event.extensions;
    let get = |name: &str| match x.get(name) {
        Some(ExtensionValue::String(s)) => json!(s),
        Some(ExtensionValue::Integer(i)) => json!(i),
        Some(ExtensionValue::Bool(b)) => json!(b),
        None => Value::Null,
    };
    let mut out = record.to_json();
    out["reason"] = get(ext::REASON);
    out["delivery_count"] = get(ext::DELIVERY_COUNT);
    out["dead_at"] = get(ext::DEAD_AT);
    out["source"] = json!({
        "topic": get(ext::SOURCE_TOPIC),
        "partition": get(ext::SOURCE_PARTITION),
        "offset": get(ext::SOURCE_OFFSET),
    });
    out
}

/// `POST /filters/test`: whether `event` (a structured CloudEvent) matches `pattern`,
/// with the filter's explanation.
pub fn test_filter(pattern: &Value, event: &Value) -> Result<Value, BusError> {
    let filter = Filter::compile(pattern).map_err(|e| {
        let field = match e.path() {
            "" => "pattern".to_string(),
            path => format!("pattern.{path}"),
        };
        BusError::invalid(field, e.to_string())
    })?;
    let event = CloudEvent::from_json_value(event.clone())
        .map_err(|e| BusError::invalid(format!("event.{}", e.field), e.message))?;
    let explanation = serde_json::to_value(filter.explain(&event)).unwrap_or(Value::Null);
    Ok(json!({"matches": filter.matches(&event), "explanation": explanation}))
}
