//! Hostile and malformed requests: each gets the documented 4xx with a useful error
//! body, none of them writes anything, and afterwards the server is healthy and every
//! previously published event is still readable.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{event, record_id, Api, Reply, Server};
use serde_json::{json, Value};

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";
const MIB: usize = 1024 * 1024;

fn post(api: &Api, topic: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
    api.post_raw(
        &format!("/v1/topics/{topic}/events"),
        Some(content_type),
        body.into(),
        &[],
    )
}

/// Asserts a 400 `invalid_argument` whose `field` is `field`.
fn expect_invalid(reply: &Reply, field: &str) {
    reply.expect_error(400, "invalid_argument");
    assert_eq!(
        reply.error_field(),
        Some(field),
        "{}: expected field {field:?}, got {}",
        reply.request,
        reply.text
    );
}

/// Publishes three valid events and returns their ids.
fn publish_valid(api: &Api, round: usize) -> Vec<String> {
    let ids: Vec<String> = (0..3).map(|i| format!("ok-{round}-{i}")).collect();
    let events: Vec<Value> = ids.iter().map(|id| event(id)).collect();
    api.publish("t", &events);
    ids
}

/// A batch body of 18 events just under 1 MiB each: over the 16 MiB request limit.
fn over_request_limit() -> String {
    let chunk = "z".repeat(MIB - 4096);
    let batch: Vec<Value> = (0..18)
        .map(|i| common::event_with_data(&format!("big-{i}"), json!(chunk)))
        .collect();
    Value::Array(batch).to_string()
}

fn without(field: &str) -> Value {
    let mut value = event(&format!("missing-{field}"));
    value.as_object_mut().expect("object").remove(field);
    value
}

#[test]
fn bad_requests_are_rejected_and_nothing_breaks() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("t", 2);
    let mut expected: Vec<String> = Vec::new();
    expected.extend(publish_valid(&api, 0));

    // Malformed JSON, structured and batch.
    post(&api, "t", STRUCTURED, r#"{"specversion": "1.0", "id":"#)
        .expect_error(400, "invalid_argument");
    post(&api, "t", BATCH, r#"[{"specversion": "1.0"},"#).expect_error(400, "invalid_argument");
    post(&api, "t", "application/json", "not json at all").expect_error(400, "invalid_argument");
    post(&api, "t", STRUCTURED, "42").expect_error(400, "invalid_argument");
    post(&api, "t", STRUCTURED, "").expect_error(400, "invalid_argument");
    post(&api, "t", BATCH, "[]").expect_error(400, "invalid_argument");
    post(&api, "t", BATCH, r#"{"not": "an array"}"#).expect_error(400, "invalid_argument");
    expected.extend(publish_valid(&api, 1));

    // Each required attribute missing, structured and inside a batch.
    for field in ["id", "source", "type", "specversion"] {
        let reply = post(&api, "t", STRUCTURED, without(field).to_string());
        expect_invalid(&reply, field);
        let batch = json!([event("fine-1"), event("fine-2"), without(field)]);
        let reply = post(&api, "t", BATCH, batch.to_string());
        expect_invalid(&reply, &format!("[2].{field}"));
    }
    // Present but malformed attributes.
    let mut bad_version = event("v");
    bad_version["specversion"] = json!("0.3");
    expect_invalid(
        &post(&api, "t", STRUCTURED, bad_version.to_string()),
        "specversion",
    );
    let empty_id = event("");
    expect_invalid(&post(&api, "t", STRUCTURED, empty_id.to_string()), "id");
    let mut numeric_type = event("n");
    numeric_type["type"] = json!(5);
    expect_invalid(
        &post(&api, "t", STRUCTURED, numeric_type.to_string()),
        "type",
    );
    let mut bad_time = event("bt");
    bad_time["time"] = json!("yesterday");
    expect_invalid(&post(&api, "t", STRUCTURED, bad_time.to_string()), "time");
    let mut bad_extension = event("be");
    bad_extension["Bad_Name"] = json!("x");
    expect_invalid(
        &post(&api, "t", STRUCTURED, bad_extension.to_string()),
        "Bad_Name",
    );
    expected.extend(publish_valid(&api, 2));

    // Binary mode without ce-type.
    let headers = [
        ("ce-id", "b1"),
        ("ce-source", "/s"),
        ("ce-specversion", "1.0"),
    ];
    let reply = api.post_raw(
        "/v1/topics/t/events",
        Some("text/plain"),
        b"x".to_vec(),
        &headers,
    );
    // Either "binary mode, `type` missing" or "not binary mode at all".
    if reply.status == 415 {
        reply.expect_error(415, "unsupported_media_type");
    } else {
        expect_invalid(&reply, "type");
    }
    // Wrong content type, no binary-mode headers.
    let reply = api.post_raw(
        "/v1/topics/t/events",
        Some("text/plain"),
        b"hello".to_vec(),
        &[],
    );
    reply.expect_error(415, "unsupported_media_type");
    let reply = api.post_raw(
        "/v1/topics/t/events",
        Some("application/x-www-form-urlencoded"),
        b"a=b".to_vec(),
        &[],
    );
    reply.expect_error(415, "unsupported_media_type");

    // Oversized: just over the 1 MiB default, alone and in a batch; just under is fine.
    let huge = common::event_with_data("huge", json!("x".repeat(MIB + 1)));
    post(&api, "t", STRUCTURED, huge.to_string()).expect_error(413, "payload_too_large");
    let batch = json!([event("small-1"), huge]);
    post(&api, "t", BATCH, batch.to_string()).expect_error(413, "payload_too_large");
    // A body over the request limit (16 MiB by default), even if each event is small
    // enough. On its own connection: the server may answer 413 and close before it has
    // read the whole body, in which case the client can see a reset instead of the 413
    // (`oversized_body_answer_is_delivered` checks the answer itself).
    let one_off = Api::new(server.addr());
    let builder = one_off.raw_builder(
        "/v1/topics/t/events",
        Some(BATCH),
        over_request_limit().into_bytes(),
        &[],
    );
    if let Ok(reply) = one_off.try_send(builder, "POST 18 MiB batch".into()) {
        reply.expect_error(413, "payload_too_large");
    }
    let near = common::event_with_data("near-limit", json!("y".repeat(MIB - 4096)));
    api.publish_one("t", &near);
    expected.push("near-limit".into());
    expected.extend(publish_valid(&api, 3));

    // Unknown topic, invalid topic names, unknown route.
    post(&api, "nope", STRUCTURED, event("u").to_string()).expect_error(404, "topic_not_found");
    api.get_query("/v1/topics/nope/events", &[])
        .expect_error(404, "topic_not_found");
    for path in [
        "/v1/topics/a%20b/events",
        "/v1/topics/%2E%2E%2Fx/events",
        &format!("/v1/topics/{}/events", "z".repeat(250)),
    ] {
        for reply in [
            api.post_raw(
                path,
                Some(STRUCTURED),
                event("n").to_string().into_bytes(),
                &[],
            ),
            api.get(path),
        ] {
            assert!(
                reply.status == 400 || reply.status == 404,
                "{}: expected 400 or 404, got {} {}",
                reply.request,
                reply.status,
                reply.text
            );
        }
    }
    api.get("/v1/no/such/route").expect_error(404, "not_found");

    // Bad fetch parameters.
    let fetch = |query: &[(&str, &str)]| {
        let query: Vec<(&str, String)> = query.iter().map(|(k, v)| (*k, v.to_string())).collect();
        api.get_query("/v1/topics/t/events", &query)
    };
    fetch(&[("offset", "-1")]).expect_error(400, "invalid_argument");
    fetch(&[("offset", "abc")]).expect_error(400, "invalid_argument");
    fetch(&[("partition", "-1")]).expect_error(400, "invalid_argument");
    fetch(&[("partition", "zero")]).expect_error(400, "invalid_argument");
    fetch(&[("max", "many")]).expect_error(400, "invalid_argument");
    fetch(&[("wait_ms", "-5")]).expect_error(400, "invalid_argument");
    fetch(&[("from_time", "last tuesday")]).expect_error(400, "invalid_argument");
    let end = api.describe_topic("t")["partition_stats"][0]["end_offset"]
        .as_u64()
        .expect("end_offset");
    fetch(&[("partition", "0"), ("offset", &(end + 10).to_string())])
        .expect_error(416, "offset_out_of_range");
    fetch(&[("partition", "0"), ("offset", &(end + 1).to_string())])
        .expect_error(416, "offset_out_of_range");
    // The end itself is a valid (empty) position.
    let at_end = fetch(&[("partition", "0"), ("offset", &end.to_string())]).expect_status(200);
    assert_eq!(at_end.body["events"], json!([]), "{}", at_end.text);
    for partition in ["2", "99"] {
        let reply = fetch(&[("partition", partition)]);
        assert!(
            reply.status == 400 || reply.status == 404,
            "unknown partition {partition}: expected 400 or 404, got {} {}",
            reply.status,
            reply.text
        );
    }
    let reply = api.post_raw(
        "/v1/topics/t/events?partition=99",
        Some(STRUCTURED),
        event("p99").to_string().into_bytes(),
        &[],
    );
    assert!(
        reply.status == 400 || reply.status == 404,
        "publish to partition 99: expected 400 or 404, got {} {}",
        reply.status,
        reply.text
    );
    expected.extend(publish_valid(&api, 4));

    // Still healthy, and exactly the accepted events are stored.
    let health = api.get("/healthz").expect_status(200);
    assert_eq!(health.body, json!({"status": "ok"}));
    let ready = api.get("/readyz").expect_status(200);
    assert_eq!(ready.body, json!({"status": "ready"}));
    let mut stored: Vec<String> = (0..2)
        .flat_map(|p| api.fetch_all("t", p))
        .map(|r| record_id(&r).to_string())
        .collect();
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected, "only the valid events were written");
    let total: u64 = api.describe_topic("t")["partition_stats"]
        .as_array()
        .expect("partition_stats")
        .iter()
        .map(|s| s["end_offset"].as_u64().expect("end_offset"))
        .sum();
    assert_eq!(
        total as usize,
        expected.len(),
        "no offsets were consumed by rejected requests"
    );
}

/// Reads one HTTP/1.1 response (head and content-length body) from `stream`.
fn read_response(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let count = stream.read(&mut chunk)?;
        if count == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection closed after {} bytes", buffer.len()),
            ));
        }
        buffer.extend_from_slice(&chunk[..count]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let count = stream.read(&mut chunk)?;
        if count == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..count]);
    }
    Ok((head, body))
}

/// The answer to an over-limit body must reach the client, and the connection must
/// then be either usable or announced as closing (`Connection: close`).
#[test]
fn oversized_body_answer_is_delivered() {
    let server = Server::start();
    server.api().create_topic("t", 1);
    let body = over_request_limit().into_bytes();
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let head = format!(
        "POST /v1/topics/t/events HTTP/1.1\r\nhost: {}\r\ncontent-type: {BATCH}\r\n\
         content-length: {}\r\n\r\n",
        server.addr(),
        body.len()
    );
    let mut writer = stream.try_clone().expect("clone stream");
    let sender = thread::spawn(move || {
        writer.write_all(head.as_bytes())?;
        writer.write_all(&body)
    });
    let answer = read_response(&mut stream);
    let sent = sender.join().expect("writer thread");
    let (head, reply) = answer.unwrap_or_else(|e| {
        panic!("no answer to an 18 MiB body ({e}; body write: {sent:?}): the server reset the connection before the client could read its 413")
    });
    assert!(head.starts_with("http/1.1 413"), "{head}");
    let reply: Value = serde_json::from_slice(&reply).expect("JSON error body");
    assert_eq!(reply["error"]["code"], "payload_too_large", "{reply}");
    if !head.contains("connection: close") {
        // The server claims the connection is still usable: it must have read the body.
        let request = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", server.addr());
        let next = stream
            .write_all(request.as_bytes())
            .and_then(|()| read_response(&mut stream));
        match next {
            Ok((next_head, _)) => assert!(next_head.starts_with("http/1.1 200"), "{next_head}"),
            Err(e) => panic!(
                "the 413 did not say `connection: close`, yet the next request on the \
                 connection failed ({e}; body write: {sent:?}); 413 head:\n{head}"
            ),
        }
    }
    server.api().get("/healthz").expect_status(200);
}
