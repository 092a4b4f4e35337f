//! What the gateways on one JetStream share, seen from one broker: the topic, offset and
//! member registries, the tasks that follow them, and this gateway's member announcements
//! (join, heartbeat, leave). Invariant: this gateway's writes of member keys are ordered by
//! `member_writes`, so a heartbeat can never re-announce a member after its withdrawal.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

use super::{now_ms, Broker, Inner};
use crate::error::BrokerError;
use crate::group::{GroupState, JoinOptions, MemberState};
use crate::metadata::TopicMeta;
use crate::offsets::CommittedOffsets;
use crate::storage::{
    JetStreamBackend, MemberAnnouncement, MemberChange, MemberRegistry, OffsetRegistry,
    OffsetsChange, TopicRegistry,
};

/// How often the heartbeat task looks for members due a re-announcement.
const HEARTBEAT_TICK: Duration = Duration::from_millis(200);
/// A member is re-announced once this fraction of its session timeout has passed, so the
/// other gateways see at least two heartbeats per session.
const HEARTBEATS_PER_SESSION: u32 = 3;
/// Extra age an announcement may have at startup before it counts as dead (clock skew
/// between gateways).
const STARTUP_SKEW: Duration = Duration::from_secs(2);

/// The JetStream connection and the registries every gateway shares.
pub(super) struct Shared {
    pub backend: JetStreamBackend,
    pub topics: TopicRegistry,
    pub offsets: Arc<OffsetRegistry>,
    pub members: MemberRegistry,
    /// Orders this gateway's writes of member keys (announce, heartbeat, withdraw).
    member_writes: tokio::sync::Mutex<()>,
}

/// What a starting gateway read from the registries, and the revisions to follow from.
pub(super) struct Loaded {
    pub topics: Vec<TopicMeta>,
    pub committed: std::collections::HashMap<String, CommittedOffsets>,
    members: Vec<MemberAnnouncement>,
    revisions: [u64; 3],
}

impl Shared {
    /// Opens the registries and reads them. Members this gateway announced before a
    /// restart, and members whose gateway stopped heartbeating long ago, are withdrawn.
    pub async fn open(
        backend: JetStreamBackend,
        gateway: String,
    ) -> Result<(Self, Loaded), BrokerError> {
        let topics = TopicRegistry::open(&backend).await?;
        let offsets = Arc::new(OffsetRegistry::open(&backend).await?);
        let members = MemberRegistry::open(&backend, gateway).await?;
        let (committed, offsets_revision) = offsets.load_all().await?;
        let (metas, topics_revision) = topics.load_all().await?;
        let (announced, members_revision) = members.load_all().await?;
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
        };
        let loaded = Loaded {
            topics: metas,
            committed,
            members: live,
            revisions: [topics_revision, offsets_revision, members_revision],
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
        let [topics_revision, offsets_revision, members_revision] = loaded.revisions;
        let weak = || Arc::downgrade(&self.inner);
        let topics = shared.topics.clone();
        let offsets = Arc::clone(&shared.offsets);
        let members = shared.members.clone();
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
            tokio::spawn(run_heartbeats(weak())),
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
