//! Black-box: hostile bytes on the Kafka port close or answer only their own connection,
//! never crash the server, never make it allocate what they claim, and never stop it
//! from serving a well-behaved client at the same time. Also: a topic created over HTTP
//! is in Kafka Metadata.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::Server;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde_json::json;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect to the Kafka port");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
}

/// A v0 request frame (header v1: api key, version, correlation id, client id).
fn frame(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&api_key.to_be_bytes());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&correlation_id.to_be_bytes());
    payload.extend_from_slice(&4i16.to_be_bytes());
    payload.extend_from_slice(b"test");
    payload.extend_from_slice(body);
    let mut out = (payload.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Reads one response frame, or `None` when the server closed the connection.
fn read_response(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).ok()?;
    let length = i32::from_be_bytes(prefix);
    assert!(
        (0..64 << 20).contains(&length),
        "sane response length {length}"
    );
    let mut body = vec![0u8; length as usize];
    stream.read_exact(&mut body).ok()?;
    Some(body)
}

/// ApiVersions v0 round trip: the correlation id comes back with error code 0.
fn api_versions_ok(stream: &mut TcpStream, correlation_id: i32) -> bool {
    if stream
        .write_all(&frame(18, 0, correlation_id, &[]))
        .is_err()
    {
        return false;
    }
    match read_response(stream) {
        Some(body) => {
            let mut b = &body[..];
            b.get_i32() == correlation_id && b.get_i16() == 0 && b.get_i32() > 5
        }
        None => false,
    }
}

/// True once the server has closed `stream` (EOF or reset), within the I/O timeout.
fn is_closed(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 64];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn hostile_frames_are_contained_while_another_client_is_served() {
    let server = Server::start();
    let addr = server.kafka_addr();

    // A well-behaved client keeps talking during the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let good_rounds = Arc::new(AtomicUsize::new(0));
    let good = {
        let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&good_rounds));
        thread::spawn(move || {
            let mut stream = connect(addr);
            let mut correlation = 0;
            while !stop.load(Ordering::Relaxed) {
                correlation += 1;
                assert!(
                    api_versions_ok(&mut stream, correlation),
                    "good client round {correlation}"
                );
                rounds.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // Truncated length prefix, then the client goes away.
    let mut s = connect(addr);
    s.write_all(&[0, 0]).expect("write");
    drop(s);

    // Claimed 2 GiB, and a negative length: closed without reading (or allocating) it.
    for prefix in [i32::MAX, 0x7fff_fff0, -1, i32::MIN] {
        let mut s = connect(addr);
        s.write_all(&prefix.to_be_bytes()).expect("write");
        let _ = s.write_all(&[1u8; 1024]);
        assert!(is_closed(&mut s), "prefix {prefix} closes the connection");
    }

    // Garbage that is well framed: the connection is closed or answered, never hung.
    let mut seed = 0x2545_f491_u32;
    for round in 0..50 {
        let mut s = connect(addr);
        let mut garbage = vec![0u8; 8 + round * 7];
        for b in garbage.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *b = seed as u8;
        }
        // Keep the api key valid half of the time to reach the body decoders.
        if round % 2 == 0 {
            garbage[0] = 0;
            garbage[1] = (round % 20) as u8;
        }
        let mut framed = (garbage.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&garbage);
        s.write_all(&framed).expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("half close");
        assert!(is_closed(&mut s), "garbage round {round} ends");
    }

    // A tiny Metadata v0 request claiming 2^31-1 topics.
    let mut s = connect(addr);
    s.write_all(&frame(3, 0, 1, &i32::MAX.to_be_bytes()))
        .expect("write");
    assert!(is_closed(&mut s), "array bomb closes the connection");

    // Unknown api key, unsupported versions: an error answer, and the connection lives on.
    let mut s = connect(addr);
    s.write_all(&frame(999, 0, 41, &[1, 2, 3])).expect("write");
    assert_eq!(read_response(&mut s).expect("answer"), [0, 0, 0, 41, 0, 35]);
    s.write_all(&frame(3, 99, 42, &[])).expect("write");
    assert_eq!(read_response(&mut s).expect("answer"), [0, 0, 0, 42, 0, 35]);
    s.write_all(&frame(18, 99, 43, &[])).expect("write");
    let body = read_response(&mut s).expect("ApiVersions answers in v0 form");
    let mut b = &body[..];
    assert_eq!((b.get_i32(), b.get_i16()), (43, 35));
    assert!(b.get_i32() > 10, "with the supported ranges");
    assert!(api_versions_ok(&mut s, 44), "same connection still served");

    // Many connections sending half a huge frame at once: memory stays flat.
    let pid = server.pid();
    let before = resident_bytes(pid);
    let streams: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(&(90_i32 << 20).to_be_bytes()).expect("write");
            s.write_all(&[7u8; 64 * 1024]).expect("write");
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let during = resident_bytes(pid);
    drop(streams);
    assert!(
        during < before + (256 << 20),
        "resident memory grew from {before} to {during} bytes"
    );

    let started = Instant::now();
    while good_rounds.load(Ordering::Relaxed) < 20 && started.elapsed() < IO_TIMEOUT {
        thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    good.join().expect("the good client never failed");
    assert!(good_rounds.load(Ordering::Relaxed) >= 20);
    let mut s = connect(addr);
    assert!(api_versions_ok(&mut s, 1), "still serving afterwards");
    assert!(server.is_running());
}

fn metadata(addr: SocketAddr, topics: &[&str], version: i16) -> MetadataResponse {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(version)
        .with_correlation_id(9)
        .with_client_id(Some(StrBytes::from_static_str("test")))
        .encode(&mut body, ApiKey::Metadata.request_header_version(version))
        .expect("header");
    let request_topics = topics
        .iter()
        .map(|t| {
            MetadataRequestTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
        })
        .collect();
    MetadataRequest::default()
        .with_topics(Some(request_topics))
        .with_allow_auto_topic_creation(version < 4)
        .encode(&mut body, version)
        .expect("body");
    let mut framed = BytesMut::new();
    framed.put_i32(body.len() as i32);
    framed.extend_from_slice(&body);
    let mut stream = connect(addr);
    stream.write_all(&framed).expect("write");
    let mut response = Bytes::from(read_response(&mut stream).expect("metadata answer"));
    assert_eq!(response.get_i32(), 9);
    if ApiKey::Metadata.response_header_version(version) >= 1 {
        assert_eq!(response.get_u8(), 0, "no tagged fields");
    }
    MetadataResponse::decode(&mut response, version).expect("decodes")
}

#[test]
fn a_topic_created_over_http_is_in_kafka_metadata() {
    let server = Server::start();
    server
        .api()
        .post_json(
            "/v1/topics",
            &json!({"name": "made-over-http", "partitions": 3}),
        )
        .expect_status(201);
    for version in [4, 9, 12] {
        let response = metadata(server.kafka_addr(), &["made-over-http", "missing"], version);
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(
            response.brokers[0].port,
            i32::from(server.kafka_addr().port())
        );
        let found = &response.topics[0];
        assert_eq!(found.error_code, 0);
        assert_eq!(found.partitions.len(), 3, "v{version}");
        assert_eq!(
            response.topics[1].error_code, 3,
            "UNKNOWN_TOPIC_OR_PARTITION without auto-create"
        );
    }
    // Before v4 Metadata always auto-creates, as Kafka does.
    let response = metadata(server.kafka_addr(), &["made-over-http", "created-by-v1"], 1);
    assert_eq!(
        response.topics[1].partitions.len(),
        1,
        "num.partitions default"
    );
    let topics = server.api().get("/v1/topics").expect_status(200).body;
    assert!(topics.to_string().contains("created-by-v1"), "{topics}");
}
