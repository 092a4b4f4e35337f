//! W3C trace context end to end: a `traceparent` header on publish reaches a webhook
//! (headers and body) and an SSE stream with the same trace id; an event's own
//! `traceparent` extension wins over the header; malformed trace context is a 400
//! naming the field; with `--otlp-endpoint` a fake OTLP/HTTP collector on 127.0.0.1:0
//! receives the server spans of the incoming trace.

mod bus_common;
mod common;

use std::time::Duration;

use bus_common::*;
use common::*;
use serde_json::{json, Value};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const STATE: &str = "congo=t61rcWkgMzE";
const OWN: &str = "00-11112222333344445555666677778888-aaaabbbbccccdddd-01";

fn publish_traced(api: &Api, topic: &str, event: &Value, headers: &[(&str, &str)]) -> Reply {
    api.post_raw(
        &format!("/v1/topics/{topic}/events"),
        Some("application/cloudevents+json"),
        event.to_string().into_bytes(),
        headers,
    )
}

#[test]
fn header_trace_context_reaches_webhook_and_sse() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("orders", 2);
    let receiver = Receiver::start(|_, _| 200);
    create_subscription(
        &api,
        &json!({"name": "hook", "topic": "orders",
                "target": {"type": "webhook", "url": receiver.url()}}),
    );
    let sse = SseReader::open(&server.url(), "/v1/topics/orders/sse?offset=earliest");
    publish_traced(
        &api,
        "orders",
        &event("o-1"),
        &[("traceparent", PARENT), ("tracestate", STATE)],
    )
    .expect_status(200);
    // An event with its own context keeps it, whatever the request header says.
    let mut own = event("o-2");
    own["traceparent"] = json!(OWN);
    publish_traced(&api, "orders", &own, &[("traceparent", PARENT)]).expect_status(200);

    let received = wait_for("two webhook deliveries", Duration::from_secs(15), || {
        let received = receiver.received();
        (received.len() >= 2).then_some(received)
    });
    for r in &received {
        let body = r.json();
        match body["id"].as_str() {
            Some("o-1") => {
                assert_eq!(r.headers["traceparent"], PARENT);
                assert_eq!(r.headers["tracestate"], STATE);
                assert_eq!(body["traceparent"], PARENT);
                assert_eq!(body["tracestate"], STATE);
            }
            Some("o-2") => {
                assert_eq!(r.headers["traceparent"], OWN);
                assert!(!r.headers.contains_key("tracestate"), "{:?}", r.headers);
                assert_eq!(body["traceparent"], OWN);
            }
            other => panic!("unexpected delivery {other:?}: {body}"),
        }
    }

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (kind, data) = sse
            .next(Duration::from_secs(10))
            .expect("SSE event within 10 s");
        if kind != "event" {
            continue;
        }
        let record: Value = serde_json::from_str(&data).expect("SSE data is JSON");
        seen.push((
            record["event"]["id"].as_str().unwrap_or("").to_string(),
            record["event"]["traceparent"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("o-1".to_string(), PARENT.to_string()),
            ("o-2".to_string(), OWN.to_string())
        ]
    );
    assert!(seen[0].1.contains(TRACE_ID));
}

#[test]
fn binary_mode_webhooks_carry_the_trace_headers_too() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("t", 1);
    let receiver = Receiver::start(|_, _| 200);
    create_subscription(
        &api,
        &json!({"name": "bin", "topic": "t",
                "target": {"type": "webhook", "url": receiver.url(), "mode": "binary"}}),
    );
    publish_traced(&api, "t", &event("e-1"), &[("traceparent", PARENT)]).expect_status(200);
    let received = wait_for("one webhook delivery", Duration::from_secs(15), || {
        receiver.received().pop()
    });
    assert_eq!(received.headers["traceparent"], PARENT);
    assert_eq!(received.headers["ce-traceparent"], PARENT);
}

#[test]
fn malformed_trace_context_is_refused_naming_the_field() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("t", 1);
    for (headers, field) in [
        (vec![("traceparent", "00-xyz")], "traceparent"),
        (
            vec![(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
            "traceparent",
        ),
        (
            vec![("traceparent", PARENT), ("tracestate", "novalue")],
            "tracestate",
        ),
    ] {
        let reply = publish_traced(&api, "t", &event("x"), &headers);
        reply.expect_error(400, "invalid_argument");
        assert_eq!(reply.error_field(), Some(field), "{}", reply.text);
    }
    let mut bad = event("y");
    bad["traceparent"] = json!("01-not-valid");
    let reply = publish_traced(&api, "t", &bad, &[]);
    reply.expect_error(400, "invalid_argument");
    assert_eq!(reply.error_field(), Some("traceparent"), "{}", reply.text);
    let mut numeric = event("z");
    numeric["traceparent"] = json!(7);
    let reply = publish_traced(&api, "t", &numeric, &[]);
    reply.expect_error(400, "invalid_argument");
    assert_eq!(reply.error_field(), Some("traceparent"), "{}", reply.text);
    // Nothing was stored.
    assert_eq!(
        api.describe_topic("t")["partition_stats"][0]["end_offset"],
        0
    );
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn spans_are_exported_to_an_otlp_collector() {
    let collector = Receiver::start(|_, _| 200);
    let endpoint = format!("http://{}", collector.addr);
    let mut server = Server::start_with_args(&["--otlp-endpoint", &endpoint]);
    let api = server.api();
    api.create_topic("t", 1);
    publish_traced(&api, "t", &event("e-1"), &[("traceparent", PARENT)]).expect_status(200);
    // SIGTERM flushes the batch exporter; no waiting on its timer.
    assert!(server.terminate().success());
    let trace_id = hex_bytes(TRACE_ID);
    let parent_id = hex_bytes("00f067aa0ba902b7");
    let requests = collector.received();
    let export = requests
        .iter()
        .find(|r| contains(&r.body, &trace_id))
        .unwrap_or_else(|| {
            panic!(
                "no export carries trace {TRACE_ID}; {} requests: {:?}",
                requests.len(),
                requests.iter().map(|r| &r.headers).collect::<Vec<_>>()
            )
        });
    assert_eq!(export.headers["content-type"], "application/x-protobuf");
    // The request span's parent is the incoming span; the publish span nests below it.
    assert!(
        contains(&export.body, &parent_id),
        "parent span id exported"
    );
    assert!(contains(&export.body, b"POST /v1/topics/{topic}/events"));
    assert!(contains(&export.body, b"publish t"));
    assert!(contains(&export.body, b"herald"), "service.name");
}
