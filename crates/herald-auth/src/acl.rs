//! Access-control lists: an entry grants a principal a set of operations on the
//! resources of one kind whose names match a glob pattern.
//!
//! Invariants: evaluation is allow-only over an empty default (no entry → denied);
//! `*` in a pattern matches any run of characters (also none), every other character
//! matches itself; principal `*` means every authenticated principal.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// The name of the one `cluster` resource (ACL patterns `*` or `herald` match it).
pub const CLUSTER_RESOURCE: &str = "herald";

/// The kinds of resource an ACL entry can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// Topics (HTTP `/v1/topics/...`, Kafka topics).
    Topic,
    /// Consumer groups (HTTP `/v1/groups/...`, Kafka groups).
    Group,
    /// Event-store streams (`/v1/streams/...`; `$all` is the stream named `$all`).
    Stream,
    /// Bus subscriptions (queues, push streams, webhooks, dead letters).
    Subscription,
    /// The server as a whole: schemas, metrics, the console's global views, listings.
    Cluster,
    /// Every kind (only in ACL entries, written `*`).
    #[serde(rename = "*")]
    Any,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Topic => "topic",
            ResourceKind::Group => "group",
            ResourceKind::Stream => "stream",
            ResourceKind::Subscription => "subscription",
            ResourceKind::Cluster => "cluster",
            ResourceKind::Any => "*",
        }
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceKind {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "topic" => ResourceKind::Topic,
            "group" => ResourceKind::Group,
            "stream" => ResourceKind::Stream,
            "subscription" => ResourceKind::Subscription,
            "cluster" => ResourceKind::Cluster,
            "*" | "any" => ResourceKind::Any,
            other => {
                return Err(AuthError::BadInput(format!(
                    "unknown resource kind `{other}` (expected topic, group, stream, subscription, cluster or *)"
                )))
            }
        })
    }
}

/// What a principal wants to do to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Write events (publish, Kafka Produce, stream append, snapshot store).
    Produce,
    /// Read events and describe (fetch, SSE, Kafka Fetch/Metadata, group membership).
    Consume,
    /// Create the resource.
    Create,
    /// Delete the resource.
    Delete,
    /// Configuration and management (metadata, redrive, schemas, metrics, console).
    Admin,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Produce,
        Operation::Consume,
        Operation::Create,
        Operation::Delete,
        Operation::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Admin => "admin",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "produce" | "write" => Operation::Produce,
            "consume" | "read" => Operation::Consume,
            "create" => Operation::Create,
            "delete" => Operation::Delete,
            "admin" => Operation::Admin,
            other => {
                return Err(AuthError::BadInput(format!(
                    "unknown operation `{other}` (expected produce, consume, create, delete, admin or all)"
                )))
            }
        })
    }
}

/// Parses a comma-separated operation list; `all` stands for every operation.
pub fn parse_operations(list: &str) -> Result<BTreeSet<Operation>, AuthError> {
    let mut operations = BTreeSet::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "all" {
            operations.extend(Operation::ALL);
        } else {
            operations.insert(part.parse()?);
        }
    }
    if operations.is_empty() {
        return Err(AuthError::BadInput("no operation given".into()));
    }
    Ok(operations)
}

/// One grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    /// A user name, or `*` for every authenticated principal.
    pub principal: String,
    pub resource: ResourceKind,
    /// Glob over resource names (`orders.*`, `*`, `order-42`).
    pub pattern: String,
    pub operations: BTreeSet<Operation>,
}

impl AclEntry {
    fn applies_to(&self, principal: &str, kind: ResourceKind) -> bool {
        (self.principal == "*" || self.principal == principal)
            && (self.resource == ResourceKind::Any || self.resource == kind)
    }
}

/// The rule list, evaluated allow-only.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    entries: Vec<AclEntry>,
}

impl Acl {
    pub fn new(entries: Vec<AclEntry>) -> Self {
        Self { entries }
    }

    pub fn entries(&self) -> &[AclEntry] {
        &self.entries
    }

    /// Whether `principal` may do `operation` on the resource `kind`/`name`.
    pub fn allows(
        &self,
        principal: &str,
        kind: ResourceKind,
        name: &str,
        operation: Operation,
    ) -> bool {
        self.entries.iter().any(|e| {
            e.applies_to(principal, kind)
                && e.operations.contains(&operation)
                && glob_matches(&e.pattern, name)
        })
    }

    /// Whether `principal` may do anything at all with `kind`/`name` (Kafka's DESCRIBE:
    /// used to filter listings so a principal sees only what it has some right on).
    pub fn allows_any(&self, principal: &str, kind: ResourceKind, name: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.applies_to(principal, kind) && glob_matches(&e.pattern, name))
    }
}

/// Matches `name` against a glob where `*` is any run of characters.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Classic greedy matcher with one backtrack point: O(len(p) * len(n)) worst case.
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(c) if Some(c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(principal: &str, kind: ResourceKind, pattern: &str, ops: &str) -> AclEntry {
        AclEntry {
            principal: principal.into(),
            resource: kind,
            pattern: pattern.into(),
            operations: parse_operations(ops).unwrap(),
        }
    }

    #[test]
    fn glob_cases() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("orders.*", "orders.created"));
        assert!(glob_matches("orders.*", "orders."));
        assert!(!glob_matches("orders.*", "orders"));
        assert!(!glob_matches("orders.*", "payments.x"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("*-*", "order-42"));
        // A pattern string is itself a name the same glob covers.
        assert!(glob_matches("order-*", "order-*"));
    }

    #[test]
    fn default_is_deny_and_grants_are_exact() {
        let acl = Acl::new(vec![
            entry("alice", ResourceKind::Topic, "orders.*", "produce,consume"),
            entry("*", ResourceKind::Group, "shared-*", "consume"),
            entry("root", ResourceKind::Any, "*", "all"),
        ]);
        assert!(acl.allows(
            "alice",
            ResourceKind::Topic,
            "orders.eu",
            Operation::Produce
        ));
        assert!(!acl.allows("alice", ResourceKind::Topic, "orders.eu", Operation::Delete));
        assert!(!acl.allows("alice", ResourceKind::Topic, "payments", Operation::Consume));
        assert!(!acl.allows("bob", ResourceKind::Topic, "orders.eu", Operation::Consume));
        assert!(acl.allows("bob", ResourceKind::Group, "shared-1", Operation::Consume));
        assert!(!acl.allows("bob", ResourceKind::Stream, "shared-1", Operation::Consume));
        assert!(acl.allows("root", ResourceKind::Cluster, "", Operation::Admin));
        assert!(acl.allows_any("alice", ResourceKind::Topic, "orders.x"));
        assert!(!acl.allows_any("alice", ResourceKind::Topic, "other"));
        assert!(!Acl::default().allows("root", ResourceKind::Topic, "t", Operation::Consume));
    }

    #[test]
    fn operation_lists_parse_with_clear_errors() {
        assert_eq!(parse_operations("all").unwrap().len(), 5);
        assert!(parse_operations("").is_err());
        let err = parse_operations("produce,fly").unwrap_err().to_string();
        assert!(err.contains("`fly`"), "{err}");
    }

    fn naive(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some('*'), _) => naive(&p[1..], n) || (!n.is_empty() && naive(p, &n[1..])),
            (Some(c), Some(d)) if c == d => naive(&p[1..], &n[1..]),
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn glob_agrees_with_the_recursive_definition(p in "[ab*]{0,7}", n in "[ab]{0,9}") {
            let pc: Vec<char> = p.chars().collect();
            let nc: Vec<char> = n.chars().collect();
            prop_assert_eq!(glob_matches(&p, &n), naive(&pc, &nc));
        }
    }
}
