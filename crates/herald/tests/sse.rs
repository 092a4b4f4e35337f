//! Server-Sent Events, read the way `curl -N` would: a streaming GET that receives
//! the existing events and then the newly published ones, in order.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{event, record_id, record_offset, record_partition, Api, Server};
use serde_json::Value;

/// One SSE message.
#[derive(Debug)]
struct Message {
    id: Option<String>,
    event: Option<String>,
    data: Value,
}

/// An open SSE stream; messages arrive through a channel fed by a reader thread.
struct Stream {
    messages: mpsc::Receiver<Message>,
}

impl Stream {
    fn open(server: &Server, path_and_query: &str) -> Stream {
        let api = Api::with_timeout(server.addr(), None);
        let response = api
            .client()
            .get(api.url(path_and_query))
            .header("accept", "text/event-stream")
            .send()
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        assert_eq!(response.status().as_u16(), 200, "GET {path_and_query}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "GET {path_and_query}: content-type {content_type:?}"
        );
        let (sender, messages) = mpsc::channel();
        thread::spawn(move || read_messages(BufReader::new(response), &sender));
        Stream { messages }
    }

    /// The next `count` messages, or a panic after `timeout`.
    fn take(&self, count: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(remaining) {
                Ok(message) => out.push(message),
                Err(e) => panic!(
                    "expected {count} SSE messages within {timeout:?}, got {} ({e}): {out:?}",
                    out.len()
                ),
            }
        }
        out
    }

    /// Asserts nothing arrives for `quiet`.
    fn assert_quiet(&self, quiet: Duration) {
        if let Ok(message) = self.messages.recv_timeout(quiet) {
            panic!("unexpected SSE message: {message:?}");
        }
    }
}

/// Parses `text/event-stream` until the connection ends. Comments (keep-alives) are skipped.
fn read_messages(reader: impl BufRead, sender: &mpsc::Sender<Message>) {
    let mut id = None;
    let mut kind = None;
    let mut data = String::new();
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.is_empty() {
            if !data.is_empty() {
                let parsed = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data:?}"));
                let message = Message {
                    id: id.take(),
                    event: kind.take(),
                    data: parsed,
                };
                if sender.send(message).is_err() {
                    return;
                }
            }
            id = None;
            kind = None;
            data.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match field {
            "id" => id = Some(value.to_string()),
            "event" => kind = Some(value.to_string()),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
}

fn check_message(message: &Message, topic: &str) {
    assert_eq!(message.event.as_deref(), Some("event"), "{message:?}");
    let record = &message.data;
    assert_eq!(record["topic"], topic, "{message:?}");
    let expected_id = format!("{}:{}", record_partition(record), record_offset(record));
    assert_eq!(
        message.id.as_deref(),
        Some(expected_id.as_str()),
        "{message:?}"
    );
}

#[test]
fn earliest_stream_replays_then_follows() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("t", 1);
    let old: Vec<Value> = (0..5).map(|i| event(&format!("old{i}"))).collect();
    api.publish("t", &old);

    let stream = Stream::open(&server, "/v1/topics/t/sse?offset=earliest&partition=0");
    let first = stream.take(5, Duration::from_secs(10));
    for message in &first {
        check_message(message, "t");
    }
    let ids: Vec<&str> = first.iter().map(|m| record_id(&m.data)).collect();
    assert_eq!(ids, ["old0", "old1", "old2", "old3", "old4"]);

    for i in 0..5 {
        api.publish_one("t", &event(&format!("new{i}")));
    }
    let batch: Vec<Value> = (5..10).map(|i| event(&format!("new{i}"))).collect();
    api.publish("t", &batch);
    let next = stream.take(10, Duration::from_secs(10));
    for (index, message) in next.iter().enumerate() {
        check_message(message, "t");
        assert_eq!(record_id(&message.data), format!("new{index}"));
        assert_eq!(record_offset(&message.data), 5 + index as u64);
    }
    stream.assert_quiet(Duration::from_millis(200));
}

#[test]
fn default_offset_is_latest_and_all_partitions_stream() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("multi", 3);
    let old: Vec<Value> = (0..6).map(|i| event(&format!("old{i}"))).collect();
    api.publish("multi", &old);

    let latest = Stream::open(&server, "/v1/topics/multi/sse");
    let everything = Stream::open(&server, "/v1/topics/multi/sse?offset=earliest");
    let replayed = everything.take(6, Duration::from_secs(10));
    let mut replayed_ids: Vec<&str> = replayed.iter().map(|m| record_id(&m.data)).collect();
    replayed_ids.sort_unstable();
    assert_eq!(
        replayed_ids,
        ["old0", "old1", "old2", "old3", "old4", "old5"]
    );

    // The `latest` stream may subscribe slightly after the request returned: publish
    // markers until one shows up, then everything after it must follow in order.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut marker = 0;
    let first_seen = loop {
        assert!(
            Instant::now() < deadline,
            "the latest stream never delivered"
        );
        api.publish_one(
            "multi",
            &common::keyed_event(&format!("marker{marker}"), "m"),
        );
        marker += 1;
        if let Ok(message) = latest.messages.recv_timeout(Duration::from_millis(200)) {
            break message;
        }
    };
    assert!(
        record_id(&first_seen.data).starts_with("marker"),
        "{first_seen:?}"
    );
    assert!(
        !record_id(&first_seen.data).starts_with("old"),
        "offset defaults to latest: {first_seen:?}"
    );
    let markers_seen_after: u64 = marker
        - record_id(&first_seen.data)
            .trim_start_matches("marker")
            .parse::<u64>()
            .expect("marker number")
        - 1;
    latest.take(markers_seen_after as usize, Duration::from_secs(10));

    let new: Vec<Value> = (0..30)
        .map(|i| common::keyed_event(&format!("n{i}"), &format!("k{}", i % 7)))
        .collect();
    let acks = api.publish("multi", &new);
    for stream in [&latest, &everything] {
        let mut received = Vec::new();
        while received.len() < 30 {
            let message = stream.take(1, Duration::from_secs(10)).remove(0);
            check_message(&message, "multi");
            if record_id(&message.data).starts_with('n') {
                received.push(message);
            }
        }
        // Per partition, the stream order is the offset order.
        for partition in 0..3u32 {
            let offsets: Vec<u64> = received
                .iter()
                .filter(|m| record_partition(&m.data) == partition)
                .map(|m| record_offset(&m.data))
                .collect();
            let mut expected: Vec<u64> = acks
                .iter()
                .filter(|a| a.partition == partition)
                .map(|a| a.offset)
                .collect();
            expected.sort_unstable();
            assert_eq!(offsets, expected, "partition {partition}");
        }
    }
}

#[test]
fn sigterm_with_open_streams_exits_cleanly() {
    let mut server = Server::start();
    let api = server.api();
    api.create_topic("t", 1);
    api.publish("t", &[event("e0")]);
    let stream = Stream::open(&server, "/v1/topics/t/sse?offset=earliest");
    stream.take(1, Duration::from_secs(10));
    // A long poll in flight as well.
    let poller = api.clone();
    let poll = thread::spawn(move || {
        let builder = poller
            .client()
            .get(poller.url("/v1/topics/t/events"))
            .query(&[("offset", "1"), ("wait_ms", "60000")]);
        // Either answered (e.g. 503 or an empty page) or cut off: both are fine.
        poller
            .try_send(builder, "long poll".into())
            .map(|reply| reply.status)
    });
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?} with an open SSE stream and a long poll",
        started.elapsed()
    );
    let _ = poll.join();
}

#[test]
fn bad_stream_requests() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("t", 2);
    api.get("/v1/topics/nope/sse?offset=earliest")
        .expect_error(404, "topic_not_found");
    api.get("/v1/topics/t/sse?offset=abc")
        .expect_error(400, "invalid_argument");
    api.get("/v1/topics/t/sse?offset=-3")
        .expect_error(400, "invalid_argument");
    api.get("/v1/topics/t/sse?from_time=yesterday")
        .expect_error(400, "invalid_argument");
    let reply = api.get("/v1/topics/t/sse?partition=7&offset=earliest");
    assert!(
        reply.status == 400 || reply.status == 404,
        "unknown partition: expected 400 or 404, got {} {}",
        reply.status,
        reply.text
    );
}

#[test]
fn numeric_offset_and_from_time_streams() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("t", 1);
    let events: Vec<Value> = (0..10).map(|i| event(&format!("e{i}"))).collect();
    api.publish("t", &events);
    let from_seven = Stream::open(&server, "/v1/topics/t/sse?partition=0&offset=7");
    let ids: Vec<String> = from_seven
        .take(3, Duration::from_secs(10))
        .iter()
        .map(|m| record_id(&m.data).to_string())
        .collect();
    assert_eq!(ids, ["e7", "e8", "e9"]);
    from_seven.assert_quiet(Duration::from_millis(200));

    let from_past = Stream::open(
        &server,
        "/v1/topics/t/sse?partition=0&from_time=2000-01-01T00:00:00Z",
    );
    let first = from_past.take(1, Duration::from_secs(10));
    assert_eq!(record_id(&first[0].data), "e0", "{first:?}");
}
