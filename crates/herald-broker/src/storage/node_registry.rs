//! The Kafka-protocol nodes of every gateway on one JetStream: a KV bucket
//! (`<PREFIX>_kafka_nodes`), one key per node id (`node-<id>`) holding that gateway's
//! advertised Kafka address, re-written every [`HEARTBEAT`] by its gateway. Every gateway
//! follows the bucket, derives the same live node set and from it the same owner of any key
//! (rendezvous hashing, [`owner_of`]): the coordinator of a Kafka consumer group and the
//! node a partition is reported as led by.
//!
//! Invariants: an id is claimed with a KV create (or, by a gateway restarted at the same
//! advertised address, by compare-and-set over its old key) and renewed by compare-and-set
//! on the revision its holder last wrote, so two gateways never both renew one id; another node
//! counts as live while its key's revision moved within [`NODE_TIMEOUT`] as seen by this
//! gateway (no clocks are compared across gateways); this gateway counts itself live only
//! while its own renewals succeed, so a gateway cut off from NATS stops coordinating.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::storage::kv::{load_entries, watch_entries};
use crate::storage::JetStreamBackend;

/// How often a gateway re-writes its node key.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node whose key has not been re-written for this long is dead.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// A node key is removed by JetStream this long after its last write, freeing the id.
const KEY_MAX_AGE: Duration = Duration::from_secs(60);
/// Highest node id a gateway claims.
const NODE_ID_MAX: i32 = 4096;
const KEY_PREFIX: &str = "node-";

/// One gateway's Kafka listener as clients should reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaNode {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// The node that owns `key` among `nodes` (rendezvous hashing: every gateway with the same
/// node set picks the same one, and removing a node moves only the keys it owned).
pub fn owner_of<'a>(key: &str, nodes: &'a [KafkaNode]) -> Option<&'a KafkaNode> {
    nodes.iter().max_by_key(|node| {
        let seed = u64::from(node.id.unsigned_abs());
        (
            xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), seed),
            node.id,
        )
    })
}

fn node_key(id: i32) -> String {
    format!("{KEY_PREFIX}{id}")
}

fn parse_key(key: &str) -> Option<i32> {
    key.strip_prefix(KEY_PREFIX)?.parse().ok()
}

fn unavailable(what: impl std::fmt::Display, error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("JetStream Kafka nodes: {what}: {error}"))
}

/// Another node as this gateway last saw it.
#[derive(Debug)]
struct Seen {
    node: KafkaNode,
    /// When this gateway saw its key change.
    changed: Instant,
}

#[derive(Debug)]
struct View {
    me: KafkaNode,
    /// The revision of this gateway's last write of its key.
    my_revision: u64,
    /// When this gateway's last renewal succeeded.
    renewed: Instant,
    others: BTreeMap<i32, Seen>,
}

impl View {
    fn live(&self, now: Instant) -> Vec<KafkaNode> {
        let mut live: Vec<KafkaNode> = self
            .others
            .values()
            .filter(|seen| seen.node.id != self.me.id)
            .filter(|seen| now.saturating_duration_since(seen.changed) < NODE_TIMEOUT)
            .map(|seen| seen.node.clone())
            .collect();
        if now.saturating_duration_since(self.renewed) < NODE_TIMEOUT {
            live.push(self.me.clone());
        }
        live.sort_by_key(|node| node.id);
        live
    }
}

/// This gateway's node and its view of the others. Cheap to share (`Arc`).
pub struct NodeRegistry {
    kv: kv::Store,
    view: Mutex<View>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for NodeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRegistry")
            .field("view", &*self.view.lock())
            .finish_non_exhaustive()
    }
}

impl NodeRegistry {
    /// Claims a node id for the Kafka listener at `host:port`, then renews it and follows
    /// the other nodes until [`NodeRegistry::leave`].
    pub async fn join(
        backend: &JetStreamBackend,
        host: String,
        port: u16,
    ) -> Result<Arc<Self>, BrokerError> {
        let bucket = format!("{}_kafka_nodes", backend.config().prefix);
        let kv = backend
            .key_value_expiring(
                &bucket,
                "Herald Kafka-protocol nodes: each gateway's advertised address",
                KEY_MAX_AGE,
            )
            .await?;
        let (entries, revision) = load_entries(&kv, "Kafka nodes").await?;
        let now = Instant::now();
        // A node found at start must prove itself with a renewal soon (it may be dead).
        let found = now
            .checked_sub(NODE_TIMEOUT.saturating_sub(HEARTBEAT * 2))
            .unwrap_or(now);
        let mut others = BTreeMap::new();
        let mut predecessor = None;
        for entry in entries {
            if let Some(node) = decode(&entry.key, &entry.value) {
                if node.host == host && node.port == port {
                    // The same advertised address: this gateway before a restart.
                    predecessor = Some((node.clone(), entry.revision));
                    continue;
                }
                others.insert(
                    node.id,
                    Seen {
                        node,
                        changed: found,
                    },
                );
            }
        }
        let reclaimed = match predecessor {
            Some((node, revision)) => reclaim(&kv, node, revision).await?,
            None => None,
        };
        let (me, my_revision) = match reclaimed {
            Some(claimed) => claimed,
            None => claim(&kv, &others, host, port).await?,
        };
        tracing::info!(node_id = me.id, "Kafka node id claimed");
        let registry = Arc::new(Self {
            kv,
            view: Mutex::new(View {
                me,
                my_revision,
                renewed: Instant::now(),
                others,
            }),
            tasks: Mutex::new(Vec::new()),
        });
        let renew = tokio::spawn(renew(Arc::downgrade(&registry)));
        let follow = tokio::spawn(follow(Arc::downgrade(&registry), revision));
        registry.tasks.lock().extend([renew, follow]);
        Ok(registry)
    }

    /// This gateway's node.
    pub fn me(&self) -> KafkaNode {
        self.view.lock().me.clone()
    }

    /// Every live node, this one included while its renewals succeed, sorted by id.
    pub fn live(&self) -> Vec<KafkaNode> {
        self.view.lock().live(Instant::now())
    }

    /// The live node that owns `key`; `None` when no node is live.
    pub fn owner(&self, key: &str) -> Option<KafkaNode> {
        owner_of(key, &self.live()).cloned()
    }

    /// Stops renewing and removes this node's key, so the others drop it at once.
    pub async fn leave(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        let (key, revision) = {
            let view = self.view.lock();
            (node_key(view.me.id), view.my_revision)
        };
        // Only our own write is removed (compare-and-delete): a key someone else claimed
        // since stays.
        if let Err(error) = self.kv.delete_expect_revision(&key, Some(revision)).await {
            tracing::debug!(%error, "Kafka node key not removed at leave");
        }
    }

    /// Re-writes this gateway's key; claims a new id if another gateway took this one.
    async fn renew_once(&self) {
        let (me, revision) = {
            let view = self.view.lock();
            (view.me.clone(), view.my_revision)
        };
        let value = encode(&me);
        match self.kv.update(node_key(me.id), value, revision).await {
            Ok(written) => {
                let mut view = self.view.lock();
                view.my_revision = written;
                view.renewed = Instant::now();
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(
                    node_id = me.id,
                    "Kafka node id was taken over (this gateway was silent too long); claiming another"
                );
                let others: BTreeMap<i32, Seen> = BTreeMap::new();
                match claim(&self.kv, &others, me.host.clone(), me.port).await {
                    Ok((node, written)) => {
                        let mut view = self.view.lock();
                        view.me = node;
                        view.my_revision = written;
                        view.renewed = Instant::now();
                    }
                    Err(error) => tracing::warn!(%error, "claiming a Kafka node id failed"),
                }
            }
            Err(error) => tracing::warn!(%error, "renewing the Kafka node key failed"),
        }
    }

    fn apply(&self, entry: kv::Entry) {
        let Some(id) = parse_key(&entry.key) else {
            return;
        };
        let mut view = self.view.lock();
        match entry.operation {
            Operation::Put => {
                if let Some(node) = decode(&entry.key, &entry.value) {
                    view.others.insert(
                        id,
                        Seen {
                            node,
                            changed: Instant::now(),
                        },
                    );
                } else {
                    view.others.remove(&id);
                }
            }
            Operation::Delete | Operation::Purge => {
                view.others.remove(&id);
            }
        }
    }
}

fn encode(node: &KafkaNode) -> Bytes {
    // A KafkaNode always serializes (strings and integers only).
    Bytes::from(serde_json::to_vec(node).unwrap_or_default())
}

/// The node in `value` if it parses and matches `key` (an empty value is a node leaving).
fn decode(key: &str, value: &[u8]) -> Option<KafkaNode> {
    if value.is_empty() {
        return None;
    }
    match serde_json::from_slice::<KafkaNode>(value) {
        Ok(node) if parse_key(key) == Some(node.id) => Some(node),
        _ => {
            tracing::error!(%key, "Kafka node entry does not parse; ignored");
            None
        }
    }
}

/// Takes over the id of a node with this gateway's own address (its run before a crash,
/// so clients keep the node id) once the key has gone a heartbeat and more without a
/// renewal; `None` if it is renewed (a live gateway advertising the same address: a
/// misconfiguration, logged) or another gateway wrote it meanwhile.
async fn reclaim(
    kv: &kv::Store,
    node: KafkaNode,
    revision: u64,
) -> Result<Option<(KafkaNode, u64)>, BrokerError> {
    tokio::time::sleep(HEARTBEAT + HEARTBEAT / 2).await;
    let current = kv
        .entry(node_key(node.id))
        .await
        .map_err(|e| unavailable(format_args!("reading node id {}", node.id), e))?;
    if current.is_some_and(|entry| entry.revision != revision) {
        tracing::error!(
            node_id = node.id,
            host = %node.host,
            port = node.port,
            "another live gateway advertises this Kafka address: give each gateway its own \
             --kafka-advertised-addr; taking another node id"
        );
        return Ok(None);
    }
    match kv.update(node_key(node.id), encode(&node), revision).await {
        Ok(written) => Ok(Some((node, written))),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
        Err(e) => Err(unavailable(
            format_args!("reclaiming node id {}", node.id),
            e,
        )),
    }
}

/// Creates the key of the lowest id not in `taken` that no other gateway holds.
async fn claim(
    kv: &kv::Store,
    taken: &BTreeMap<i32, Seen>,
    host: String,
    port: u16,
) -> Result<(KafkaNode, u64), BrokerError> {
    for id in 1..=NODE_ID_MAX {
        if taken.contains_key(&id) {
            continue;
        }
        let node = KafkaNode {
            id,
            host: host.clone(),
            port,
        };
        match kv.create(node_key(id), encode(&node)).await {
            Ok(revision) => return Ok((node, revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
            Err(e) => return Err(unavailable(format_args!("claiming node id {id}"), e)),
        }
    }
    Err(unavailable(
        "claiming a node id",
        format_args!("all {NODE_ID_MAX} ids are taken"),
    ))
}

async fn renew(registry: std::sync::Weak<NodeRegistry>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        registry.renew_once().await;
    }
}

async fn follow(registry: std::sync::Weak<NodeRegistry>, mut revision: u64) {
    loop {
        let Some(kv) = registry.upgrade().map(|r| r.kv.clone()) else {
            return;
        };
        match watch_entries(&kv, revision, "Kafka nodes").await {
            Ok(entries) => {
                let mut entries = std::pin::pin!(entries);
                while let Some(entry) = entries.next().await {
                    revision = revision.max(entry.revision);
                    let Some(registry) = registry.upgrade() else {
                        return;
                    };
                    registry.apply(entry);
                }
            }
            Err(error) => tracing::warn!(%error, "following the Kafka nodes failed"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i32) -> KafkaNode {
        KafkaNode {
            id,
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
        }
    }

    #[test]
    fn every_key_has_one_owner_and_removing_a_node_moves_only_its_keys() {
        let three = [node(1), node(2), node(3)];
        let two = [node(1), node(3)];
        let mut owned = BTreeMap::new();
        for i in 0..3000 {
            let key = format!("group-{i}");
            let owner = owner_of(&key, &three).expect("an owner").id;
            *owned.entry(owner).or_insert(0) += 1;
            let after = owner_of(&key, &two).expect("an owner").id;
            if owner != 2 {
                assert_eq!(after, owner, "{key} moved though its owner stayed");
            } else {
                assert_ne!(after, 2);
            }
        }
        // Spread: each of three nodes owns a fair share.
        for (id, count) in owned {
            assert!(
                (700..1300).contains(&count),
                "node {id} owns {count} of 3000"
            );
        }
        assert!(owner_of("g", &[]).is_none());
    }

    #[test]
    fn liveness_follows_renewals_and_key_changes() {
        let start = Instant::now();
        let mut view = View {
            me: node(1),
            my_revision: 1,
            renewed: start,
            others: BTreeMap::new(),
        };
        view.others.insert(
            2,
            Seen {
                node: node(2),
                changed: start,
            },
        );
        // A stale copy of our own id never counts twice.
        view.others.insert(
            1,
            Seen {
                node: node(1),
                changed: start,
            },
        );
        let ids = |v: &View, at: Instant| v.live(at).iter().map(|n| n.id).collect::<Vec<_>>();
        assert_eq!(ids(&view, start), vec![1, 2]);
        let later = start + NODE_TIMEOUT;
        assert_eq!(ids(&view, later), Vec::<i32>::new(), "neither renewed");
        view.renewed = later;
        assert_eq!(ids(&view, later), vec![1]);
    }

    #[test]
    fn keys_and_values_round_trip_and_mismatches_are_ignored() {
        assert_eq!(parse_key(&node_key(17)), Some(17));
        assert_eq!(parse_key("other"), None);
        assert_eq!(decode("node-3", &encode(&node(3))), Some(node(3)));
        assert_eq!(decode("node-4", &encode(&node(3))), None);
        assert_eq!(decode("node-3", b""), None);
        assert_eq!(decode("node-3", b"{not json"), None);
    }
}
