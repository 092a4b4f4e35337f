//! [`RoutingTable`]: for each (non-internal) topic, the subscriptions whose pattern
//! matches it, with their content filters in one indexed rule set per topic, so an
//! event is matched once against the index instead of rule by rule.
//!
//! A queue or webhook subscription never routes from its own dead-letter topic, even
//! when its pattern matches it (`>`), so a poison message cannot loop.
//!
//! The table is immutable; the bus builds a new one when subscriptions or topics
//! change and swaps it in (readers hold an `Arc` to the one they started with).

use std::collections::HashMap;
use std::sync::Arc;

use herald_broker::metadata::TopicMeta;
use herald_core::CloudEvent;

use crate::matching::{Filter, FilterIndex};
use crate::subscription::Subscription;

/// The subscriptions of one topic.
pub struct TopicRoutes {
    pub created_at_ms: i64,
    pub partitions: u32,
    /// Subscriptions without a content filter: every event goes to them.
    unfiltered: Vec<Arc<Subscription>>,
    filtered: HashMap<String, Arc<Subscription>>,
    index: FilterIndex<String>,
}

impl TopicRoutes {
    /// Every subscription `event` goes to (each once).
    pub fn route(&self, event: &CloudEvent) -> Vec<Arc<Subscription>> {
        let mut out = self.unfiltered.clone();
        if !self.filtered.is_empty() {
            for name in self.index.matching(event) {
                if let Some(sub) = self.filtered.get(&name) {
                    out.push(Arc::clone(sub));
                }
            }
        }
        out
    }

    /// All subscriptions of this topic.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Arc<Subscription>> {
        self.unfiltered.iter().chain(self.filtered.values())
    }
}

#[derive(Default)]
pub struct RoutingTable {
    pub topics: HashMap<String, TopicRoutes>,
}

impl RoutingTable {
    /// Builds the table for `topics` (internal ones are never matched by a pattern).
    pub fn build(topics: &[TopicMeta], subscriptions: &[Arc<Subscription>]) -> Self {
        let mut table = RoutingTable::default();
        for meta in topics {
            let mut routes = TopicRoutes {
                created_at_ms: meta.created_at_ms,
                partitions: meta.config.partitions,
                unfiltered: Vec::new(),
                filtered: HashMap::new(),
                index: FilterIndex::new(),
            };
            for sub in subscriptions {
                // A subscription never reads its own dead letters (they would loop).
                let own_dead_letters =
                    sub.target().has_queue() && sub.record.spec.dead_letter_topic() == meta.name;
                if !sub.pattern().matches(&meta.name) || own_dead_letters {
                    continue;
                }
                match sub.compile_filter() {
                    None => routes.unfiltered.push(Arc::clone(sub)),
                    Some(filter) => {
                        let filter: Filter = filter;
                        routes.index.insert(sub.name().to_string(), filter);
                        routes
                            .filtered
                            .insert(sub.name().to_string(), Arc::clone(sub));
                    }
                }
            }
            if !routes.unfiltered.is_empty() || !routes.filtered.is_empty() {
                table.topics.insert(meta.name.clone(), routes);
            }
        }
        table
    }
}
