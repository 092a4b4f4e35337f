//! `GET /metrics` after known traffic, parsed with a strict Prometheus text-format
//! parser: exact appended event and byte counters per topic/partition, consumer-group
//! lag and committed offsets after a partial commit, group deliveries, request counts
//! and latency histograms by route template (never raw paths), fsync histogram, open
//! connections, and the bus series (webhook failures, DLQ depth, queue backlog).

mod bus_common;
mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bus_common::*;
use common::*;
use herald_core::codec::encode_event_to_vec;
use herald_core::CloudEvent;
use serde_json::{json, Value};

// ---- a strict parser of the text exposition format (0.0.4) ----

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the whole exposition; panics on anything malformed: bad names, bad label
/// syntax or escapes, unparsable values, a `# TYPE` repeated or after its samples, a
/// series repeated.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_families: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let at = || format!("line {}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            assert!(valid_metric_name(name), "bad metric name, {}", at());
            match keyword {
                "TYPE" => {
                    let kind = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "bad type, {}",
                        at()
                    );
                    assert!(
                        typed.insert(name.to_string(), kind.to_string()).is_none(),
                        "TYPE repeated, {}",
                        at()
                    );
                    assert!(
                        !seen_families.contains(name),
                        "TYPE after samples, {}",
                        at()
                    );
                }
                "HELP" => {}
                _ => panic!("unknown comment keyword, {}", at()),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment, {}", at());
        let (name, labels, rest) = parse_series(line).unwrap_or_else(|e| panic!("{e}, {}", at()));
        let value_text = rest.split(' ').next().unwrap_or("");
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value, {}", at())),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix).filter(|base| {
                    typed
                        .get(*base)
                        .is_some_and(|k| k == "histogram" || k == "summary")
                })
            })
            .unwrap_or(&name)
            .to_string();
        seen_families.insert(family);
        let key = format!("{name}{labels:?}");
        assert!(series.insert(key), "series repeated, {}", at());
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

type Series = (String, BTreeMap<String, String>, String);

/// `name{label="value",...} rest` → (name, labels, rest).
fn parse_series(line: &str) -> Result<Series, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = body.split_once("=\"").ok_or("label without =\"")?;
            if !valid_metric_name(label) || label.contains(':') {
                return Err(format!("bad label name {label:?}"));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("bad escape \\{other}")),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} repeated"));
            }
            body = &after[end + 1..];
            if let Some(next) = body.strip_prefix(',') {
                body = next;
            } else if !body.starts_with('}') {
                return Err("expected , or } after a label value".into());
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    Ok((name.to_string(), labels, rest.to_string()))
}

// ---- helpers ----

fn scrape(api: &Api) -> Vec<Sample> {
    let reply = api.get("/metrics").expect_status(200);
    let content_type = reply
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content type {content_type:?}"
    );
    parse_exposition(&reply.text)
}

/// The value of the one sample called `name` whose labels are exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

fn expect(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(samples, name, labels).unwrap_or_else(|| {
        let present: Vec<String> = samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| format!("{:?} = {}", s.labels, s.value))
            .collect();
        panic!("no sample {name}{labels:?}; present: {present:#?}")
    })
}

/// Bytes the broker counts for an event: its encoded form after Herald's defaults
/// (no key: these publishes carry no `partitionkey`).
fn stored_bytes(event: &Value) -> u64 {
    let mut event = CloudEvent::from_json_value(event.clone()).expect("valid event");
    event.apply_defaults();
    encode_event_to_vec(&event).len() as u64
}

fn publish_to(api: &Api, topic: &str, partition: u32, events: &[Value]) -> Reply {
    api.post_raw(
        &format!("/v1/topics/{topic}/events?partition={partition}"),
        Some("application/cloudevents-batch+json"),
        Value::Array(events.to_vec()).to_string().into_bytes(),
        &[],
    )
}

const PUBLISH_ROUTE: &str = "/v1/topics/{topic}/events";

// ---- tests ----

#[test]
fn counters_lag_and_requests_after_known_traffic() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("orders", 2);
    let first: Vec<Value> = (0..3)
        .map(|i| event_with_data(&format!("a{i}"), json!({ "n": i })))
        .collect();
    let second: Vec<Value> = (0..2)
        .map(|i| event_with_data(&format!("b{i}"), json!({ "pad": "x".repeat(10 * i + 1) })))
        .collect();
    publish_to(&api, "orders", 0, &first).expect_status(200);
    publish_to(&api, "orders", 1, &second).expect_status(200);
    publish_to(&api, "nope", 0, &first).expect_error(404, "topic_not_found");
    let bad_trace = api.post_raw(
        "/v1/topics/orders/events",
        Some("application/cloudevents+json"),
        event("c0").to_string().into_bytes(),
        &[("traceparent", "00-not-a-trace")],
    );
    bad_trace.expect_error(400, "invalid_argument");
    api.get("/no/such/path").expect_error(404, "not_found");

    // A group that read everything and committed 2 of partition 0 only.
    let joined = api.join_group(
        "billing",
        &json!({"topics": ["orders"], "auto_offset_reset": "earliest"}),
    );
    let member = joined["member_id"].as_str().expect("member id").to_string();
    let mut delivered = 0;
    wait_for(
        "the group reads all 5 events",
        Duration::from_secs(10),
        || {
            let page = api
                .get(&format!(
                    "/v1/groups/billing/members/{member}/events?max=100&wait_ms=100"
                ))
                .expect_status(200)
                .body;
            delivered += page["events"].as_array().map_or(0, Vec::len);
            (delivered >= 5).then_some(())
        },
    );
    assert_eq!(delivered, 5);
    api.post_json(
        &format!("/v1/groups/billing/members/{member}/commit"),
        &json!({"offsets": [{"topic": "orders", "partition": 0, "offset": 2}]}),
    )
    .expect_status(200);

    let samples = scrape(&api);
    let p0 = [("topic", "orders"), ("partition", "0")];
    let p1 = [("topic", "orders"), ("partition", "1")];
    assert_eq!(expect(&samples, "herald_appended_events_total", &p0), 3.0);
    assert_eq!(expect(&samples, "herald_appended_events_total", &p1), 2.0);
    let bytes0: u64 = first.iter().map(stored_bytes).sum();
    let bytes1: u64 = second.iter().map(stored_bytes).sum();
    assert_eq!(
        expect(&samples, "herald_appended_bytes_total", &p0),
        bytes0 as f64
    );
    assert_eq!(
        expect(&samples, "herald_appended_bytes_total", &p1),
        bytes1 as f64
    );
    assert_eq!(expect(&samples, "herald_partition_end_offset", &p0), 3.0);
    assert_eq!(expect(&samples, "herald_partition_end_offset", &p1), 2.0);
    assert!(expect(&samples, "herald_partition_size_bytes", &p0) >= bytes0 as f64);

    let g0 = [
        ("group", "billing"),
        ("topic", "orders"),
        ("partition", "0"),
    ];
    let g1 = [
        ("group", "billing"),
        ("topic", "orders"),
        ("partition", "1"),
    ];
    assert_eq!(expect(&samples, "herald_group_lag", &g0), 1.0);
    assert_eq!(expect(&samples, "herald_group_lag", &g1), 2.0);
    assert_eq!(expect(&samples, "herald_group_committed_offset", &g0), 2.0);
    assert_eq!(value(&samples, "herald_group_committed_offset", &g1), None);
    assert_eq!(
        expect(
            &samples,
            "herald_group_delivered_events_total",
            &[("group", "billing"), ("topic", "orders")]
        ),
        5.0
    );
    assert_eq!(
        expect(&samples, "herald_group_members", &[("group", "billing")]),
        1.0
    );

    let requests = |status: &str| {
        value(
            &samples,
            "herald_http_requests_total",
            &[
                ("method", "POST"),
                ("route", PUBLISH_ROUTE),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("200"), Some(2.0));
    assert_eq!(requests("404"), Some(1.0));
    assert_eq!(requests("400"), Some(1.0));
    let publish_labels = [("method", "POST"), ("route", PUBLISH_ROUTE)];
    assert_eq!(
        expect(
            &samples,
            "herald_http_request_duration_seconds_count",
            &publish_labels
        ),
        4.0
    );
    assert_eq!(
        expect(
            &samples,
            "herald_http_request_duration_seconds_bucket",
            &[("method", "POST"), ("route", PUBLISH_ROUTE), ("le", "+Inf")]
        ),
        4.0
    );
    assert_eq!(
        expect(
            &samples,
            "herald_http_requests_total",
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    // Cardinality: route labels are templates, never the raw path.
    for sample in &samples {
        if let Some(route) = sample.labels.get("route") {
            assert!(
                !route.contains("orders") && !route.contains("nope") && !route.contains(&member),
                "raw path in a route label: {sample:?}"
            );
        }
    }
    // Two `always` appends: at least two group-commit fsyncs, all within +Inf. (The
    // embedded log's writer records them; on JetStream the NATS server syncs.)
    if !common::nats::jetstream_suite() {
        let fsyncs = expect(&samples, "herald_log_fsync_duration_seconds_count", &[]);
        assert!(fsyncs >= 2.0, "{fsyncs} fsyncs");
        assert_eq!(
            expect(
                &samples,
                "herald_log_fsync_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            fsyncs
        );
    }
    assert!(expect(&samples, "herald_open_connections", &[("protocol", "http")]) >= 1.0);
}

#[test]
fn kafka_connections_are_counted_while_open() {
    let server = Server::start();
    let api = server.api();
    let kafka_open = |api: &Api| {
        value(
            &scrape(api),
            "herald_open_connections",
            &[("protocol", "kafka")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(kafka_open(&api), 0.0);
    let connection = std::net::TcpStream::connect(server.kafka_addr()).expect("connect");
    wait_for(
        "the Kafka connection counted",
        Duration::from_secs(10),
        || (kafka_open(&api) == 1.0).then_some(()),
    );
    drop(connection);
    wait_for(
        "the Kafka connection released",
        Duration::from_secs(10),
        || (kafka_open(&api) == 0.0).then_some(()),
    );
}

#[test]
fn webhook_failures_dlq_depth_and_queue_backlog() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("jobs", 1);
    let receiver = Receiver::start(|_, _| 500);
    create_subscription(
        &api,
        &json!({"name": "hook", "topic": "jobs", "max_deliveries": 2,
                "target": {"type": "webhook", "url": receiver.url(),
                           "retry": {"initial_backoff_ms": 10, "max_backoff_ms": 20}}}),
    );
    queue_subscription(&api, "q", "jobs");
    publish_data(&api, "jobs", "j-1", "job.created", json!({"n": 1}));
    wait_queued(&api, "q", 1);
    let hook = [("subscription", "hook")];
    let samples = wait_for(
        "the webhook event dead-lettered",
        Duration::from_secs(20),
        || {
            let samples = scrape(&api);
            let depth = value(
                &samples,
                "herald_dlq_depth",
                &[("subscription", "hook"), ("topic", "hook.dlq")],
            );
            (depth == Some(1.0)).then_some(samples)
        },
    );
    assert_eq!(
        expect(&samples, "herald_webhook_failures_total", &hook),
        2.0
    );
    assert_eq!(
        expect(&samples, "herald_webhook_deliveries_total", &hook),
        0.0
    );
    assert_eq!(
        expect(&samples, "herald_webhook_dead_lettered_total", &hook),
        1.0
    );
    assert_eq!(receiver.received().len(), 2);
    let q = [("subscription", "q")];
    assert_eq!(
        expect(&samples, "herald_subscription_matched_total", &q),
        1.0
    );
    assert_eq!(expect(&samples, "herald_subscription_backlog", &q), 1.0);
    assert_eq!(
        expect(
            &samples,
            "herald_dlq_depth",
            &[("subscription", "q"), ("topic", "q.dlq")]
        ),
        0.0
    );
}
