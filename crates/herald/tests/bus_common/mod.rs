//! Helpers for the event-bus black-box tests (`tests/bus_*.rs`): subscription and
//! queue calls over HTTP, a tiny webhook receiver, an SSE line reader and signature
//! checking done independently of the server's code.
//!
//! Owns nothing of the server: everything goes through `docs/http-api.md`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{Api, Reply};

pub fn create_subscription(api: &Api, definition: &Value) -> Value {
    api.post_json("/v1/subscriptions", definition)
        .expect_status(201)
        .body
}

pub fn queue_subscription(api: &Api, name: &str, topic: &str) -> Value {
    create_subscription(
        api,
        &json!({"name": name, "topic": topic, "target": {"type": "queue"}}),
    )
}

pub fn describe(api: &Api, name: &str) -> Value {
    api.get(&format!("/v1/subscriptions/{name}"))
        .expect_status(200)
        .body
}

/// Pulls; returns the messages.
pub fn pull(api: &Api, name: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Vec<Value> {
    let reply = api
        .post_json(
            &format!("/v1/subscriptions/{name}/pull"),
            &json!({"max": max, "visibility_timeout_ms": visibility_ms, "wait_ms": wait_ms}),
        )
        .expect_status(200);
    reply.body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("pull: no messages array in {}", reply.text))
        .clone()
}

pub fn receipts(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["receipt"].as_str().expect("receipt").to_string())
        .collect()
}

pub fn message_id(message: &Value) -> String {
    message["event"]["id"]
        .as_str()
        .expect("event id")
        .to_string()
}

/// Acks; returns the outcome per receipt.
pub fn ack(api: &Api, name: &str, receipts: &[String]) -> Vec<String> {
    let reply = api
        .post_json(
            &format!("/v1/subscriptions/{name}/ack"),
            &json!({ "receipts": receipts }),
        )
        .expect_status(200);
    outcomes(&reply)
}

pub fn outcomes(reply: &Reply) -> Vec<String> {
    reply.body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {}", reply.text))
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome").to_string())
        .collect()
}

/// Pulls until `count` messages arrived (or panics after `timeout`); acks them when
/// `ack_them`. Returns them.
pub fn drain(api: &Api, name: &str, count: usize, ack_them: bool, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "got {} of {count} messages from {name} within {timeout:?}",
            out.len()
        );
        let messages = pull(api, name, 500, 30_000, 200);
        if ack_them && !messages.is_empty() {
            let outcome = ack(api, name, &receipts(&messages));
            assert!(outcome.iter().all(|o| o == "acked"), "{outcome:?}");
        }
        out.extend(messages);
    }
    out
}

/// Ids in a queue right now (pulled with a short lease, not acked).
pub fn peek_ids(api: &Api, name: &str) -> Vec<String> {
    let messages = pull(api, name, 1000, 1, 0);
    messages.iter().map(message_id).collect()
}

pub fn publish_data(api: &Api, topic: &str, id: &str, ty: &str, data: Value) {
    api.publish_one(
        topic,
        &json!({"specversion": "1.0", "id": id, "source": "/bus-tests", "type": ty, "data": data}),
    );
}

// ---- webhook receiver ----

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

type Behaviour = dyn Fn(&HashMap<String, String>, &[u8]) -> u16 + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1:0 that answers each POST with the status
/// `behaviour` picks and records every request.
pub struct Receiver {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    pub fn start(
        behaviour: impl Fn(&HashMap<String, String>, &[u8]) -> u16 + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let requests = Arc::clone(&requests);
                    let behaviour = Arc::clone(&behaviour);
                    thread::spawn(move || serve_connection(stream, &requests, &*behaviour));
                }
            });
        }
        Receiver {
            addr,
            requests,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_connection(stream: TcpStream, requests: &Mutex<Vec<Received>>, behaviour: &Behaviour) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = behaviour(&headers, &body);
        requests.lock().expect("requests").push(Received {
            headers,
            body,
            status,
        });
        let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Checks `X-Herald-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
/// the way a receiver would (independently of the server's code).
pub fn signature_valid(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = Some(t.to_string()),
            Some(("v1", v)) => signature = Some(v.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v)) = (timestamp, signature) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    if (now - t.parse::<i64>().unwrap_or(0)).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v
}

// ---- SSE ----

/// Reads an SSE response in a background thread; yields `(event, data)` pairs.
pub struct SseReader {
    pub events: mpsc::Receiver<(String, String)>,
}

impl SseReader {
    pub fn open(base: &str, path: &str) -> SseReader {
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .expect("client");
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .expect("open SSE");
        assert_eq!(response.status().as_u16(), 200, "SSE {path}");
        let (sender, events) = mpsc::channel();
        thread::spawn(move || {
            let reader = BufReader::new(response);
            let mut event = String::from("message");
            let mut data = String::new();
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if line.is_empty() {
                    if !data.is_empty() && sender.send((event.clone(), data.clone())).is_err() {
                        return;
                    }
                    event = "message".into();
                    data.clear();
                } else if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            let _ = sender.send(("closed".into(), String::new()));
        });
        SseReader { events }
    }

    /// The next `event` message's data as JSON, within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<(String, String)> {
        self.events.recv_timeout(timeout).ok()
    }
}

/// Waits until the subscription's queue holds `count` messages in total (its end offset).
pub fn wait_queued(api: &Api, name: &str, count: u64) {
    crate::common::wait_for(
        &format!("{count} messages queued for {name}"),
        Duration::from_secs(15),
        || {
            let d = describe(api, name);
            (d["stats"]["queue"]["end_offset"].as_u64() >= Some(count)).then_some(())
        },
    );
}
