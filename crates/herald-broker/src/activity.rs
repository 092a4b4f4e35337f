//! [`ActivityTracker`]: recent publish activity per topic and per producer (CloudEvents
//! `source`), for the web console's topology view: totals, last-seen times and rates.
//!
//! Owns only in-memory counters fed by one call on the publish path; nothing is
//! persisted (counters start at zero after a restart). Bounded memory: at most
//! [`SOURCES_PER_TOPIC_MAX`] sources per topic (later ones are counted under
//! [`OTHER_SOURCES`]), source names cut to [`SOURCE_LENGTH_MAX`] bytes, a fixed ring of
//! per-second buckets per topic and per source; topics that no longer exist are pruned
//! by [`ActivityTracker::snapshot`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;

/// Most distinct sources tracked per topic.
pub const SOURCES_PER_TOPIC_MAX: usize = 32;
/// Longest source name kept (longer ones are cut at a character boundary).
pub const SOURCE_LENGTH_MAX: usize = 256;
/// Name under which sources beyond [`SOURCES_PER_TOPIC_MAX`] are counted.
pub const OTHER_SOURCES: &str = "(other sources)";
/// Seconds of history kept per topic (the rate series).
pub const HISTORY_SECONDS: usize = 60;
/// Seconds the reported rate averages over.
pub const RATE_WINDOW_SECONDS: i64 = 5;

/// Per-second event counts in a fixed ring, indexed by second since the epoch.
#[derive(Debug, Clone)]
struct Ring<const N: usize> {
    /// `(second, count)`; a slot whose second is not the one asked for counts as 0.
    slots: [(i64, u64); N],
}

impl<const N: usize> Ring<N> {
    fn new() -> Self {
        Self {
            slots: [(i64::MIN, 0); N],
        }
    }

    fn slot_index(second: i64) -> usize {
        // rem_euclid of a positive modulus is in 0..N.
        second.rem_euclid(N as i64) as usize
    }

    fn add(&mut self, second: i64, count: u64) {
        let slot = &mut self.slots[Self::slot_index(second)];
        if slot.0 != second {
            *slot = (second, 0);
        }
        slot.1 += count;
    }

    fn get(&self, second: i64) -> u64 {
        let slot = self.slots[Self::slot_index(second)];
        if slot.0 == second {
            slot.1
        } else {
            0
        }
    }

    /// Events per second over the `window` seconds before `now_ms`, the current
    /// (partial) second included pro rata.
    fn rate(&self, now_ms: i64, window: i64) -> f64 {
        let now_second = now_ms.div_euclid(1000);
        let window = window.clamp(1, N as i64 - 1);
        let events: u64 = (0..=window).map(|back| self.get(now_second - back)).sum();
        let span_ms = window * 1000 + now_ms.rem_euclid(1000);
        if span_ms <= 0 {
            return 0.0;
        }
        events as f64 * 1000.0 / span_ms as f64
    }
}

#[derive(Debug, Clone)]
struct Counter<const N: usize> {
    total: u64,
    last_ms: i64,
    ring: Ring<N>,
}

impl<const N: usize> Counter<N> {
    fn new() -> Self {
        Self {
            total: 0,
            last_ms: 0,
            ring: Ring::new(),
        }
    }

    fn add(&mut self, now_ms: i64, count: u64) {
        self.total += count;
        self.last_ms = self.last_ms.max(now_ms);
        self.ring.add(now_ms.div_euclid(1000), count);
    }
}

/// Window of source counters: [`RATE_WINDOW_SECONDS`] plus the current second and one spare.
const SOURCE_RING: usize = RATE_WINDOW_SECONDS as usize + 2;

#[derive(Debug)]
struct TopicActivity {
    events: Counter<HISTORY_SECONDS>,
    sources: HashMap<String, Counter<SOURCE_RING>>,
}

impl TopicActivity {
    fn add_source(&mut self, source: &str, count: u64, now_ms: i64) {
        if let Some(counter) = self.sources.get_mut(source) {
            counter.add(now_ms, count);
            return;
        }
        // One slot stays free for the overflow bucket.
        let key = if self.sources.len() < SOURCES_PER_TOPIC_MAX - 1 {
            source
        } else {
            OTHER_SOURCES
        };
        self.sources
            .entry(key.to_string())
            .or_insert_with(Counter::new)
            .add(now_ms, count);
    }
}

/// Shared, cheap-to-lock activity counters. One per broker.
#[derive(Debug, Default)]
pub struct ActivityTracker {
    topics: RwLock<HashMap<String, Arc<Mutex<TopicActivity>>>>,
}

/// One producer as seen on one topic.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceActivity {
    pub source: String,
    pub events_total: u64,
    pub rate_per_second: f64,
    pub last_seen_ms: i64,
}

/// One topic's activity since the server started.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopicActivitySnapshot {
    pub events_total: u64,
    pub rate_per_second: f64,
    pub last_append_ms: Option<i64>,
    /// Events per second for each of the last [`HISTORY_SECONDS`] seconds, oldest first
    /// (the current, partial second last).
    pub history: Vec<u64>,
    /// By rate, then total, descending.
    pub sources: Vec<SourceActivity>,
}

fn cut_source(source: &str) -> &str {
    if source.len() <= SOURCE_LENGTH_MAX {
        return source;
    }
    let mut end = SOURCE_LENGTH_MAX;
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    &source[..end]
}

impl ActivityTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts events just appended to `topic`, one `source` per event. On the publish
    /// path: one map lookup per run of equal sources, no allocation for known sources.
    pub fn record_appended<'a>(
        &self,
        topic: &str,
        sources: impl IntoIterator<Item = &'a str>,
        now_ms: i64,
    ) {
        let mut sources = sources.into_iter().map(cut_source).peekable();
        if sources.peek().is_none() {
            return;
        }
        let entry = self.topics.read().get(topic).cloned();
        let entry =
            match entry {
                Some(entry) => entry,
                None => Arc::clone(self.topics.write().entry(topic.to_string()).or_insert_with(
                    || {
                        Arc::new(Mutex::new(TopicActivity {
                            events: Counter::new(),
                            sources: HashMap::new(),
                        }))
                    },
                )),
            };
        let mut activity = entry.lock();
        let mut total = 0u64;
        let mut run: Option<(&str, u64)> = None;
        for source in sources {
            total += 1;
            match &mut run {
                Some((current, n)) if *current == source => *n += 1,
                _ => {
                    if let Some((current, n)) = run.replace((source, 1)) {
                        activity.add_source(current, n, now_ms);
                    }
                }
            }
        }
        if let Some((current, n)) = run {
            activity.add_source(current, n, now_ms);
        }
        activity.events.add(now_ms, total);
    }

    /// The activity of every topic in `existing` (others are forgotten), at `now_ms`.
    pub fn snapshot(
        &self,
        existing: &[String],
        now_ms: i64,
    ) -> BTreeMap<String, TopicActivitySnapshot> {
        {
            let mut topics = self.topics.write();
            topics.retain(|name, _| existing.iter().any(|e| e == name));
        }
        let topics = self.topics.read();
        let now_second = now_ms.div_euclid(1000);
        let mut out = BTreeMap::new();
        for name in existing {
            let Some(entry) = topics.get(name) else {
                out.insert(name.clone(), TopicActivitySnapshot::idle());
                continue;
            };
            let activity = entry.lock();
            let history = (0..HISTORY_SECONDS as i64)
                .rev()
                .map(|back| activity.events.ring.get(now_second - back))
                .collect();
            let mut sources: Vec<SourceActivity> = activity
                .sources
                .iter()
                .map(|(source, counter)| SourceActivity {
                    source: source.clone(),
                    events_total: counter.total,
                    rate_per_second: counter.ring.rate(now_ms, RATE_WINDOW_SECONDS),
                    last_seen_ms: counter.last_ms,
                })
                .collect();
            sources.sort_by(|a, b| {
                b.rate_per_second
                    .total_cmp(&a.rate_per_second)
                    .then(b.events_total.cmp(&a.events_total))
                    .then(a.source.cmp(&b.source))
            });
            out.insert(
                name.clone(),
                TopicActivitySnapshot {
                    events_total: activity.events.total,
                    rate_per_second: activity.events.ring.rate(now_ms, RATE_WINDOW_SECONDS),
                    last_append_ms: Some(activity.events.last_ms),
                    history,
                    sources,
                },
            );
        }
        out
    }
}

impl TopicActivitySnapshot {
    fn idle() -> Self {
        Self {
            events_total: 0,
            rate_per_second: 0.0,
            last_append_ms: None,
            history: vec![0; HISTORY_SECONDS],
            sources: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn counts_totals_sources_and_rates() {
        let tracker = ActivityTracker::new();
        tracker.record_appended("orders", ["/shop", "/shop", "/billing"], T0);
        tracker.record_appended("orders", ["/shop"], T0 + 1000);
        let snap = tracker.snapshot(&["orders".to_string()], T0 + 1500);
        let orders = &snap["orders"];
        assert_eq!(orders.events_total, 4);
        assert_eq!(orders.last_append_ms, Some(T0 + 1000));
        assert_eq!(orders.history.len(), HISTORY_SECONDS);
        // The current (partial) second last.
        assert_eq!(orders.history[HISTORY_SECONDS - 1], 1);
        assert_eq!(orders.history[HISTORY_SECONDS - 2], 3);
        assert_eq!(orders.history[HISTORY_SECONDS - 3], 0);
        // 4 events over 5.5 s.
        assert!((orders.rate_per_second - 4.0 / 5.5).abs() < 1e-9);
        assert_eq!(orders.sources[0].source, "/shop");
        assert_eq!(orders.sources[0].events_total, 3);
        assert_eq!(orders.sources[1].source, "/billing");
    }

    #[test]
    fn rate_decays_to_zero_after_the_window() {
        let tracker = ActivityTracker::new();
        tracker.record_appended("t", ["/s"; 10], T0);
        let later = T0 + (RATE_WINDOW_SECONDS + 2) * 1000;
        let snap = tracker.snapshot(&["t".to_string()], later);
        assert_eq!(snap["t"].rate_per_second, 0.0);
        assert_eq!(snap["t"].sources[0].rate_per_second, 0.0);
        assert_eq!(snap["t"].events_total, 10);
    }

    #[test]
    fn sources_per_topic_are_capped() {
        let tracker = ActivityTracker::new();
        let names: Vec<String> = (0..100).map(|i| format!("/p/{i}")).collect();
        tracker.record_appended("t", names.iter().map(String::as_str), T0);
        let snap = tracker.snapshot(&["t".to_string()], T0);
        let sources = &snap["t"].sources;
        assert_eq!(sources.len(), SOURCES_PER_TOPIC_MAX);
        let other = sources
            .iter()
            .find(|s| s.source == OTHER_SOURCES)
            .expect("overflow bucket");
        assert_eq!(other.events_total, 100 - (SOURCES_PER_TOPIC_MAX as u64 - 1));
        let total: u64 = sources.iter().map(|s| s.events_total).sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn long_sources_are_cut_and_deleted_topics_pruned() {
        let tracker = ActivityTracker::new();
        let long = "é".repeat(SOURCE_LENGTH_MAX);
        tracker.record_appended("gone", [long.as_str()], T0);
        tracker.record_appended("kept", ["/s"], T0);
        let snap = tracker.snapshot(&["kept".to_string(), "new".to_string()], T0);
        assert!(!snap.contains_key("gone"));
        assert_eq!(snap["new"].events_total, 0);
        assert!(tracker.topics.read().get("gone").is_none());
        let cut = cut_source(&long);
        assert!(cut.len() <= SOURCE_LENGTH_MAX && cut.len() >= SOURCE_LENGTH_MAX - 1);
    }
}
