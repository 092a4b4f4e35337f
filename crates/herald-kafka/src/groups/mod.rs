//! Kafka consumer groups: the coordinator state machine ([`coordinator`]). The group APIs
//! that drive it live in `api/` (join_group, sync_group, heartbeat, leave_group,
//! offset_commit, offset_fetch, list_groups, describe_groups).

pub mod coordinator;
