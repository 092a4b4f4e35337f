//! [`Subscription`]: one live subscription: its stored record, compiled pattern, its
//! queue (queue / webhook targets) or stream hub (stream targets), the dispatcher's
//! copy positions into it, and its counters.
//!
//! Invariant (no duplicates in queues): `last_copied[(topic, partition)]` is the
//! highest source offset of that partition already appended to this subscription's
//! target; the dispatcher never appends a source offset at or below it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::matching::{Filter, TopicPattern};
use crate::queue::Queue;
use crate::spec::Target;
use crate::store::SubscriptionRecord;
use crate::stream::StreamHub;
use crate::webhook::WebhookStats;

#[derive(Default)]
pub struct Counters {
    /// Events routed to this subscription.
    pub matched: AtomicU64,
    /// Routing failures (e.g. the forward target topic does not exist).
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

pub struct Subscription {
    pub record: SubscriptionRecord,
    pattern: TopicPattern,
    pub queue: Option<Arc<Queue>>,
    pub streams: Option<Arc<StreamHub>>,
    pub webhook: Option<Arc<WebhookStats>>,
    pub counters: Counters,
    last_copied: Mutex<HashMap<(String, u32), u64>>,
    /// Stops this subscription's background tasks.
    pub stop: tokio::sync::watch::Sender<bool>,
}

impl Subscription {
    pub fn new(
        record: SubscriptionRecord,
        pattern: TopicPattern,
        queue: Option<Arc<Queue>>,
        last_copied: HashMap<(String, u32), u64>,
    ) -> Self {
        let streams = match &record.spec.target {
            Target::Stream(s) => Some(Arc::new(StreamHub::new(s.clone()))),
            _ => None,
        };
        let webhook = matches!(record.spec.target, Target::Webhook(_))
            .then(|| Arc::new(WebhookStats::default()));
        Self {
            record,
            pattern,
            queue,
            streams,
            webhook,
            counters: Counters::default(),
            last_copied: Mutex::new(last_copied),
            stop: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn name(&self) -> &str {
        &self.record.spec.name
    }

    pub fn pattern(&self) -> &TopicPattern {
        &self.pattern
    }

    pub fn target(&self) -> &Target {
        &self.record.spec.target
    }

    /// A fresh compiled filter (one per topic index); `None` matches everything.
    /// The spec's filter compiled when the subscription was created, so this cannot
    /// fail; should it, the subscription matches nothing rather than everything.
    pub fn compile_filter(&self) -> Option<Filter> {
        let spec = self.record.spec.filter.as_ref().filter(|f| !f.is_null())?;
        match Filter::compile(spec) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::error!(subscription = self.name(), error = %e, "stored filter no longer compiles; matching nothing");
                Filter::compile(&json!({"id": [{"prefix": "\u{0}never"}]})).ok()
            }
        }
    }

    /// Whether the dispatcher should copy source `offset` here.
    pub fn should_copy(
        &self,
        topic: &str,
        created_at_ms: i64,
        partition: u32,
        offset: u64,
    ) -> bool {
        if offset < self.record.start_offset(topic, created_at_ms, partition) {
            return false;
        }
        match self.last_copied.lock().get(&(topic.to_string(), partition)) {
            Some(&last) => offset > last,
            None => true,
        }
    }

    /// Records that every source offset up to `offset` was copied.
    pub fn copied(&self, topic: &str, partition: u32, offset: u64) {
        let mut map = self.last_copied.lock();
        let entry = map.entry((topic.to_string(), partition)).or_insert(offset);
        *entry = (*entry).max(offset);
    }

    pub fn record_error(&self, message: String) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        *self.counters.last_error.lock() = Some(message);
    }

    /// The JSON description: the spec (secret redacted), creation time and stats.
    pub fn describe(&self) -> Value {
        let mut stats = json!({
            "matched": self.counters.matched.load(Ordering::Relaxed),
            "errors": self.counters.errors.load(Ordering::Relaxed),
            "last_error": *self.counters.last_error.lock(),
        });
        if let Some(queue) = &self.queue {
            let counts = queue.counts();
            stats["queue"] = json!({
                "topic": queue.config().topic,
                "end_offset": queue.log().next_offset(),
                "backlog": queue.backlog(),
                "ack_floor": counts.ack_floor,
                "ready": counts.ready,
                "delayed": counts.delayed,
                "in_flight": counts.leased,
                "dead_letter_pending": counts.dead_pending,
            });
        }
        if let Some(streams) = &self.streams {
            stats["stream"] = serde_json::to_value(streams.counts()).unwrap_or(Value::Null);
        }
        if let Some(webhook) = &self.webhook {
            stats["webhook"] = webhook.to_json();
        }
        let mut out = self.record.spec.redacted();
        out["dead_letter_topic"] = if self.target().has_queue() {
            json!(self.record.spec.dead_letter_topic())
        } else {
            Value::Null
        };
        out["created_at"] = json!(herald_broker::record::format_time_ms(
            self.record.created_at_ms
        ));
        out["stats"] = stats;
        out
    }
}
