//! Admission control: request bodies in flight are bounded server-wide. A client that
//! holds the budget (a body declared but never finished) makes other publishes wait and
//! then get 503 `overloaded` with `Retry-After`, while body-less and small requests
//! (`/healthz`, fetches, single events) keep being served; once the budget frees, publishing works again and nothing
//! stored was lost.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{event, Server};

#[test]
fn a_held_budget_gives_503_then_recovers() {
    // Budget = one 64 KiB request (the budget is never smaller than the request limit).
    let server = Server::start_with_args(&[
        "--max-request-bytes",
        "65536",
        "--max-event-bytes",
        "65536",
        "--max-inflight-bytes",
        "1",
        "--inflight-wait-ms",
        "300",
    ]);
    let api = server.api();
    api.create_topic("held", 1);
    let before = api.publish("held", &[event("e-before")]);
    assert_eq!(before.len(), 1);

    // A slow client: declares 64 KiB and sends only its headers and a few bytes.
    let mut slow = TcpStream::connect(server.addr()).expect("connect");
    write!(
        slow,
        "POST /v1/topics/held/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents-batch+json\r\ncontent-length: 65536\r\n\r\n[{{"
    )
    .expect("write");
    slow.flush().expect("flush");

    // Wait until the slow request holds the budget: a bulk publish (over 16 KiB) is refused.
    // Attempts before that may still be admitted; each attempt has its own ids.
    let bulk = |attempt: u32| -> Vec<serde_json::Value> {
        (0..24)
            .map(|i| {
                common::event_with_data(
                    &format!("e-during-a{attempt}-i{i}"),
                    serde_json::json!("x".repeat(1000)),
                )
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempt = 0;
    let refused = loop {
        attempt += 1;
        let reply = api.post_json("/v1/topics/held/events", &serde_json::json!(bulk(attempt)));
        if reply.status == 503 {
            break reply;
        }
        assert!(
            Instant::now() < deadline,
            "the held budget never refused a publish: last reply {} {}",
            reply.status,
            reply.text
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    refused.expect_error(503, "overloaded");
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // Body-less and small requests (acks, commits, single events) are not held back.
    api.get("/healthz").expect_status(200);
    api.publish("held", &[event("e-small")]);
    api.get("/v1/topics/held").expect_status(200);

    // The slow client goes away: its share returns and publishing works again.
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = api.post_json(
            "/v1/topics/held/events",
            &serde_json::json!([event("e-after")]),
        );
        if reply.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing never recovered: {} {}",
            reply.status,
            reply.text
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stored = api.get("/v1/topics/held/events?partition=0&offset=0&max=10000");
    let text = stored.text.clone();
    assert!(
        text.contains("e-before") && text.contains("e-small") && text.contains("e-after"),
        "{text}"
    );
    let refused_ids = format!("\"e-during-a{attempt}-i");
    assert!(
        !text.contains(&refused_ids),
        "a refused publish (attempt {attempt}) was stored: {text}"
    );
}
