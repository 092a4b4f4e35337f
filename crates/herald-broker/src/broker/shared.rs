//! What the gateways on one JetStream share, seen from one broker: the topic, offset and
//! member registries, the tasks that follow them, this gateway's member announcements
//! (join, heartbeat, leave), and the delayed-delivery lease. Invariants: this gateway's
//! writes of member keys are ordered by `member_writes`, so a heartbeat can never
//! re-announce a member after its withdrawal; only the gateway holding the lease delivers
//! delayed events, and it stops as soon as a renewal or checkpoint write finds the lease
//! or checkpoint moved.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

use super::{now_ms, Broker, Inner};
use crate::delay::Checkpoint;
use crate::error::BrokerError;
use crate::group::{GroupState, JoinOptions, MemberState};
use crate::metadata::TopicMeta;
use crate::offsets::CommittedOffsets;
use crate::storage::{
    DelayedRegistry, JetStreamBackend, LeaseTable, MemberAnnouncement, MemberChange,
    MemberRegistry, OffsetRegistry, OffsetsChange, SharedSchemas, TopicRegistry,
};

/// How often the heartbeat task looks for members due a re-announcement.
const HEARTBEAT_TICK: Duration = Duration::from_millis(200);
/// A member is re-announced once this fraction of its session timeout has passed, so the
/// other gateways see at least two heartbeats per session.
const HEARTBEATS_PER_SESSION: u32 = 3;
/// Extra age an announcement may have at startup before it counts as dead (clock skew
/// between gateways).
const STARTUP_SKEW: Duration = Duration::from_secs(2);
/// How often the delayed-delivery lease is renewed (and, by the others, checked).
const LEASE_TICK: Duration = Duration::from_secs(1);
/// A lease whose revision has not moved for this long, as seen by this gateway, belongs
/// to a dead gateway and may be taken over.
const LEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// This gateway's part in delayed delivery.
#[derive(Debug, Default)]
struct Delivery {
    /// True while this gateway holds the lease (and so delivers).
    leading: bool,
    lease_revision: u64,
    /// When the lease was last written by this gateway.
    renewed: Option<Instant>,
    checkpoint_revision: u64,
    /// The delayed topic is scheduled up to here.
    scanned: u64,
}

/// The JetStream connection and the registries every gateway shares.
pub(super) struct Shared {
    pub backend: JetStreamBackend,
    pub topics: TopicRegistry,
    pub offsets: Arc<OffsetRegistry>,
    pub members: MemberRegistry,
    /// Orders this gateway's writes of member keys (announce, heartbeat, withdraw).
    member_writes: tokio::sync::Mutex<()>,
    delayed: DelayedRegistry,
    delivery: parking_lot::Mutex<Delivery>,
    pub schemas: SharedSchemas,
    pub leases: LeaseTable,
}

/// What a starting gateway read from the registries, and the revisions to follow from.
pub(super) struct Loaded {
    pub topics: Vec<TopicMeta>,
    pub committed: std::collections::HashMap<String, CommittedOffsets>,
    members: Vec<MemberAnnouncement>,
    pub schemas: herald_core::schema::SchemaRegistry,
    revisions: [u64; 4],
}

impl Shared {
    /// Opens the registries and reads them. Members this gateway announced before a
    /// restart, and members whose gateway stopped heartbeating long ago, are withdrawn.
    pub async fn open(
        backend: JetStreamBackend,
        gateway: String,
    ) -> Result<(Self, Loaded), BrokerError> {
        // Concurrently: on a replicated cluster each bucket takes a round of consensus.
        let (topics, offsets, members, delayed, schemas, leases) = tokio::try_join!(
            TopicRegistry::open(&backend),
            OffsetRegistry::open(&backend),
            MemberRegistry::open(&backend, gateway.clone()),
            DelayedRegistry::open(&backend, gateway),
            SharedSchemas::open(&backend),
            LeaseTable::open(&backend),
        )?;
        let offsets = Arc::new(offsets);
        let (
            (registry, schemas_revision),
            (committed, offsets_revision),
            (metas, topics_revision),
            (announced, members_revision),
        ) = tokio::try_join!(
            schemas.load(),
            offsets.load_all(),
            topics.load_all(),
            members.load_all(),
        )?;
        let mut live = Vec::new();
        for a in announced {
            let age = Duration::from_millis(now_ms().saturating_sub(a.announced_ms).max(0) as u64);
            let dead = a.gateway == members.gateway()
                || age > Duration::from_millis(a.session_timeout_ms) + STARTUP_SKEW;
            if dead {
                members.withdraw(&a.group, &a.member).await?;
            } else {
                live.push(a);
            }
        }
        let shared = Self {
            backend,
            topics,
            offsets,
            members,
            member_writes: tokio::sync::Mutex::new(()),
            delayed,
            delivery: parking_lot::Mutex::new(Delivery::default()),
            schemas,
            leases,
        };
        let loaded = Loaded {
            topics: metas,
            committed,
            members: live,
            schemas: registry,
            revisions: [
                topics_revision,
                offsets_revision,
                members_revision,
                schemas_revision,
            ],
        };
        Ok((shared, loaded))
    }

    fn announcement(&self, group: &str, member: &str, state: &MemberState) -> MemberAnnouncement {
        MemberAnnouncement {
            group: group.to_string(),
            member: member.to_string(),
            gateway: self.members.gateway().to_string(),
            topics: state.topics.clone(),
            session_timeout_ms: state.session_timeout.as_millis() as u64,
            earliest: state.reset == crate::group::OffsetReset::Earliest,
            announced_ms: now_ms(),
        }
    }
}

/// Follows one registry from `revision` on: `watch` opens the change stream from a
/// revision, `apply` applies one change. Re-subscribes from the last revision seen when the
/// stream fails or ends, until the broker is dropped.
async fn follow<C, S, W, WF, A, AF>(
    inner: Weak<Inner>,
    what: &'static str,
    mut revision: u64,
    watch: W,
    apply: A,
) where
    W: Fn(u64) -> WF,
    WF: Future<Output = Result<S, BrokerError>>,
    S: Stream<Item = (u64, C)>,
    A: Fn(Broker, C) -> AF,
    AF: Future<Output = ()>,
{
    loop {
        match watch(revision).await {
            Ok(changes) => {
                let mut changes = std::pin::pin!(changes);
                while let Some((seen, change)) = changes.next().await {
                    revision = revision.max(seen);
                    let Some(inner) = inner.upgrade() else { return };
                    apply(Broker { inner }, change).await;
                }
            }
            Err(error) => tracing::warn!(%error, "{what} watch failed; retrying"),
        }
        if inner.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Re-announces this gateway's members as their heartbeats fall due.
async fn run_heartbeats(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(HEARTBEAT_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        Broker { inner }.announce_due_members().await;
    }
}

/// Holds, renews or waits to take over the delayed-delivery lease; while holding it,
/// schedules every delayed event appended (by any gateway) as it appears.
async fn run_delivery_lease(inner: Weak<Inner>) {
    let mut observed = None;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let broker = Broker { inner: strong };
        if broker.is_shutting_down() {
            return;
        }
        // Watch before scanning, so an append during the scan wakes the next round.
        let mut appended = broker.delayed_log().map(|log| log.watch());
        broker.tend_delivery_lease(&mut observed).await;
        drop(broker);
        match &mut appended {
            Some(watch) => {
                tokio::select! {
                    _ = tokio::time::sleep(LEASE_TICK) => {}
                    _ = watch.changed() => {}
                }
            }
            None => tokio::time::sleep(LEASE_TICK).await,
        }
    }
}

impl Broker {
    /// Applies what a starting gateway loaded and starts following the registries and
    /// heartbeating this gateway's members.
    pub(super) fn start_sharing(&self, loaded: Loaded) {
        let Some(shared) = &self.inner.jetstream else {
            return;
        };
        for a in loaded.members {
            self.apply_member_change(MemberChange::Announced(a));
        }
        let [topics_revision, offsets_revision, members_revision, schemas_revision] =
            loaded.revisions;
        self.inner.schemas.replace(loaded.schemas, schemas_revision);
        let weak = || Arc::downgrade(&self.inner);
        let topics = shared.topics.clone();
        let offsets = Arc::clone(&shared.offsets);
        let members = shared.members.clone();
        let schemas = shared.schemas.clone();
        let tasks = [
            tokio::spawn(follow(
                weak(),
                "topic registry",
                topics_revision,
                move |revision| {
                    let topics = topics.clone();
                    async move { topics.watch(revision).await }
                },
                |broker, change| async move { broker.apply_topic_change(change).await },
            )),
            tokio::spawn(follow(
                weak(),
                "committed offsets",
                offsets_revision,
                move |revision| {
                    let offsets = Arc::clone(&offsets);
                    async move { offsets.watch(revision).await }
                },
                |broker, change| async move { broker.apply_offsets_change(change) },
            )),
            tokio::spawn(follow(
                weak(),
                "group members",
                members_revision,
                move |revision| {
                    let members = members.clone();
                    async move { members.watch(revision).await }
                },
                |broker, change| async move { broker.apply_member_change(change) },
            )),
            tokio::spawn(follow(
                weak(),
                "schemas",
                schemas_revision,
                move |revision| {
                    let schemas = schemas.clone();
                    async move { schemas.watch(revision).await }
                },
                |broker, (revision, registry)| async move {
                    broker.inner.schemas.replace(registry, revision)
                },
            )),
            tokio::spawn(run_heartbeats(weak())),
            tokio::spawn(run_delivery_lease(weak())),
        ];
        self.inner.background.lock().extend(tasks);
    }

    /// A commit made through another gateway replaces this gateway's copy of that group's
    /// offsets.
    fn apply_offsets_change(&self, (group, offsets): OffsetsChange) {
        let mut groups = self.inner.groups.lock();
        match offsets {
            Some(offsets) => groups.entry(group).or_default().committed = offsets,
            None => {
                if let Some(state) = groups.get_mut(&group) {
                    state.committed.clear();
                    if state.members.is_empty() {
                        groups.remove(&group);
                    }
                }
            }
        }
    }

    /// A member another gateway announced, heartbeated or withdrew.
    fn apply_member_change(&self, change: MemberChange) {
        let counts = self.partition_counts();
        let mut groups = self.inner.groups.lock();
        match change {
            MemberChange::Announced(a) => {
                let options = JoinOptions {
                    auto_offset_reset: a.reset(),
                    session_timeout: Duration::from_millis(a.session_timeout_ms),
                    topics: a.topics,
                };
                let state = groups.entry(a.group.clone()).or_default();
                let before = state.generation;
                state.join_remote(
                    a.member.clone(),
                    options,
                    a.gateway,
                    Instant::now(),
                    &counts,
                );
                if state.generation != before {
                    tracing::info!(group = %a.group, member = %a.member, generation = state.generation, "member on another gateway joined");
                }
            }
            MemberChange::Withdrawn { group, member } => {
                let Some(state) = groups.get_mut(&group) else {
                    return;
                };
                match state.members.get_mut(&member) {
                    // Another gateway gave up on a member this gateway still serves (its
                    // heartbeats were late): announce it again at once.
                    Some(m) if m.is_local() => m.announced = None,
                    Some(_) => {
                        state.remove_remote(&member, &counts);
                        tracing::info!(group = %group, member = %member, generation = state.generation, "member on another gateway left");
                    }
                    None => {}
                }
            }
        }
    }

    /// Rebalances the groups with members subscribed to `topic` (opened after they joined).
    pub(super) fn rebalance_subscribers(&self, topic: &str) {
        let counts: BTreeMap<String, u32> = self.partition_counts();
        let mut groups = self.inner.groups.lock();
        for state in groups.values_mut() {
            if state
                .members
                .values()
                .any(|m| m.topics.iter().any(|t| t == topic))
            {
                state.rebalance(&counts);
            }
        }
    }

    /// Announces a member this gateway serves (a join); no-op on the embedded log.
    pub(super) async fn announce_member(
        &self,
        group: &str,
        member: &str,
    ) -> Result<(), BrokerError> {
        let Some(shared) = &self.inner.jetstream else {
            return Ok(());
        };
        let _writes = shared.member_writes.lock().await;
        let announcement = {
            let groups = self.inner.groups.lock();
            match groups.get(group).and_then(|g| g.members.get(member)) {
                Some(state) => shared.announcement(group, member, state),
                None => return Ok(()),
            }
        };
        let sent = Instant::now();
        shared.members.announce(&announcement).await?;
        mark_announced(&mut self.inner.groups.lock(), group, member, sent);
        Ok(())
    }

    /// Re-announces (heartbeats) this gateway's members that are due.
    async fn announce_due_members(&self) {
        let Some(shared) = &self.inner.jetstream else {
            return;
        };
        let _writes = shared.member_writes.lock().await;
        let now = Instant::now();
        let due: Vec<MemberAnnouncement> = {
            let groups = self.inner.groups.lock();
            groups
                .iter()
                .flat_map(|(group, state)| {
                    state.members.iter().filter_map(move |(id, m)| {
                        let due = m.announced.is_none_or(|at| {
                            now.saturating_duration_since(at)
                                >= m.session_timeout / HEARTBEATS_PER_SESSION
                        });
                        (m.is_local() && due).then(|| shared.announcement(group, id, m))
                    })
                })
                .collect()
        };
        for a in due {
            match shared.members.announce(&a).await {
                Ok(()) => mark_announced(&mut self.inner.groups.lock(), &a.group, &a.member, now),
                Err(error) => {
                    tracing::warn!(group = %a.group, member = %a.member, %error, "member heartbeat failed")
                }
            }
        }
    }

    /// Removes members' keys (they left or expired, here or on a gateway that died);
    /// failures are logged: the other gateways expire a member whose heartbeats stop.
    pub(super) async fn withdraw_members(&self, members: Vec<(String, String)>) {
        let Some(shared) = &self.inner.jetstream else {
            return;
        };
        let _writes = shared.member_writes.lock().await;
        for (group, member) in members {
            if let Err(error) = shared.members.withdraw(&group, &member).await {
                tracing::warn!(%group, %member, %error, "could not withdraw a group member");
            }
        }
    }
}

impl Broker {
    /// True if this broker delivers delayed events: always on the embedded log; on
    /// JetStream while it holds the lease.
    pub(super) fn delivers_delayed(&self) -> bool {
        self.inner
            .jetstream
            .as_ref()
            .is_none_or(|shared| shared.delivery.lock().leading)
    }

    /// Renews the lease (holder), or takes it over when it is free, this gateway's own
    /// from before a restart, or not renewed for [`LEASE_TIMEOUT`]; then schedules new
    /// delayed events if holding it. `observed`: the lease revision seen and since when.
    async fn tend_delivery_lease(&self, observed: &mut Option<(u64, Instant)>) {
        let Some(shared) = &self.inner.jetstream else {
            return;
        };
        let (leading, revision, renewed) = {
            let d = shared.delivery.lock();
            (d.leading, d.lease_revision, d.renewed)
        };
        if leading {
            if renewed.is_some_and(|at| at.elapsed() < LEASE_TICK) {
                // Renewed recently: only new events to schedule.
            } else {
                match shared.delayed.claim(revision).await {
                    Ok(Some(new)) => {
                        let mut d = shared.delivery.lock();
                        d.lease_revision = new;
                        d.renewed = Some(Instant::now());
                    }
                    Ok(None) => self.stop_delivering("another gateway holds the lease"),
                    Err(error) => {
                        tracing::warn!(%error, "could not renew the delayed-delivery lease");
                        if renewed.is_none_or(|at| at.elapsed() >= LEASE_TIMEOUT) {
                            self.stop_delivering("the lease could not be renewed in time");
                        }
                    }
                }
            }
        } else {
            let lease = match shared.delayed.lease().await {
                Ok(lease) => lease,
                Err(error) => {
                    tracing::warn!(%error, "could not read the delayed-delivery lease");
                    return;
                }
            };
            let free = lease
                .holder
                .as_deref()
                .is_none_or(|holder| holder == shared.delayed.gateway());
            let stale = match observed {
                Some((seen, since)) if *seen == lease.revision => since.elapsed() >= LEASE_TIMEOUT,
                _ => {
                    *observed = Some((lease.revision, Instant::now()));
                    false
                }
            };
            if !(free || stale) {
                return;
            }
            match shared.delayed.claim(lease.revision).await {
                Ok(Some(new)) => {
                    if let Err(error) = self.start_delivering(new).await {
                        tracing::warn!(%error, "could not take over delayed delivery");
                        self.stop_delivering("taking over failed");
                        return;
                    }
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "could not claim the delayed-delivery lease");
                    return;
                }
            }
        }
        if self.delivers_delayed() {
            if let Err(error) = self.schedule_new_delayed().await {
                tracing::warn!(%error, "could not schedule new delayed events");
            }
        }
    }

    /// This gateway just took the lease: load the shared checkpoint and schedule every
    /// undelivered delayed event from its floor.
    async fn start_delivering(&self, lease_revision: u64) -> Result<(), BrokerError> {
        let Some(shared) = &self.inner.jetstream else {
            return Ok(());
        };
        let (stored, checkpoint_revision) = shared.delayed.checkpoint().await?;
        let checkpoint = match stored {
            None => Checkpoint::default(),
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::error!(%error, "delayed-delivery checkpoint does not parse; every stored delayed event is scheduled again");
                Checkpoint::default()
            }),
        };
        let floor = checkpoint.floor;
        self.inner.delay.reset(checkpoint);
        *shared.delivery.lock() = Delivery {
            leading: true,
            lease_revision,
            renewed: Some(Instant::now()),
            checkpoint_revision,
            scanned: floor,
        };
        tracing::info!(floor, "this gateway delivers delayed events now");
        Ok(())
    }

    fn stop_delivering(&self, why: &str) {
        let Some(shared) = &self.inner.jetstream else {
            return;
        };
        let was_leading = std::mem::take(&mut *shared.delivery.lock()).leading;
        self.inner.delay.reset(Checkpoint::default());
        if was_leading {
            tracing::warn!(why, "this gateway stopped delivering delayed events");
        }
    }

    /// Schedules the delayed events appended since the last scan (lease holder only).
    async fn schedule_new_delayed(&self) -> Result<(), BrokerError> {
        let Some(shared) = &self.inner.jetstream else {
            return Ok(());
        };
        if self.delayed_log().is_none() {
            // Not created yet (this gateway is starting, or another one creates it).
            return Ok(());
        }
        let from = shared.delivery.lock().scanned;
        let scanned = self.schedule_delayed_from(from).await?;
        let mut d = shared.delivery.lock();
        if d.leading {
            d.scanned = d.scanned.max(scanned);
        }
        drop(d);
        self.inner.delay.wake.notify_one();
        Ok(())
    }

    /// Stores the checkpoint after deliveries (lease holder only); a checkpoint moved by
    /// another gateway means the lease was lost.
    pub(super) async fn store_delayed_checkpoint(&self, bytes: Vec<u8>) -> Result<(), BrokerError> {
        let Some(shared) = &self.inner.jetstream else {
            return Ok(());
        };
        let revision = shared.delivery.lock().checkpoint_revision;
        match shared.delayed.store_checkpoint(bytes, revision).await? {
            Some(new) => shared.delivery.lock().checkpoint_revision = new,
            None => self.stop_delivering("another gateway wrote the checkpoint"),
        }
        Ok(())
    }
}

fn mark_announced(
    groups: &mut std::collections::HashMap<String, GroupState>,
    group: &str,
    member: &str,
    at: Instant,
) {
    if let Some(m) = groups
        .get_mut(group)
        .and_then(|g| g.members.get_mut(member))
    {
        m.announced = Some(at);
    }
}
