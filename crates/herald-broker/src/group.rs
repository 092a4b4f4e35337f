//! Consumer-group state: members, partition assignment, fetch positions, committed offsets.
//!
//! Pure state (no I/O, no locks): the [`crate::Broker`] holds it under one mutex and
//! persists committed offsets. Invariants: each (topic, partition) of the group's topics
//! is assigned to exactly one member (or none, when no member subscribes to the topic);
//! every membership change bumps `generation`; a member only ever holds positions
//! for partitions assigned to it. On JetStream storage the members include those other
//! gateways serve (`gateway: Some`): they take part in the assignment, but only the
//! gateway serving a member fetches, commits or heartbeats for it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::offsets::CommittedOffsets;
use crate::record::EventRecord;

/// Where a member starts on a partition with no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    #[default]
    Earliest,
    Latest,
}

/// What a member asks for when joining.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    pub topics: Vec<String>,
    pub session_timeout: Duration,
    pub auto_offset_reset: OffsetReset,
}

impl JoinOptions {
    pub fn new(topics: Vec<String>) -> Self {
        Self {
            topics,
            session_timeout: Duration::from_secs(10),
            auto_offset_reset: OffsetReset::Earliest,
        }
    }
}

/// One partition owned by a member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Assignment {
    pub topic: String,
    pub partition: u32,
}

/// The answer to a member's fetch.
#[derive(Debug, Clone)]
pub struct MemberFetch {
    pub generation: u64,
    pub assignments: Vec<Assignment>,
    pub events: Vec<EventRecord>,
}

#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub topics: Vec<String>,
    pub assignments: Vec<Assignment>,
}

#[derive(Debug, Clone)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    pub committed: Option<u64>,
    pub end_offset: u64,
    pub lag: u64,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub name: String,
    pub generation: u64,
    pub members: Vec<MemberDescription>,
    pub offsets: Vec<PartitionLag>,
}

#[derive(Debug)]
pub(crate) struct MemberState {
    pub topics: Vec<String>,
    pub session_timeout: Duration,
    pub last_seen: Instant,
    pub reset: OffsetReset,
    pub assignments: Vec<Assignment>,
    /// Next offset to hand out, per assigned partition (set lazily on first fetch).
    pub positions: HashMap<Assignment, u64>,
    /// Where the next fetch starts in `assignments` (fairness).
    pub cursor: usize,
    /// The gateway serving this member when it is another one (JetStream storage); its
    /// `last_seen` is when this gateway last saw that gateway's heartbeat for it.
    pub gateway: Option<String>,
    /// When this gateway last announced the member to the others (JetStream storage).
    pub announced: Option<Instant>,
}

impl MemberState {
    fn new(options: JoinOptions, gateway: Option<String>, now: Instant) -> Self {
        let mut topics = options.topics;
        topics.sort();
        topics.dedup();
        Self {
            topics,
            session_timeout: options.session_timeout,
            last_seen: now,
            reset: options.auto_offset_reset,
            assignments: Vec::new(),
            positions: HashMap::new(),
            cursor: 0,
            gateway,
            announced: None,
        }
    }

    /// True if this gateway serves the member.
    pub fn is_local(&self) -> bool {
        self.gateway.is_none()
    }
}

#[derive(Debug, Default)]
pub(crate) struct GroupState {
    pub generation: u64,
    pub members: BTreeMap<String, MemberState>,
    pub committed: CommittedOffsets,
}

impl GroupState {
    pub fn with_committed(committed: CommittedOffsets) -> Self {
        Self {
            committed,
            ..Self::default()
        }
    }

    /// Adds a member and rebalances. `partition_counts` maps each topic to its partition count.
    pub fn join(
        &mut self,
        member_id: String,
        options: JoinOptions,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
    ) {
        self.members
            .insert(member_id, MemberState::new(options, None, now));
        self.rebalance(partition_counts);
    }

    /// Records a member another gateway serves (an announcement or its heartbeat):
    /// refreshes its session, and rebalances if it is new or changed its topics.
    pub fn join_remote(
        &mut self,
        member_id: String,
        options: JoinOptions,
        gateway: String,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
    ) {
        let incoming = MemberState::new(options, Some(gateway), now);
        match self.members.get_mut(&member_id) {
            // A member this gateway serves keeps being served here.
            Some(existing) if existing.is_local() => {}
            Some(existing) if existing.topics == incoming.topics => {
                existing.last_seen = now;
                existing.session_timeout = incoming.session_timeout;
            }
            _ => {
                self.members.insert(member_id, incoming);
                self.rebalance(partition_counts);
            }
        }
    }

    /// Removes a member another gateway serves; false if there is none by that id.
    pub fn remove_remote(
        &mut self,
        member_id: &str,
        partition_counts: &BTreeMap<String, u32>,
    ) -> bool {
        if self.members.get(member_id).is_some_and(|m| !m.is_local()) {
            self.members.remove(member_id);
            self.rebalance(partition_counts);
            return true;
        }
        false
    }

    /// The member `member_id`, with its session refreshed (any call counts as a heartbeat).
    pub fn touch_member(
        &mut self,
        group: &str,
        member_id: &str,
    ) -> Result<&mut MemberState, crate::BrokerError> {
        // A member another gateway serves is not found here: its client must talk to
        // that gateway, or join again here.
        let member = self
            .members
            .get_mut(member_id)
            .filter(|m| m.is_local())
            .ok_or_else(|| crate::BrokerError::MemberNotFound {
                group: group.into(),
                member: member_id.into(),
            })?;
        member.last_seen = Instant::now();
        Ok(member)
    }

    /// Removes a member this gateway serves; rebalances if it was there.
    pub fn leave(&mut self, member_id: &str, partition_counts: &BTreeMap<String, u32>) -> bool {
        if !self.members.get(member_id).is_some_and(|m| m.is_local()) {
            return false;
        }
        self.members.remove(member_id);
        self.rebalance(partition_counts);
        true
    }

    /// Removes members whose session expired; returns their ids.
    pub fn expire(
        &mut self,
        now: Instant,
        partition_counts: &BTreeMap<String, u32>,
    ) -> Vec<String> {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.saturating_duration_since(m.last_seen) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
        }
        if !expired.is_empty() {
            self.rebalance(partition_counts);
        }
        expired
    }

    /// All topics any member subscribes to.
    pub fn subscribed_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }

    /// Recomputes assignments: per topic, partition p goes to the (p mod n)-th subscribed
    /// member in id order. Positions of partitions a member keeps are kept.
    pub fn rebalance(&mut self, partition_counts: &BTreeMap<String, u32>) {
        self.generation += 1;
        let mut new_assignments: BTreeMap<String, Vec<Assignment>> = self
            .members
            .keys()
            .map(|id| (id.clone(), Vec::new()))
            .collect();
        for topic in self.subscribed_topics() {
            let subscribers: Vec<&String> = self
                .members
                .iter()
                .filter(|(_, m)| m.topics.contains(&topic))
                .map(|(id, _)| id)
                .collect();
            let count = partition_counts.get(&topic).copied().unwrap_or(0);
            if subscribers.is_empty() {
                continue;
            }
            for partition in 0..count {
                let owner = subscribers[partition as usize % subscribers.len()];
                if let Some(list) = new_assignments.get_mut(owner) {
                    list.push(Assignment {
                        topic: topic.clone(),
                        partition,
                    });
                }
            }
        }
        for (id, member) in self.members.iter_mut() {
            let assignments = new_assignments.remove(id).unwrap_or_default();
            member.positions.retain(|a, _| assignments.contains(a));
            member.assignments = assignments;
            member.cursor = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> BTreeMap<String, u32> {
        BTreeMap::from([("orders".to_string(), 6), ("audit".to_string(), 1)])
    }

    fn owners(state: &GroupState) -> Vec<Assignment> {
        let mut all: Vec<Assignment> = state
            .members
            .values()
            .flat_map(|m| m.assignments.clone())
            .collect();
        all.sort();
        all
    }

    #[test]
    fn every_partition_has_exactly_one_owner() {
        let mut g = GroupState::default();
        let now = Instant::now();
        for id in ["a", "b", "c"] {
            g.join(
                id.into(),
                JoinOptions::new(vec!["orders".into()]),
                now,
                &counts(),
            );
        }
        assert_eq!(g.generation, 3);
        let all = owners(&g);
        assert_eq!(all.len(), 6);
        for m in g.members.values() {
            assert_eq!(m.assignments.len(), 2);
        }
        g.leave("b", &counts());
        assert_eq!(owners(&g).len(), 6);
        assert_eq!(g.members["a"].assignments.len(), 3);
    }

    #[test]
    fn expired_members_lose_their_partitions() {
        let mut g = GroupState::default();
        let now = Instant::now();
        let mut short = JoinOptions::new(vec!["orders".into()]);
        short.session_timeout = Duration::from_millis(10);
        g.join("a".into(), short, now, &counts());
        g.join(
            "b".into(),
            JoinOptions::new(vec!["orders".into()]),
            now,
            &counts(),
        );
        let expired = g.expire(now + Duration::from_millis(50), &counts());
        assert_eq!(expired, vec!["a".to_string()]);
        assert_eq!(g.members["b"].assignments.len(), 6);
    }

    #[test]
    fn kept_partitions_keep_positions() {
        let mut g = GroupState::default();
        let now = Instant::now();
        g.join(
            "a".into(),
            JoinOptions::new(vec!["orders".into()]),
            now,
            &counts(),
        );
        let first = g.members["a"].assignments[0].clone();
        g.members
            .get_mut("a")
            .expect("a")
            .positions
            .insert(first.clone(), 9);
        g.join(
            "b".into(),
            JoinOptions::new(vec!["audit".into()]),
            now,
            &counts(),
        );
        assert_eq!(g.members["a"].positions.get(&first), Some(&9));
    }

    #[test]
    fn gateways_that_see_the_same_members_assign_alike() {
        let now = Instant::now();
        let orders = || JoinOptions::new(vec!["orders".into()]);
        let (mut one, mut two) = (GroupState::default(), GroupState::default());
        one.join("g-a".into(), orders(), now, &counts());
        two.join_remote("g-a".into(), orders(), "gw1".into(), now, &counts());
        two.join("g-b".into(), orders(), now, &counts());
        one.join_remote("g-b".into(), orders(), "gw2".into(), now, &counts());
        for id in ["g-a", "g-b"] {
            assert_eq!(one.members[id].assignments, two.members[id].assignments);
            assert_eq!(one.members[id].assignments.len(), 3);
        }
        // A heartbeat of a known member does not rebalance.
        let generation = one.generation;
        one.join_remote("g-b".into(), orders(), "gw2".into(), now, &counts());
        assert_eq!(one.generation, generation);
        // Only the serving gateway fetches, commits or removes for a member.
        assert!(one.touch_member("g", "g-b").is_err());
        assert!(!one.leave("g-b", &counts()));
        assert!(!two.remove_remote("g-b", &counts()));
        // Gateway 1 died: gateway 2 drops its member and owns every partition.
        assert!(two.remove_remote("g-a", &counts()));
        assert_eq!(two.members["g-b"].assignments.len(), 6);
    }
}
