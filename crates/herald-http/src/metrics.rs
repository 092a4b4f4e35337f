//! Prometheus metrics: the process-wide recorder, `GET /metrics`, the per-request
//! middleware (latency and count by route template) and the open-connection count.
//!
//! Event-driven series (appends, fsyncs, requests, group deliveries) are counted where
//! they happen through the `metrics` facade; state series (log sizes, lag, backlog, DLQ
//! depth, webhook counters) are read from the broker and bus at scrape time, so they
//! vanish with the topic, group or subscription they describe.
//! Invariant: label values are bounded: route templates (never raw paths), the fixed
//! method set, and names of topics, groups and subscriptions that exist.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::Value;
use tracing::Instrument as _;

use crate::AppState;

/// Histogram (seconds) of HTTP request handling by method and route template.
pub const REQUEST_SECONDS_METRIC: &str = "herald_http_request_duration_seconds";
/// Counter of HTTP requests by method, route template and status.
pub const REQUESTS_METRIC: &str = "herald_http_requests_total";
/// Gauge of open connections by protocol (`protocol="http"` here).
pub const OPEN_CONNECTIONS_METRIC: &str = "herald_open_connections";
/// Route label of requests no route matched (404s of unknown paths).
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// Bucket bounds (seconds) of every `*_duration_seconds` histogram.
pub const DURATION_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Content type of the Prometheus text exposition format.
const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder. Once per
/// process; later calls are no-ops. Without it `/metrics` serves only the scrape-time
/// series.
pub fn install() -> Result<(), String> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_duration_seconds".into()),
            DURATION_BUCKETS_SECONDS,
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let _ = HANDLE.set(handle);
    Ok(())
}

/// Folds recorded histogram samples into their buckets; call every few seconds so an
/// unscraped server does not hold samples without bound.
pub fn upkeep() {
    if let Some(handle) = HANDLE.get() {
        handle.run_upkeep();
    }
}

/// `GET /metrics`: the Prometheus text exposition format.
pub async fn scrape(State(state): State<AppState>) -> Response {
    let mut out = HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    state.broker.refresh_stats(None).await;
    render_broker_state(&state, &mut out);
    if let Some(bus) = &state.bus {
        render_bus_state(bus, &state, &mut out);
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(EXPOSITION_CONTENT_TYPE),
        )],
        out,
    )
        .into_response()
}

/// Middleware: a server span per request (child of an incoming W3C `traceparent`),
/// and the request's latency and count by route template.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_string();
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    crate::tracecontext::set_remote_parent(&span, request.headers());
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    metrics::histogram!(REQUEST_SECONDS_METRIC, "method" => method, "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        REQUESTS_METRIC,
        "method" => method,
        "route" => route,
        "status" => status.to_string()
    )
    .increment(1);
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

// ---- scrape-time series ----

/// Writes `# HELP` and `# TYPE` once, then one sample per entry.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
    started: bool,
    help: &'static str,
    kind: &'static str,
}

impl<'a> Family<'a> {
    fn new(
        out: &'a mut String,
        name: &'static str,
        kind: &'static str,
        help: &'static str,
    ) -> Self {
        Self {
            out,
            name,
            started: false,
            help,
            kind,
        }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        if !self.started {
            self.started = true;
            let _ = writeln!(self.out, "# HELP {} {}", self.name, self.help);
            let _ = writeln!(self.out, "# TYPE {} {}", self.name, self.kind);
        }
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{name}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Label value escaping of the text format: backslash, double quote, newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn render_broker_state(state: &AppState, out: &mut String) {
    let broker = &state.broker;
    let mut topics = broker.list_topics();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows = Vec::new();
    for meta in &topics {
        if let Ok(stats) = broker.topic_stats(&meta.name) {
            for p in stats {
                rows.push((meta.name.as_str(), p.partition.to_string(), p));
            }
        }
    }
    for (name, kind, help, pick) in [
        (
            "herald_partition_size_bytes",
            "gauge",
            "Bytes of a partition's log on disk (all segments).",
            (|p| p.size_bytes) as fn(&herald_broker::broker::PartitionStats) -> u64,
        ),
        (
            "herald_partition_end_offset",
            "gauge",
            "Next offset of a partition (events ever appended).",
            |p| p.end_offset,
        ),
        (
            "herald_partition_start_offset",
            "gauge",
            "First offset still stored in a partition (after retention).",
            |p| p.start_offset,
        ),
    ] {
        let mut family = Family::new(out, name, kind, help);
        for (topic, partition, stats) in &rows {
            family.sample(
                &[("topic", topic), ("partition", partition)],
                pick(stats) as f64,
            );
        }
    }
    let groups: Vec<_> = broker
        .list_groups()
        .iter()
        .filter_map(|g| broker.describe_group(g).ok())
        .collect();
    let mut lag = Family::new(
        out,
        "herald_group_lag",
        "gauge",
        "Events of a partition after a consumer group's committed offset (end offset - committed).",
    );
    for group in &groups {
        for o in &group.offsets {
            let partition = o.partition.to_string();
            lag.sample(
                &[
                    ("group", &group.name),
                    ("topic", &o.topic),
                    ("partition", &partition),
                ],
                o.lag as f64,
            );
        }
    }
    let mut committed = Family::new(
        out,
        "herald_group_committed_offset",
        "gauge",
        "A consumer group's committed offset per partition.",
    );
    for group in &groups {
        for o in &group.offsets {
            if let Some(offset) = o.committed {
                let partition = o.partition.to_string();
                committed.sample(
                    &[
                        ("group", &group.name),
                        ("topic", &o.topic),
                        ("partition", &partition),
                    ],
                    offset as f64,
                );
            }
        }
    }
    let mut members = Family::new(
        out,
        "herald_group_members",
        "gauge",
        "Members of a consumer group.",
    );
    for group in &groups {
        members.sample(&[("group", &group.name)], group.members.len() as f64);
    }
}

/// One scrape-time series of a subscription: name, type, help, and where its value
/// sits in the subscription's description (`GET /v1/subscriptions/{name}`).
const SUBSCRIPTION_SERIES: &[(&str, &str, &str, &[&str])] = &[
    (
        "herald_subscription_matched_total",
        "counter",
        "Events routed to a subscription.",
        &["stats", "matched"],
    ),
    (
        "herald_subscription_errors_total",
        "counter",
        "Routing failures of a subscription.",
        &["stats", "errors"],
    ),
    (
        "herald_subscription_backlog",
        "gauge",
        "Messages of a subscription's queue not yet acknowledged (its lag).",
        &["stats", "queue", "backlog"],
    ),
    (
        "herald_subscription_in_flight",
        "gauge",
        "Messages of a subscription's queue leased to a consumer or webhook request.",
        &["stats", "queue", "in_flight"],
    ),
    (
        "herald_subscription_dead_letter_pending",
        "gauge",
        "Messages past max_deliveries not yet written to the dead-letter topic.",
        &["stats", "queue", "dead_letter_pending"],
    ),
    (
        "herald_webhook_deliveries_total",
        "counter",
        "Webhook deliveries answered with 2xx.",
        &["stats", "webhook", "delivered"],
    ),
    (
        "herald_webhook_failures_total",
        "counter",
        "Failed webhook delivery attempts (non-2xx, timeout, connection error).",
        &["stats", "webhook", "failed_attempts"],
    ),
    (
        "herald_webhook_dead_lettered_total",
        "counter",
        "Webhook messages given up after max_deliveries.",
        &["stats", "webhook", "dead_lettered"],
    ),
    (
        "herald_stream_connections",
        "gauge",
        "Live SSE/WebSocket connections of a stream subscription.",
        &["stats", "stream", "connections"],
    ),
    (
        "herald_stream_delivered_total",
        "counter",
        "Events pushed to a stream subscription's connections.",
        &["stats", "stream", "delivered"],
    ),
];

fn render_bus_state(bus: &herald_bus::Bus, state: &AppState, out: &mut String) {
    let mut subscriptions = bus.list_subscriptions();
    subscriptions.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    for (name, kind, help, path) in SUBSCRIPTION_SERIES {
        let mut family = Family::new(out, name, kind, help);
        for sub in &subscriptions {
            let Some(subscription) = sub["name"].as_str() else {
                continue;
            };
            let value = path.iter().try_fold(sub, |v, key| v.get(key));
            if let Some(value) = value.and_then(Value::as_f64) {
                family.sample(&[("subscription", subscription)], value);
            }
        }
    }
    let mut depth = Family::new(
        out,
        "herald_dlq_depth",
        "gauge",
        "Events stored in a subscription's dead-letter topic.",
    );
    for sub in &subscriptions {
        let (Some(subscription), Some(topic)) =
            (sub["name"].as_str(), sub["dead_letter_topic"].as_str())
        else {
            continue;
        };
        let events: u64 = state
            .broker
            .topic_stats(topic)
            .map(|stats| {
                stats
                    .iter()
                    .map(|p| p.end_offset.saturating_sub(p.start_offset))
                    .sum()
            })
            .unwrap_or(0);
        depth.sample(
            &[("subscription", subscription), ("topic", topic)],
            events as f64,
        );
    }
}

// ---- open connections ----

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_family_writes_its_header_once() {
        let mut out = String::new();
        let mut f = Family::new(&mut out, "x_total", "counter", "Xs.");
        f.sample(&[("a", "1")], 2.0);
        f.sample(&[("a", "2")], 3.5);
        assert_eq!(
            out,
            "# HELP x_total Xs.\n# TYPE x_total counter\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3.5\n"
        );
    }
}
