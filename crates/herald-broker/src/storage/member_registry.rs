//! Consumer-group membership shared by every gateway on one JetStream: a KV bucket
//! (`<PREFIX>_members`), one key per member (`<group>.<member>`), written by the gateway
//! that serves the member and re-written as its heartbeat. Every gateway applies the same
//! member set, so the deterministic assignment in `group.rs` gives each partition one owner
//! across all gateways. Invariant: a gateway ignores puts carrying its own gateway id (it
//! already holds those members); keys are `escape_key(group).escape_key(member)`.

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::group::OffsetReset;
use crate::storage::kv::{escape_key, load_entries, unescape_key, watch_entries};
use crate::storage::JetStreamBackend;

/// What one gateway tells the others about a member it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAnnouncement {
    pub group: String,
    pub member: String,
    /// The gateway serving the member.
    pub gateway: String,
    pub topics: Vec<String>,
    pub session_timeout_ms: u64,
    /// Where the member starts without a committed offset.
    pub earliest: bool,
    /// The announcing gateway's wall clock (ms since the epoch): lets a starting gateway
    /// drop entries whose gateway died long ago.
    pub announced_ms: i64,
}

impl MemberAnnouncement {
    pub fn reset(&self) -> OffsetReset {
        if self.earliest {
            OffsetReset::Earliest
        } else {
            OffsetReset::Latest
        }
    }
}

/// A change seen in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Another gateway announced (or heartbeated) a member.
    Announced(MemberAnnouncement),
    /// A member's key was removed (it left, or its session expired somewhere).
    Withdrawn { group: String, member: String },
}

#[derive(Clone)]
pub struct MemberRegistry {
    kv: kv::Store,
    gateway: String,
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("JetStream group members: {what}: {error}"))
}

fn member_key(group: &str, member: &str) -> String {
    format!("{}.{}", escape_key(group), escape_key(member))
}

/// `(group, member)` of a key; `None` for a key this registry never writes.
fn parse_key(key: &str) -> Option<(String, String)> {
    let (group, member) = key.split_once('.')?;
    (!group.is_empty() && !member.is_empty() && !member.contains('.'))
        .then(|| (unescape_key(group), unescape_key(member)))
}

/// The announcement in `value` if it parses and matches `key`.
fn decode(key: &str, value: &[u8]) -> Option<MemberAnnouncement> {
    match serde_json::from_slice::<MemberAnnouncement>(value) {
        Ok(a) if member_key(&a.group, &a.member) == key => Some(a),
        _ => {
            tracing::error!(%key, "group member entry does not parse; ignored");
            None
        }
    }
}

impl MemberRegistry {
    /// Opens (creating) the bucket for the gateway `gateway`.
    pub async fn open(backend: &JetStreamBackend, gateway: String) -> Result<Self, BrokerError> {
        let bucket = format!("{}_members", backend.config().prefix);
        let kv = backend
            .key_value(&bucket, "Herald consumer-group members")
            .await?;
        Ok(Self { kv, gateway })
    }

    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Every announced member (of every gateway, this one included), and the revision to
    /// follow changes from (exclusive).
    pub async fn load_all(&self) -> Result<(Vec<MemberAnnouncement>, u64), BrokerError> {
        let (entries, revision) = load_entries(&self.kv, "group members").await?;
        let members = entries
            .iter()
            .filter_map(|e| decode(&e.key, &e.value))
            .collect();
        Ok((members, revision))
    }

    /// Writes (or refreshes) a member this gateway serves.
    pub async fn announce(&self, announcement: &MemberAnnouncement) -> Result<(), BrokerError> {
        let value = serde_json::to_vec(announcement).map_err(|e| unavailable("encoding", e))?;
        let key = member_key(&announcement.group, &announcement.member);
        self.kv
            .put(key, Bytes::from(value))
            .await
            .map_err(|e| unavailable(format_args!("announcing {}", announcement.member), e))?;
        Ok(())
    }

    /// Removes a member's key (it left, or its session expired).
    pub async fn withdraw(&self, group: &str, member: &str) -> Result<(), BrokerError> {
        self.kv
            .delete(member_key(group, member))
            .await
            .map_err(|e| unavailable(format_args!("withdrawing {member}"), e))
    }

    /// Changes after `revision` made by other gateways (this gateway's own announcements
    /// are skipped; withdrawals are reported whoever made them).
    pub async fn watch(
        &self,
        revision: u64,
    ) -> Result<impl futures::Stream<Item = (u64, MemberChange)> + Send + 'static, BrokerError>
    {
        let watch = watch_entries(&self.kv, revision, "group members").await?;
        let own = self.gateway.clone();
        Ok(watch.filter_map(move |entry| {
            let own = own.clone();
            async move {
                let change = match entry.operation {
                    Operation::Delete | Operation::Purge => {
                        let (group, member) = parse_key(&entry.key)?;
                        MemberChange::Withdrawn { group, member }
                    }
                    Operation::Put => {
                        let announcement = decode(&entry.key, &entry.value)?;
                        if announcement.gateway == own {
                            return None;
                        }
                        MemberChange::Announced(announcement)
                    }
                };
                Some((entry.revision, change))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_group_and_member() {
        let key = member_key("billing.eu", "billing.eu-abc");
        assert_eq!(key.matches('.').count(), 1, "{key}");
        assert_eq!(
            parse_key(&key),
            Some(("billing.eu".to_string(), "billing.eu-abc".to_string()))
        );
        assert_eq!(parse_key("nodot"), None);
        assert_eq!(parse_key("a.b.c"), None);
    }

    #[test]
    fn an_entry_under_another_key_is_rejected() {
        let a = MemberAnnouncement {
            group: "g".into(),
            member: "g-1".into(),
            gateway: "gw".into(),
            topics: vec!["t".into()],
            session_timeout_ms: 1000,
            earliest: true,
            announced_ms: 0,
        };
        let value = serde_json::to_vec(&a).expect("encode");
        assert_eq!(decode("g.g-1", &value), Some(a));
        assert_eq!(decode("g.g-2", &value), None);
        assert_eq!(decode("g.g-1", b"{not json"), None);
    }
}
