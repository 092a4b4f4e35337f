//! Push streams: a `stream` subscription with a filter delivers only matching events,
//! live, over SSE and over WebSocket; a subscriber that does not read is bounded:
//! with `drop` its events are dropped and counted while the connection stays, with
//! `disconnect` it is closed (and told why) once its buffer is full.

mod bus_common;
mod common;

use std::time::{Duration, Instant};

use bus_common::*;
use common::*;
use serde_json::{json, Value};

fn stream_sub(api: &Api, name: &str, topic: &str, filter: Value, extra: Value) {
    let mut target = json!({"type": "stream"});
    if let Value::Object(map) = extra {
        for (k, v) in map {
            target[k] = v;
        }
    }
    create_subscription(
        api,
        &json!({"name": name, "topic": topic, "filter": filter, "target": target}),
    );
}

fn wait_connected(api: &Api, name: &str, count: u64) {
    wait_for("the stream connection", Duration::from_secs(10), || {
        (describe(api, name)["stats"]["stream"]["connections"].as_u64() >= Some(count))
            .then_some(())
    });
}

#[test]
fn sse_delivers_only_matching_events_live() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("sensors.a", 2);
    api.create_topic("sensors.b", 1);
    stream_sub(
        &api,
        "hot",
        "sensors.*",
        json!({"data": {"celsius": [{"numeric": [">", 30]}]}}),
        json!({}),
    );
    let sse = SseReader::open(&server.url(), "/v1/subscriptions/hot/sse");
    wait_connected(&api, "hot", 1);
    for (i, (topic, celsius)) in [
        ("sensors.a", 35),
        ("sensors.a", 20),
        ("sensors.b", 40),
        ("sensors.b", 10),
    ]
    .iter()
    .enumerate()
    {
        publish_data(
            &api,
            topic,
            &format!("r{i}"),
            "reading",
            json!({"celsius": celsius}),
        );
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        let (kind, data) = sse.next(Duration::from_secs(10)).expect("an SSE event");
        assert_eq!(kind, "event");
        let record: Value = serde_json::from_str(&data).expect("record JSON");
        got.push(record["event"]["id"].as_str().expect("id").to_string());
    }
    got.sort();
    assert_eq!(got, vec!["r0", "r2"]);
    assert!(
        sse.next(Duration::from_millis(300)).is_none(),
        "nothing else"
    );
}

#[test]
fn websocket_delivers_only_matching_events_live() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("chat", 1);
    stream_sub(
        &api,
        "mentions",
        "chat",
        json!({"data": {"text": [{"wildcard": "*@herald*"}]}}),
        json!({}),
    );
    let url = format!("ws://{}/v1/subscriptions/mentions/ws", server.addr());
    let (mut socket, _) = tungstenite::connect(url).expect("websocket connect");
    wait_connected(&api, "mentions", 1);
    publish_data(&api, "chat", "m1", "msg", json!({"text": "hello"}));
    publish_data(&api, "chat", "m2", "msg", json!({"text": "hi @herald!"}));
    let message = socket.read().expect("a websocket message");
    let record: Value = serde_json::from_str(message.to_text().expect("text")).expect("json");
    assert_eq!(record["event"]["id"], "m2");
    assert_eq!(record["topic"], "chat");
    socket.close(None).expect("close");
}

fn flood(api: &Api, topic: &str, events: usize) {
    let blob = "x".repeat(8 * 1024);
    let batch: Vec<Value> = (0..100)
        .map(|i| event_with_data(&format!("f{i}"), json!(blob)))
        .collect();
    for round in 0..events / 100 {
        let batch: Vec<Value> = batch
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["id"] = json!(format!("{}-{round}", e["id"].as_str().expect("id")));
                e
            })
            .collect();
        api.publish(topic, &batch);
    }
}

#[test]
fn a_slow_subscriber_is_bounded_drop_or_disconnect() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("firehose", 1);
    stream_sub(
        &api,
        "lossy",
        "firehose",
        json!(null),
        json!({"buffer_events": 16, "slow_subscriber": "drop"}),
    );
    stream_sub(
        &api,
        "strict",
        "firehose",
        json!(null),
        json!({"buffer_events": 16, "slow_subscriber": "disconnect"}),
    );
    // Connections that never read: the kernel buffers fill, then the server's bounded
    // buffer, then the policy applies.
    let client = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .expect("client");
    let lossy = client
        .get(server.url() + "/v1/subscriptions/lossy/sse")
        .send()
        .expect("sse");
    let strict = client
        .get(server.url() + "/v1/subscriptions/strict/sse")
        .send()
        .expect("sse");
    wait_connected(&api, "lossy", 1);
    wait_connected(&api, "strict", 1);
    let started = Instant::now();
    let mut published = 0;
    loop {
        flood(&api, "firehose", 1000);
        published += 1000;
        let lossy_stats = describe(&api, "lossy")["stats"]["stream"].clone();
        let strict_stats = describe(&api, "strict")["stats"]["stream"].clone();
        if lossy_stats["dropped"].as_u64() > Some(0)
            && strict_stats["disconnected"].as_u64() > Some(0)
        {
            assert_eq!(
                lossy_stats["connections"], 1,
                "drop keeps the connection: {lossy_stats}"
            );
            assert_eq!(strict_stats["connections"], 0, "{strict_stats}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20) && published < 20_000,
            "no backpressure policy applied after {published} events: {lossy_stats} {strict_stats}"
        );
    }
    // The disconnected client reads what was buffered, then the reason, then the end.
    let text = strict.text().expect("read the rest");
    assert!(
        text.contains("event: error"),
        "tail: {}",
        &text[text.len().saturating_sub(300)..]
    );
    drop(lossy);
    // The server is fine.
    api.get("/healthz").expect_status(200);
}
