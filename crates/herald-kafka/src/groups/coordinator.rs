//! The group coordinator for Kafka's classic consumer-group protocol, in memory.
//!
//! Owns: membership, generations, the JoinGroup barrier (with the rebalance timeout and
//! the initial-rebalance delay), leader election, distribution of the leader's SyncGroup
//! assignment, heartbeats, LeaveGroup and session expiry. Assignment itself is done by the
//! clients (the leader runs the assignor); the coordinator only relays bytes.
//! Does not own: committed offsets (the broker's durable offset store keeps them, so they
//! survive restarts and show up in `GET /v1/groups/{g}`); membership does not survive a
//! restart: members get `UNKNOWN_MEMBER_ID` and rejoin.
//!
//! States: `Empty` → (join) `PreparingRebalance` → (every member rejoined, or the
//! rebalance timeout passed) `CompletingRebalance` → (leader's SyncGroup) `Stable`; any
//! join, leave or expiry while not preparing starts a new `PreparingRebalance`.
//!
//! Invariants: the group lock is never held across an `.await`; a waiter (join or sync)
//! is answered exactly once (its sender is taken when answered); generation numbers only
//! grow.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Coordinator settings.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    /// How long a new group waits for more members before its first generation
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    pub initial_rebalance_delay: Duration,
    pub session_timeout_min: Duration,
    pub session_timeout_max: Duration,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            initial_rebalance_delay: Duration::from_secs(3),
            session_timeout_min: Duration::from_millis(1000),
            session_timeout_max: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// Kafka's name for the state (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup request, reduced to what the coordinator needs.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// v4+: a member without an id first gets `MEMBER_ID_REQUIRED` and its new id.
    pub require_known_member_id: bool,
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct JoinOutcome {
    pub error_code: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader only: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    fn error(code: ResponseError, member_id: &str) -> Self {
        Self {
            error_code: code.code(),
            generation: -1,
            member_id: member_id.to_string(),
            ..Self::default()
        }
    }
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    fn error(code: ResponseError) -> Self {
        Self {
            error_code: code.code(),
            ..Self::default()
        }
    }
}

/// A described member (DescribeGroups).
#[derive(Debug, Clone)]
pub struct MemberSummary {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A described group (DescribeGroups, ListGroups).
#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub name: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub generation: i32,
    pub members: Vec<MemberSummary>,
}

struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Ids handed out with `MEMBER_ID_REQUIRED`, valid until the instant given.
    pending: HashMap<String, Instant>,
    /// When the current join phase ends at the latest.
    join_deadline: Instant,
    /// The join phase of a group that had no generation yet waits for the initial delay.
    join_started: Instant,
    initial_join: bool,
}

impl Group {
    fn new(now: Instant) -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            join_deadline: now,
            join_started: now,
            initial_join: false,
        }
    }

    fn rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// Enters `PreparingRebalance`: pending SyncGroups learn that a rebalance started.
    fn prepare_rebalance(&mut self, now: Instant, options: &GroupOptions) {
        for member in self.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(SyncOutcome::error(ResponseError::RebalanceInProgress));
            }
        }
        self.initial_join = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        self.join_started = now;
        self.join_deadline = if self.initial_join {
            now + options
                .initial_rebalance_delay
                .min(self.rebalance_timeout())
        } else {
            now + self.rebalance_timeout()
        };
    }

    /// Ends the join phase if it can end: answers every waiting member.
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let timed_out = now >= self.join_deadline;
        let may_end_early = all_joined && !self.initial_join;
        if !timed_out && !may_end_early {
            return;
        }
        self.members.retain(|_, m| m.join_waiter.is_some());
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader = None;
            return;
        }
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        self.protocol_name = self.choose_protocol(&leader);
        self.leader = Some(leader.clone());
        self.state = GroupState::CompletingRebalance;
        self.initial_join = false;
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let roster: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default();
                (id.clone(), m.group_instance_id.clone(), metadata)
            })
            .collect();
        for (id, member) in self.members.iter_mut() {
            member.last_seen = now;
            member.assignment = Bytes::new();
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(JoinOutcome {
                    error_code: 0,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        roster.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    /// The protocol every member supports that the most members list first; ties go to
    /// the leader's preference.
    fn choose_protocol(&self, leader: &str) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .get(leader)?
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut best: Option<(&String, usize)> = None;
        for candidate in candidates {
            let votes = self
                .members
                .values()
                .filter(|m| {
                    m.protocols.iter().map(|(n, _)| n).find(|n| {
                        self.members
                            .values()
                            .all(|o| o.protocols.iter().any(|(x, _)| x == *n))
                    }) == Some(candidate)
                })
                .count();
            if best.is_none_or(|(_, v)| votes > v) {
                best = Some((candidate, votes));
            }
        }
        best.map(|(name, _)| name.clone())
    }

    /// Removes members and starts a rebalance (or empties the group).
    fn remove_members(&mut self, ids: &[String], now: Instant, options: &GroupOptions) {
        for id in ids {
            self.members.remove(id);
        }
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.protocol_name = None;
            self.generation = self.generation.wrapping_add(1).max(1);
        } else if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now);
        } else {
            self.prepare_rebalance(now, options);
            self.maybe_complete_join(now);
        }
    }

    fn supports(&self, request: &JoinRequest) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
            return false;
        }
        request.protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }
}

/// Every Kafka consumer group of this server.
pub struct Coordinator {
    options: GroupOptions,
    groups: Mutex<HashMap<String, Group>>,
}

/// How long a SyncGroup follower waits for its leader at most.
const SYNC_WAIT_MAX: Duration = Duration::from_secs(5 * 60);

impl Coordinator {
    pub fn new(options: GroupOptions) -> Self {
        Self {
            options,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// JoinGroup: waits for the join phase to end (or answers at once with an error).
    pub async fn join(&self, request: JoinRequest) -> JoinOutcome {
        let receiver = match self.join_register(&request) {
            Ok(receiver) => receiver,
            Err(outcome) => return *outcome,
        };
        let mut receiver = receiver;
        loop {
            let deadline = {
                let mut groups = self.groups.lock();
                match groups.get_mut(&request.group) {
                    Some(group) => {
                        let now = Instant::now();
                        group.maybe_complete_join(now);
                        // Past the deadline the phase has ended: only the answer is awaited.
                        group.join_deadline.max(now + Duration::from_millis(100))
                    }
                    None => Instant::now() + Duration::from_millis(100),
                }
            };
            let wait = tokio::time::sleep_until(deadline.into());
            tokio::select! {
                outcome = &mut receiver => {
                    return outcome.unwrap_or_else(|_| {
                        JoinOutcome::error(ResponseError::UnknownMemberId, &request.member_id)
                    });
                }
                _ = wait => {}
            }
        }
    }

    fn join_register(
        &self,
        request: &JoinRequest,
    ) -> Result<oneshot::Receiver<JoinOutcome>, Box<JoinOutcome>> {
        let options = &self.options;
        if request.session_timeout < options.session_timeout_min
            || request.session_timeout > options.session_timeout_max
        {
            return Err(Box::new(JoinOutcome::error(
                ResponseError::InvalidSessionTimeout,
                &request.member_id,
            )));
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(Box::new(JoinOutcome::error(
                ResponseError::InconsistentGroupProtocol,
                &request.member_id,
            )));
        }
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let group = groups
            .entry(request.group.clone())
            .or_insert_with(|| Group::new(now));
        let is_member = group.members.contains_key(&request.member_id);
        if !is_member && !group.supports(request) {
            return Err(Box::new(JoinOutcome::error(
                ResponseError::InconsistentGroupProtocol,
                &request.member_id,
            )));
        }
        let member_id = if request.member_id.is_empty() {
            let id = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
            if request.require_known_member_id {
                group
                    .pending
                    .insert(id.clone(), now + request.session_timeout);
                return Err(Box::new(JoinOutcome::error(
                    ResponseError::MemberIdRequired,
                    &id,
                )));
            }
            id
        } else if is_member || group.pending.remove(&request.member_id).is_some() {
            request.member_id.clone()
        } else {
            return Err(Box::new(JoinOutcome::error(
                ResponseError::UnknownMemberId,
                &request.member_id,
            )));
        };
        let (sender, receiver) = oneshot::channel();
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        let member = group.members.entry(member_id).or_insert_with(|| Member {
            group_instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            session_timeout: request.session_timeout,
            rebalance_timeout: request.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_seen: now,
            join_waiter: None,
            sync_waiter: None,
        });
        member.group_instance_id = request.group_instance_id.clone();
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.protocols = request.protocols.clone();
        member.last_seen = now;
        // A second JoinGroup from the same member replaces the first.
        if let Some(old) = member.join_waiter.replace(sender) {
            let _ = old.send(JoinOutcome::error(
                ResponseError::UnknownMemberId,
                &request.member_id,
            ));
        }
        if let Some(old) = member.sync_waiter.take() {
            let _ = old.send(SyncOutcome::error(ResponseError::RebalanceInProgress));
        }
        match group.state {
            GroupState::PreparingRebalance => {
                if group.initial_join {
                    // Each newcomer gives others another delay, within the rebalance timeout.
                    let limit = group.join_started + group.rebalance_timeout();
                    group.join_deadline = (now + options.initial_rebalance_delay).min(limit);
                }
            }
            _ => group.prepare_rebalance(now, options),
        }
        group.maybe_complete_join(now);
        Ok(receiver)
    }

    /// SyncGroup: the leader's call distributes `assignments`; followers wait for it.
    pub async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let receiver = {
            let mut groups = self.groups.lock();
            let Some(group) = groups.get_mut(group_id) else {
                return SyncOutcome::error(ResponseError::UnknownMemberId);
            };
            let Some(member) = group.members.get(member_id) else {
                return SyncOutcome::error(ResponseError::UnknownMemberId);
            };
            if generation != group.generation {
                return SyncOutcome::error(ResponseError::IllegalGeneration);
            }
            let protocol_type = group.protocol_type.clone();
            let protocol_name = group.protocol_name.clone();
            match group.state {
                GroupState::Empty => return SyncOutcome::error(ResponseError::UnknownMemberId),
                GroupState::PreparingRebalance => {
                    return SyncOutcome::error(ResponseError::RebalanceInProgress)
                }
                GroupState::Stable => {
                    return SyncOutcome {
                        error_code: 0,
                        protocol_type,
                        protocol_name,
                        assignment: member.assignment.clone(),
                    }
                }
                GroupState::CompletingRebalance => {}
            }
            let (sender, receiver) = oneshot::channel();
            let now = Instant::now();
            if let Some(member) = group.members.get_mut(member_id) {
                member.sync_waiter = Some(sender);
                member.last_seen = now;
            }
            if group.leader.as_deref() == Some(member_id) {
                let mut assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                for (id, member) in group.members.iter_mut() {
                    member.assignment = assigned.remove(id).unwrap_or_default();
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(SyncOutcome {
                            error_code: 0,
                            protocol_type: protocol_type.clone(),
                            protocol_name: protocol_name.clone(),
                            assignment: member.assignment.clone(),
                        });
                    }
                }
                group.state = GroupState::Stable;
            }
            receiver
        };
        match tokio::time::timeout(SYNC_WAIT_MAX, receiver).await {
            Ok(Ok(outcome)) => outcome,
            _ => SyncOutcome::error(ResponseError::RebalanceInProgress),
        }
    }

    /// Heartbeat: `REBALANCE_IN_PROGRESS` tells a member to rejoin.
    pub fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        let state = group.state;
        let current = group.generation;
        let Some(member) = group.members.get_mut(member_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        member.last_seen = Instant::now();
        if generation != current {
            return ResponseError::IllegalGeneration.code();
        }
        match state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            GroupState::Empty => ResponseError::UnknownMemberId.code(),
            GroupState::CompletingRebalance | GroupState::Stable => 0,
        }
    }

    /// LeaveGroup for each of `member_ids`; returns an error code per member.
    pub fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<i16> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return vec![ResponseError::UnknownMemberId.code(); member_ids.len()];
        };
        let codes: Vec<i16> = member_ids
            .iter()
            .map(|id| {
                if group.members.contains_key(id) {
                    0
                } else {
                    ResponseError::UnknownMemberId.code()
                }
            })
            .collect();
        let known: Vec<String> = member_ids
            .iter()
            .filter(|id| group.members.contains_key(*id))
            .cloned()
            .collect();
        if !known.is_empty() {
            group.remove_members(&known, Instant::now(), &self.options);
        }
        codes
    }

    /// May a commit with this member and generation go through? (Kafka's rules: a
    /// generation of -1 with no member id commits for a group without members.)
    pub fn check_commit(&self, group_id: &str, member_id: &str, generation: i32) -> i16 {
        let groups = self.groups.lock();
        let group = groups.get(group_id);
        let has_members = group.is_some_and(|g| !g.members.is_empty());
        if generation < 0 && member_id.is_empty() {
            return if has_members {
                ResponseError::IllegalGeneration.code()
            } else {
                0
            };
        }
        let Some(group) = group else {
            return ResponseError::UnknownMemberId.code();
        };
        if !group.members.contains_key(member_id) {
            return ResponseError::UnknownMemberId.code();
        }
        if generation != group.generation {
            return ResponseError::IllegalGeneration.code();
        }
        match group.state {
            GroupState::CompletingRebalance => ResponseError::RebalanceInProgress.code(),
            _ => 0,
        }
    }

    /// Expires silent members and stale pending ids, and ends overdue join phases.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.groups.lock();
        for group in groups.values_mut() {
            group.pending.retain(|_, until| *until > now);
            // Members waiting for an answer are alive; anyone else must heartbeat (or
            // rejoin, while a rebalance is prepared) within its session timeout.
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| {
                    m.sync_waiter.is_none()
                        && m.join_waiter.is_none()
                        && now.saturating_duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            if !expired.is_empty() {
                tracing::info!(members = ?expired, generation = group.generation, "kafka group members' sessions expired");
                group.remove_members(&expired, now, &self.options);
            }
            group.maybe_complete_join(now);
        }
        groups.retain(|_, g| g.state != GroupState::Empty || !g.pending.is_empty());
    }

    /// Summaries of every group with members.
    pub fn list(&self) -> Vec<GroupSummary> {
        let groups = self.groups.lock();
        groups.iter().map(|(name, g)| summarize(name, g)).collect()
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupSummary> {
        self.groups
            .lock()
            .get(group_id)
            .map(|g| summarize(group_id, g))
    }
}

fn summarize(name: &str, group: &Group) -> GroupSummary {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    GroupSummary {
        name: name.to_string(),
        state: group.state,
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        protocol_name: protocol.clone(),
        generation: group.generation,
        members: group
            .members
            .iter()
            .map(|(id, m)| MemberSummary {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, md)| md.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
