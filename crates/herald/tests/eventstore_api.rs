//! The event store's HTTP contract and CLI against the real binary: catch-up
//! subscriptions (SSE) opened while appends run concurrently deliver every event once,
//! in `$all` order, across the history/live switch; bad input gets a 4xx naming the
//! problem and the server keeps serving; `herald streams` / `herald all` work.
//!
//! Replay a failing run with `HERALD_TEST_SEED=<seed printed by the test>`.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Api, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Opens an SSE subscription at `path` and forwards each `data:` payload as JSON.
fn sse(server: &Server, path: &str) -> mpsc::Receiver<Value> {
    let api = Api::with_timeout(server.addr(), None);
    let response = api
        .client()
        .get(api.url(path))
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data: ") {
                let value: Value = serde_json::from_str(data).expect("SSE data is JSON");
                if tx.send(value).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn take(rx: &mpsc::Receiver<Value>, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            rx.recv_timeout(TIMEOUT)
                .unwrap_or_else(|e| panic!("SSE event {i} of {count} did not arrive: {e}"))
        })
        .collect()
}

fn key(e: &Value) -> (String, u64, u64) {
    (
        e["stream"].as_str().expect("stream").to_string(),
        e["version"].as_u64().expect("version"),
        e["position"].as_u64().expect("position"),
    )
}

fn append(api: &Api, stream: &str, ids: &[String]) -> Value {
    let events: Vec<Value> = ids.iter().map(|id| common::event(id)).collect();
    api.post_json(
        &format!("/v1/streams/{stream}"),
        &json!({ "events": events }),
    )
    .expect_status(200)
    .body
}

#[test]
fn catch_up_subscriptions_have_no_gap_and_no_duplicate_at_the_switch() {
    let seed = common::seed();
    let server = Server::start_with_args(&["--no-kafka"]);
    let api = server.api();
    for i in 0..30 {
        append(&api, &format!("order-{}", i % 4), &[format!("h{i}")]);
        append(&api, "user-1", &[format!("u{i}")]);
    }
    // Subscribe while a writer is appending, so the switch happens mid-stream.
    let writer = {
        let api = server.api();
        thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed);
            for i in 0..150 {
                let stream = if rng.random_bool(0.5) {
                    format!("order-{}", i % 4)
                } else {
                    "user-1".into()
                };
                let count = rng.random_range(1..=3);
                let ids: Vec<String> = (0..count).map(|j| format!("l{i}-{j}")).collect();
                append(&api, &stream, &ids);
            }
        })
    };
    let all = sse(&server, "/v1/streams/$all/subscribe");
    let category = sse(&server, "/v1/categories/order/subscribe?from=5");
    let one = sse(&server, "/v1/streams/order-2/subscribe");
    writer.join().expect("writer");

    let mut everything = Vec::new();
    let mut from = 0;
    loop {
        let page = api
            .get(&format!("/v1/streams/$all?from={from}&max=10000"))
            .expect_status(200)
            .body;
        let events = page["events"].as_array().expect("events").clone();
        if events.is_empty() {
            break;
        }
        from = page["next"].as_u64().expect("next");
        everything.extend(events);
    }
    let expected: Vec<_> = everything.iter().map(key).collect();
    let got: Vec<_> = take(&all, expected.len()).iter().map(key).collect();
    assert_eq!(
        got, expected,
        "$all subscription: every event once, in order"
    );

    let expected: Vec<_> = everything
        .iter()
        .map(key)
        .filter(|k| k.0.starts_with("order-") && k.2 > 5)
        .collect();
    let got: Vec<_> = take(&category, expected.len()).iter().map(key).collect();
    assert_eq!(
        got, expected,
        "category subscription from position 5 (exclusive)"
    );

    let expected: Vec<_> = everything
        .iter()
        .map(key)
        .filter(|k| k.0 == "order-2")
        .collect();
    let got: Vec<_> = take(&one, expected.len()).iter().map(key).collect();
    assert_eq!(got, expected, "stream subscription");
    assert!(
        got.iter().enumerate().all(|(i, k)| k.1 == i as u64),
        "versions 0.. in order"
    );

    // Live after catching up: a new event arrives on every matching subscription.
    append(&api, "order-2", &["live".to_string()]);
    for rx in [&all, &category, &one] {
        let event = rx.recv_timeout(TIMEOUT).expect("live event");
        assert_eq!(event["event"]["id"], "live");
    }
}

#[test]
fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let server = Server::start_with_args(&[
        "--no-kafka",
        "--max-event-bytes",
        "4096",
        "--max-request-bytes",
        "65536",
    ]);
    let api = server.api();
    let one = json!({"events": [common::event("e1")]});
    let cases: Vec<(String, Value, u16, &str)> = vec![
        (
            "/v1/streams/..%2Fx".into(),
            one.clone(),
            400,
            "invalid_argument",
        ),
        (
            "/v1/streams/a%20b".into(),
            one.clone(),
            400,
            "invalid_argument",
        ),
        (
            "/v1/streams/$all".into(),
            one.clone(),
            400,
            "invalid_argument",
        ),
        (
            "/v1/streams/s".into(),
            json!({"expected_version": "soon", "events": [common::event("e")]}),
            400,
            "invalid_argument",
        ),
        (
            "/v1/streams/s".into(),
            json!({"expected_version": -3, "events": [common::event("e")]}),
            400,
            "invalid_argument",
        ),
        (
            "/v1/streams/s".into(),
            json!({"events": []}),
            400,
            "invalid_argument",
        ),
        (
            "/v1/streams/s".into(),
            json!({"events": [{"id": "x"}]}),
            400,
            "invalid_argument",
        ),
        (
            "/v1/streams/s".into(),
            json!({"nothing": 1}),
            400,
            "invalid_argument",
        ),
        (
            "/v1/streams/s".into(),
            json!({"events": [common::event_with_data("big", json!("x".repeat(8000)))]}),
            413,
            "payload_too_large",
        ),
    ];
    for (path, body, status, code) in cases {
        let reply = api.post_json(&path, &body);
        reply.expect_error(status, code);
    }
    let reply = api.post_raw(
        "/v1/streams/s",
        Some("application/json"),
        b"{not json".to_vec(),
        &[],
    );
    reply.expect_error(400, "invalid_argument");
    let huge = json!({"events": [common::event_with_data("huge", json!("y".repeat(100_000)))]});
    api.post_json("/v1/streams/s", &huge)
        .expect_error(413, "payload_too_large");
    api.get("/v1/streams/s?direction=sideways")
        .expect_error(400, "invalid_argument");
    api.get("/v1/streams/s?max=999999")
        .expect_error(400, "invalid_argument");
    api.get("/v1/streams/never")
        .expect_error(404, "stream_not_found");
    api.get("/v1/streams/..%2Fx")
        .expect_error(400, "invalid_argument");
    api.get("/v1/streams/s/subscribe?from=abc")
        .expect_error(400, "invalid_argument");
    api.get("/v1/categories/a%2Fb/subscribe")
        .expect_error(400, "invalid_argument");

    // Nothing was stored by the refused requests, and the server still serves.
    assert_eq!(
        api.get("/v1/streams").expect_status(200).body["streams"],
        json!([])
    );
    let ok = api.post_json(
        "/v1/streams/s",
        &json!({"expected_version": "no_stream", "events": [common::event("fine")]}),
    );
    assert_eq!(ok.expect_status(200).body["next_expected_version"], 0);
    let conflict = api.post_json(
        "/v1/streams/s",
        &json!({"expected_version": "no_stream", "events": [common::event("again")]}),
    );
    conflict.expect_error(409, "wrong_expected_version");
    assert_eq!(conflict.body["current_version"], 0);
    let header = api.post_raw(
        "/v1/streams/s",
        Some("application/json"),
        json!([common::event("via-header")])
            .to_string()
            .into_bytes(),
        &[("herald-expected-version", "0")],
    );
    assert_eq!(header.expect_status(200).body["next_expected_version"], 1);

    // Metadata, deletes and snapshots over HTTP.
    let reply = api
        .client()
        .put(api.url("/v1/streams/s/metadata"))
        .body(r#"{"max_count": 0}"#)
        .send()
        .expect("put");
    assert_eq!(reply.status().as_u16(), 400);
    let reply = api
        .client()
        .put(api.url("/v1/streams/s/metadata"))
        .body(r#"{"max_count": 1}"#)
        .send()
        .expect("put");
    assert_eq!(reply.status().as_u16(), 200);
    let events = api.get("/v1/streams/s").expect_status(200).body;
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(1),
        "max_count hides older events"
    );
    let reply = api
        .client()
        .put(api.url("/v1/streams/s/snapshot"))
        .body(r#"{"version": 1, "data": {"n": 2}}"#)
        .send()
        .expect("put");
    assert_eq!(reply.status().as_u16(), 200);
    assert_eq!(
        api.get("/v1/streams/s/snapshot").expect_status(200).body["snapshot"]["version"],
        1
    );
    api.delete("/v1/streams/s?hard=maybe")
        .expect_error(400, "invalid_argument");
    api.delete("/v1/streams/s?hard=true").expect_status(200);
    api.post_json("/v1/streams/s", &one)
        .expect_error(410, "stream_deleted");
    assert_eq!(api.get("/healthz").status, 200);
}

#[test]
fn cli_appends_reads_lists_and_follows() {
    let server = Server::start_with_args(&["--no-kafka"]);
    let url = server.url();
    let run = |args: &[&str]| common::run_cli(&url, args, None, TIMEOUT).success();
    let out = run(&[
        "--json",
        "streams",
        "append",
        "order-9",
        "--expected-version",
        "no_stream",
        "--type",
        "order.placed",
        "--data",
        r#"{"total": 5}"#,
    ]);
    assert_eq!(out.json_lines()[0]["next_expected_version"], 0);
    let refused = common::run_cli(
        &url,
        &[
            "streams",
            "append",
            "order-9",
            "--expected-version",
            "no_stream",
            "--data",
            "1",
        ],
        None,
        TIMEOUT,
    );
    assert!(!refused.status.success(), "a conflict fails the command");
    assert!(
        refused.stderr.contains("wrong expected version"),
        "{}",
        refused.stderr
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, "{\"a\": 1}\n{\"a\": 2}\n").expect("write");
    run(&[
        "streams",
        "append",
        "order-9",
        "--expected-version",
        "0",
        "--file",
        file.to_str().expect("path"),
    ]);
    let read = run(&["--json", "streams", "read", "order-9"]).json_lines();
    assert_eq!(
        read.iter()
            .map(|e| e["version"].as_u64().expect("v"))
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(read[0]["event"]["type"], "order.placed");
    let back = run(&[
        "--json",
        "streams",
        "read",
        "order-9",
        "--backwards",
        "--max",
        "1",
    ])
    .json_lines();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0]["version"], 2);
    let list = run(&["--json", "streams", "list"]).json_lines();
    assert_eq!(
        list,
        vec![json!({"stream": "order-9", "last_version": 2, "last_position": 2})]
    );
    let all = run(&["--json", "all", "--from", "1"]).json_lines();
    assert_eq!(all.len(), 2);
    let follow = run(&["--json", "all", "--follow", "--max", "3"]).json_lines();
    assert_eq!(follow.len(), 3, "--follow --max stops after max events");
    let human = run(&["streams", "read", "order-9"]);
    assert!(human.stdout.contains("order-9@0"), "{}", human.stdout);
}
