//! `/v1/console/...`: read-only JSON views the web console needs beyond the public API
//! (topology with rates, filtered event browsing, event chains by correlation id).
//!
//! Owns no state: everything is read from the broker, its activity tracker and the bus.
//! Invariants: every scan is bounded (events scanned per partition and per request, events
//! returned); a scan that stopped at a bound says so (`truncated` / `exhausted: false`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::Json;
use herald_broker::record::format_time_ms;
use herald_broker::{Broker, EventRecord, SeekPosition};
use herald_bus::matching::{Filter, TopicPattern, INTERNAL_TOPIC_PREFIX};
use herald_bus::queue::{ext, SourcePosition};
use herald_bus::spec::QUEUE_TOPIC_PREFIX;
use herald_core::ExtensionValue;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::params::{opt_u32, opt_u64, parse_time, seek, QueryMap};
use crate::AppState;

/// Default matching events one browse page returns.
pub const BROWSE_DEFAULT_MAX: usize = 50;
/// Most matching events one browse page returns.
pub const BROWSE_MAX: usize = 500;
/// Default and largest number of events one browse request reads.
pub const BROWSE_SCAN_DEFAULT: u64 = 10_000;
pub const BROWSE_SCAN_MAX: u64 = 100_000;
/// Default and largest number of events a chain lookup reads per partition.
pub const CHAIN_SCAN_PER_PARTITION_DEFAULT: u64 = 10_000;
pub const CHAIN_SCAN_PER_PARTITION_MAX: u64 = 100_000;
/// Most events a chain lookup reads in total, over every partition.
pub const CHAIN_SCAN_TOTAL_MAX: u64 = 1_000_000;
/// Most events of one chain returned.
pub const CHAIN_EVENTS_MAX: usize = 1000;
/// Events read per log read during scans.
const SCAN_CHUNK: usize = 1000;
/// Longest accepted correlation id.
const CORRELATION_ID_LENGTH_MAX: usize = 1024;

// ---- topology ----

/// `GET /v1/console/topology`: topics with partitions, rates and producers (by
/// `source`), subscriptions with the topics they match, consumer groups with lag.
pub async fn topology(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let broker = &state.broker;
    let mut metas = broker.list_topics();
    metas.retain(|m| !m.name.starts_with(INTERNAL_TOPIC_PREFIX));
    let names: Vec<String> = metas.iter().map(|m| m.name.clone()).collect();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let activity = broker.activity().snapshot(&all_topic_names(broker), now_ms);
    let mut topics = Vec::with_capacity(metas.len());
    for meta in &metas {
        let Ok(stats) = broker.topic_stats(&meta.name) else {
            continue; // deleted meanwhile
        };
        let partitions: Vec<Value> = stats
            .iter()
            .map(|p| {
                json!({"partition": p.partition, "start_offset": p.start_offset,
                       "end_offset": p.end_offset, "size_bytes": p.size_bytes})
            })
            .collect();
        let mut topic = json!({
            "name": meta.name,
            "partitions": partitions,
            "events_stored": stats.iter().map(|p| p.end_offset - p.start_offset).sum::<u64>(),
            "size_bytes": stats.iter().map(|p| p.size_bytes).sum::<u64>(),
            "created_at": format_time_ms(meta.created_at_ms),
        });
        if let Some(a) = activity.get(&meta.name) {
            topic["activity"] = activity_json(a);
        }
        topics.push(topic);
    }
    let subscriptions = match &state.bus {
        Some(bus) => bus
            .list_subscriptions()
            .into_iter()
            .map(|s| subscription_with_topics(s, &names, broker))
            .collect(),
        None => Vec::new(),
    };
    let groups: Vec<Value> = broker
        .list_groups()
        .into_iter()
        .filter_map(|g| broker.describe_group(&g).ok())
        .map(|g| crate::groups::description_json(&g))
        .collect();
    Ok(Json(json!({
        "generated_at": format_time_ms(now_ms),
        "bus": state.bus.is_some(),
        "topics": topics,
        "subscriptions": subscriptions,
        "groups": groups,
    })))
}

fn all_topic_names(broker: &Broker) -> Vec<String> {
    broker.list_topics().into_iter().map(|m| m.name).collect()
}

fn activity_json(a: &herald_broker::activity::TopicActivitySnapshot) -> Value {
    let sources: Vec<Value> = a
        .sources
        .iter()
        .map(|s| {
            json!({"source": s.source, "events_total": s.events_total,
                   "rate_per_second": s.rate_per_second,
                   "last_seen": format_time_ms(s.last_seen_ms)})
        })
        .collect();
    json!({
        "events_total": a.events_total,
        "rate_per_second": a.rate_per_second,
        "last_append": a.last_append_ms.map(format_time_ms),
        "history": a.history,
        "sources": sources,
    })
}

/// Adds `matched_topics` (existing topics the pattern matches) and `dead_letter_depth`.
fn subscription_with_topics(mut sub: Value, topics: &[String], broker: &Broker) -> Value {
    let matched: Vec<&String> = match sub["topic"].as_str().map(TopicPattern::parse) {
        Some(Ok(pattern)) => topics.iter().filter(|t| pattern.matches(t)).collect(),
        _ => Vec::new(),
    };
    sub["matched_topics"] = json!(matched);
    if let Some(dlq) = sub["dead_letter_topic"].as_str() {
        let depth = broker
            .topic_stats(dlq)
            .map(|s| s.iter().map(|p| p.end_offset - p.start_offset).sum::<u64>())
            .ok();
        sub["dead_letter_depth"] = json!(depth);
    }
    sub
}

// ---- browse ----

/// `GET /v1/console/topics/{topic}/events?partition=&offset=|from_time=&max=&filter=&scan_max=`:
/// one page of a partition's events from a position, keeping those the filter pattern
/// (JSON, the subscription filter language) matches. Reads at most `scan_max` events.
pub async fn browse(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    let partition = opt_u32(&query, "partition")?.unwrap_or(0);
    let max = opt_u64(&query, "max")?.map_or(BROWSE_DEFAULT_MAX, |m| m as usize);
    if max == 0 || max > BROWSE_MAX {
        return Err(ApiError::invalid(
            "max",
            format!("must be between 1 and {BROWSE_MAX}"),
        ));
    }
    let scan_max = opt_u64(&query, "scan_max")?.unwrap_or(BROWSE_SCAN_DEFAULT);
    if scan_max == 0 || scan_max > BROWSE_SCAN_MAX {
        return Err(ApiError::invalid(
            "scan_max",
            format!("must be between 1 and {BROWSE_SCAN_MAX}"),
        ));
    }
    let filter = compile_filter(query.get("filter"))?;
    let position = seek(&query, SeekPosition::Earliest)?;
    let broker = &state.broker;
    let topic_handle = broker.topic(&topic)?;
    let log = topic_handle.partition(partition)?.clone();
    let from = Broker::resolve_position(&log, position)
        .await?
        .max(log.start_offset());
    let end = log.next_offset();
    let mut events = Vec::new();
    let mut offset = from.min(end);
    let mut scanned = 0u64;
    while offset < end && scanned < scan_max && events.len() < max {
        let chunk = (scan_max - scanned).min(SCAN_CHUNK as u64) as usize;
        let page = broker
            .fetch(
                &topic,
                partition,
                SeekPosition::Offset(offset),
                chunk,
                Duration::ZERO,
            )
            .await?;
        if page.events.is_empty() {
            break;
        }
        for record in &page.events {
            offset = record.offset + 1;
            scanned += 1;
            if filter.as_ref().is_none_or(|f| f.matches(&record.event)) {
                events.push(record.to_json());
                if events.len() == max {
                    break;
                }
            }
        }
    }
    Ok(Json(json!({
        "topic": topic,
        "partition": partition,
        "from_offset": from,
        "next_offset": offset,
        "start_offset": log.start_offset(),
        "end_offset": end,
        "scanned": scanned,
        "exhausted": offset >= end,
        "events": events,
    })))
}

fn compile_filter(text: Option<&String>) -> Result<Option<Filter>, ApiError> {
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let pattern: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid("filter", format!("is not valid JSON: {e}")))?;
    Filter::compile(&pattern).map(Some).map_err(|e| {
        let field = match e.path() {
            "" => "filter".to_string(),
            path => format!("filter.{path}"),
        };
        ApiError::invalid(field, e.to_string())
    })
}

// ---- chain ----

/// One event of a chain with what is known of its deliveries.
struct ChainEvent {
    record: EventRecord,
    routed_to: Vec<String>,
    queued: Vec<Value>,
    dead_letters: Vec<Value>,
}

/// `GET /v1/console/chains/{correlation_id}?scan_max=&since=`: every event whose
/// `correlationid` is the given one, found by a bounded scan of the newest events of
/// every partition (user topics, subscription queues, dead-letter topics), with the
/// subscriptions each event was routed to, its queued copies and its dead letters.
pub async fn chain(
    State(state): State<AppState>,
    Path(correlation_id): Path<String>,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    if correlation_id.is_empty() || correlation_id.len() > CORRELATION_ID_LENGTH_MAX {
        return Err(ApiError::invalid(
            "correlation_id",
            format!("must be 1 to {CORRELATION_ID_LENGTH_MAX} bytes"),
        ));
    }
    let per_partition = opt_u64(&query, "scan_max")?.unwrap_or(CHAIN_SCAN_PER_PARTITION_DEFAULT);
    if per_partition == 0 || per_partition > CHAIN_SCAN_PER_PARTITION_MAX {
        return Err(ApiError::invalid(
            "scan_max",
            format!("must be between 1 and {CHAIN_SCAN_PER_PARTITION_MAX}"),
        ));
    }
    let since_ms = query
        .get("since")
        .map(|t| parse_time("since", t))
        .transpose()?;
    let scan = ChainScan::run(&state.broker, &correlation_id, per_partition, since_ms).await?;
    let subscriptions = state
        .bus
        .as_ref()
        .map(|b| b.list_subscriptions())
        .unwrap_or_default();
    Ok(Json(scan.into_json(&correlation_id, &subscriptions)))
}

#[derive(Default)]
struct ChainScan {
    events: Vec<EventRecord>,
    /// Copies in subscription queues: (subscription, queue offset, source position).
    queued: Vec<(String, u64, SourcePosition)>,
    dead_letters: Vec<EventRecord>,
    scanned: u64,
    truncated: bool,
}

impl ChainScan {
    async fn run(
        broker: &Broker,
        correlation_id: &str,
        per_partition: u64,
        since_ms: Option<i64>,
    ) -> Result<ChainScan, ApiError> {
        let mut scan = ChainScan::default();
        for name in all_topic_names(broker) {
            let is_queue = name.starts_with(QUEUE_TOPIC_PREFIX);
            if name.starts_with(INTERNAL_TOPIC_PREFIX) && !is_queue {
                continue;
            }
            let Ok(topic) = broker.topic(&name) else {
                continue;
            };
            for (p, log) in topic.partitions().iter().enumerate() {
                let end = log.next_offset();
                let mut from = end.saturating_sub(per_partition).max(log.start_offset());
                if let Some(ms) = since_ms {
                    let at = log.offset_for_timestamp(ms).await.unwrap_or(end);
                    if at < from {
                        scan.truncated = true;
                    }
                    from = from.max(at);
                } else if from > log.start_offset() {
                    scan.truncated = true;
                }
                let budget = CHAIN_SCAN_TOTAL_MAX.saturating_sub(scan.scanned);
                if end - from > budget {
                    scan.truncated = true;
                    from = end - budget;
                }
                scan.read_partition(broker, &name, p as u32, from, end, correlation_id)
                    .await?;
            }
        }
        Ok(scan)
    }

    async fn read_partition(
        &mut self,
        broker: &Broker,
        topic: &str,
        partition: u32,
        mut offset: u64,
        end: u64,
        correlation_id: &str,
    ) -> Result<(), ApiError> {
        while offset < end {
            let chunk = (end - offset).min(SCAN_CHUNK as u64) as usize;
            let position = SeekPosition::Offset(offset);
            let page = match broker
                .fetch(topic, partition, position, chunk, Duration::ZERO)
                .await
            {
                Ok(page) => page,
                // Trimmed or deleted meanwhile: what was read stays valid.
                Err(herald_broker::BrokerError::OffsetOutOfRange { .. })
                | Err(herald_broker::BrokerError::TopicNotFound(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if page.events.is_empty() {
                return Ok(());
            }
            for record in page.events {
                offset = record.offset + 1;
                self.scanned += 1;
                if record.event.correlation_id() == Some(correlation_id) {
                    self.keep(record);
                }
            }
        }
        Ok(())
    }

    fn keep(&mut self, record: EventRecord) {
        if let Some(name) = record.topic.strip_prefix(QUEUE_TOPIC_PREFIX) {
            if let Some(source) = record.key.as_deref().and_then(SourcePosition::parse) {
                self.queued.push((name.to_string(), record.offset, source));
            }
        } else if record.event.extensions.contains_key(ext::REASON)
            && record.event.extensions.contains_key(ext::SUBSCRIPTION)
        {
            self.dead_letters.push(record);
        } else if self.events.len() < CHAIN_EVENTS_MAX {
            self.events.push(record);
        } else {
            self.truncated = true;
        }
    }

    fn into_json(self, correlation_id: &str, subscriptions: &[Value]) -> Value {
        let routes = compiled_routes(subscriptions);
        let mut chain: Vec<ChainEvent> = self
            .events
            .into_iter()
            .map(|record| ChainEvent {
                routed_to: routes
                    .iter()
                    .filter(|(_, pattern, filter)| {
                        pattern.matches(&record.topic)
                            && filter.as_ref().is_none_or(|f| f.matches(&record.event))
                    })
                    .map(|(name, _, _)| name.clone())
                    .collect(),
                record,
                queued: Vec::new(),
                dead_letters: Vec::new(),
            })
            .collect();
        let index: HashMap<(String, u32, u64), usize> = chain
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    (e.record.topic.clone(), e.record.partition, e.record.offset),
                    i,
                )
            })
            .collect();
        let ack_floors = ack_floors(subscriptions);
        for (subscription, queue_offset, source) in self.queued {
            let Some(&i) = index.get(&(source.topic, source.partition, source.offset)) else {
                continue;
            };
            let done = ack_floors
                .get(&subscription)
                .is_some_and(|floor| queue_offset < *floor);
            chain[i].queued.push(json!({
                "subscription": subscription,
                "queue_offset": queue_offset,
                "status": if done { "done" } else { "pending" },
            }));
        }
        let mut orphans = Vec::new();
        for record in self.dead_letters {
            let info = dead_letter_info(&record);
            let source = dead_letter_source(&record);
            match source.and_then(|s| index.get(&s)) {
                Some(&i) => chain[i].dead_letters.push(info),
                None => orphans.push(info),
            }
        }
        chain.sort_by_key(|e| {
            (
                e.record.timestamp_ms,
                e.record.topic.clone(),
                e.record.offset,
            )
        });
        let events: Vec<Value> = chain.into_iter().map(chain_event_json).collect();
        json!({
            "correlation_id": correlation_id,
            "events": events,
            "dead_letters_without_source": orphans,
            "scanned": self.scanned,
            "truncated": self.truncated,
        })
    }
}

type Route = (String, TopicPattern, Option<Filter>);

fn compiled_routes(subscriptions: &[Value]) -> Vec<Route> {
    subscriptions
        .iter()
        .filter_map(|s| {
            let name = s["name"].as_str()?.to_string();
            let pattern = TopicPattern::parse(s["topic"].as_str()?).ok()?;
            let filter = match s.get("filter") {
                None | Some(Value::Null) => None,
                Some(f) => Some(Filter::compile(f).ok()?),
            };
            Some((name, pattern, filter))
        })
        .collect()
}

fn ack_floors(subscriptions: &[Value]) -> BTreeMap<String, u64> {
    subscriptions
        .iter()
        .filter_map(|s| {
            let floor = s.pointer("/stats/queue/ack_floor")?.as_u64()?;
            Some((s["name"].as_str()?.to_string(), floor))
        })
        .collect()
}

fn extension_json(record: &EventRecord, name: &str) -> Value {
    match record.event.extensions.get(name) {
        Some(ExtensionValue::String(s)) => json!(s),
        Some(ExtensionValue::Integer(i)) => json!(i),
        Some(ExtensionValue::Bool(b)) => json!(b),
        None => Value::Null,
    }
}

fn dead_letter_source(record: &EventRecord) -> Option<(String, u32, u64)> {
    let x = &record.event.extensions;
    let as_u64 = |v: &ExtensionValue| match v {
        ExtensionValue::Integer(i) => u64::try_from(*i).ok(),
        ExtensionValue::String(s) => s.parse().ok(),
        ExtensionValue::Bool(_) => None,
    };
    let topic = x.get(ext::SOURCE_TOPIC)?.as_str()?.to_string();
    let partition = u32::try_from(as_u64(x.get(ext::SOURCE_PARTITION)?)?).ok()?;
    let offset = as_u64(x.get(ext::SOURCE_OFFSET)?)?;
    Some((topic, partition, offset))
}

fn dead_letter_info(record: &EventRecord) -> Value {
    json!({
        "subscription": extension_json(record, ext::SUBSCRIPTION),
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "reason": extension_json(record, ext::REASON),
        "delivery_count": extension_json(record, ext::DELIVERY_COUNT),
        "dead_at": extension_json(record, ext::DEAD_AT),
        "event_id": record.event.id,
    })
}

fn chain_event_json(e: ChainEvent) -> Value {
    let mut out = e.record.to_json();
    out["causation_id"] = json!(e.record.event.causation_id());
    out["routed_to"] = json!(e.routed_to);
    out["queued"] = json!(e.queued);
    out["dead_letters"] = json!(e.dead_letters);
    out
}
