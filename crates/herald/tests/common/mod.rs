//! Black-box test harness: runs the real `herald` binary and talks to it over HTTP.
//!
//! Owns: starting a server in its own temporary data directory on free ports (port 0 for
//! HTTP and Kafka, the ports are read from the one `herald listening http=... kafka=...`
//! line on stdout), stopping it
//! (SIGKILL, SIGTERM), restarting it on the same data directory, JSON request helpers,
//! deadline-based waiting and seeded randomness.
//! Does not own: any knowledge of the server's internals; everything goes through the
//! process boundary and the HTTP contract in `docs/http-api.md`.
//! Invariants: every `Server` has its own data directory and port, so tests run in
//! parallel; a `Server` that is dropped is killed, and if the test is panicking its
//! stderr is printed so the failure can be diagnosed.

#![allow(dead_code)]

pub mod nats;
pub mod persistent;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// How long a server may take to print its listening line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of one ordinary HTTP request (long polls in tests stay well below it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the server's stderr is kept for failure messages.
const STDERR_TAIL_BYTES_MAX: usize = 64 * 1024;

/// Path of the binary under test, built by cargo for integration tests.
pub fn herald_bin() -> &'static str {
    env!("CARGO_BIN_EXE_herald")
}

/// A running (or stopped) `herald serve` process with its own data directory.
pub struct Server {
    /// The JetStream server behind this Herald when the suite runs on JetStream; it
    /// outlives restarts of the Herald process (declared first: dropped before `root`).
    nats: Option<nats::NatsServer>,
    /// Holds `data_dir`; removed when the server is dropped.
    root: tempfile::TempDir,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
    addr: SocketAddr,
    kafka_addr: Option<SocketAddr>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    api: Api,
}

impl Server {
    /// Starts a server in a fresh temporary directory.
    pub fn start() -> Server {
        Server::start_with_args(&[])
    }

    /// Starts a server with extra `herald serve` arguments (e.g. `--config FILE`).
    pub fn start_with_args(extra_args: &[&str]) -> Server {
        let root = tempfile::Builder::new()
            .prefix("herald-test-")
            .tempdir()
            .expect("create temporary directory");
        // The data directory is a child of `root`, so a path escaping the data
        // directory by one level is still inside `root` and can be detected.
        let data_dir = root.path().join("data");
        std::fs::create_dir(&data_dir).expect("create data directory");
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let nats =
            (nats::jetstream_suite() && !extra_args.iter().any(|a| a == "--storage")).then(|| {
                let nats = nats::NatsServer::start_temp();
                extra_args.extend(["--storage".into(), "jetstream".into()]);
                extra_args.extend(["--nats-url".into(), nats.url()]);
                nats
            });
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let (child, listening) = spawn_server(&data_dir, &extra_args, &stderr_tail);
        Server {
            root,
            data_dir,
            extra_args,
            child: Some(child),
            addr: listening.http,
            kafka_addr: listening.kafka,
            stderr_tail,
            api: Api::new(listening.http),
            nats,
        }
    }

    /// The Kafka listener's address (panics if the server runs with `--no-kafka`).
    pub fn kafka_addr(&self) -> SocketAddr {
        self.kafka_addr
            .expect("the server serves the Kafka protocol")
    }

    /// The HTTP client bound to this server's current address.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.api.base.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding the data directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last bytes the server wrote to stderr (its logs).
    pub fn stderr_tail(&self) -> String {
        let tail = self.stderr_tail.lock().expect("stderr lock");
        String::from_utf8_lossy(&tail).into_owned()
    }

    /// SIGKILL: the process dies at once, nothing is flushed.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("server is running");
        child.kill().expect("send SIGKILL");
        child.wait().expect("reap killed server");
    }

    /// SIGTERM, then waits (bounded) for the exit and returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGTERM)
    }

    /// SIGINT, then waits (bounded) for the exit and returns its status.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGINT)
    }

    fn signal_and_wait(&mut self, signal: libc::c_int) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not exit within {SHUTDOWN_TIMEOUT:?} after signal {signal}\n\
                     --- server stderr (tail) ---\n{}",
                    self.stderr_tail()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the server again on the same data directory (new port). The server
    /// must be stopped first (`kill9` or `terminate`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() needs a stopped server");
        let (child, listening) = spawn_server(&self.data_dir, &self.extra_args, &self.stderr_tail);
        self.child = Some(child);
        self.addr = listening.http;
        self.kafka_addr = listening.kafka;
        self.api = Api::new(listening.http);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- herald server stderr (tail, data dir {}) ---\n{}",
                self.data_dir.display(),
                self.stderr_tail()
            );
        }
    }
}

/// The addresses from the listening line.
#[derive(Debug, Clone, Copy)]
struct Listening {
    http: SocketAddr,
    kafka: Option<SocketAddr>,
}

fn spawn_server(
    data_dir: &Path,
    extra_args: &[String],
    stderr_tail: &Arc<Mutex<Vec<u8>>>,
) -> (Child, Listening) {
    // A free Kafka port too, unless the test chose (parallel servers must not share 9092).
    let kafka_args: &[&str] = if extra_args
        .iter()
        .any(|a| a == "--no-kafka" || a.starts_with("--kafka-addr"))
    {
        &[]
    } else {
        &["--kafka-addr", "127.0.0.1:0"]
    };
    let mut child = Command::new(herald_bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--http-addr")
        .arg("127.0.0.1:0")
        .args(kafka_args)
        .args(extra_args)
        .env_remove("HERALD_DATA_DIR")
        .env_remove("HERALD_HTTP_ADDR")
        .env_remove("HERALD_CONFIG")
        .env_remove("HERALD_MAX_EVENT_BYTES")
        .env_remove("HERALD_MAX_REQUEST_BYTES")
        .env_remove("HERALD_LOG_FORMAT")
        .env_remove("HERALD_KAFKA_ADDR")
        .env_remove("HERALD_KAFKA_ADVERTISED_ADDR")
        .env_remove("HERALD_KAFKA_AUTO_CREATE_TOPICS")
        .env_remove("HERALD_KAFKA_DEFAULT_PARTITIONS")
        .env_remove("HERALD_KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS")
        .env_remove("HERALD_OTLP_ENDPOINT")
        .env_remove("HERALD_STORAGE")
        .env_remove("HERALD_NATS_URL")
        .env_remove("HERALD_NATS_REPLICAS")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald serve");
    {
        let mut tail = stderr_tail.lock().expect("stderr lock");
        tail.extend_from_slice(b"\n=== herald serve started ===\n");
    }
    let stderr = child.stderr.take().expect("piped stderr");
    let tail = Arc::clone(stderr_tail);
    thread::spawn(move || drain_stderr(stderr, &tail));

    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(addr) = parse_listening_line(&line) {
                    let _ = sender.send(Ok(addr));
                    sent = true;
                } else {
                    let _ = sender.send(Err(line));
                }
            }
        }
    });

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut other_stdout = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(remaining) {
            Ok(Ok(listening)) => return (child, listening),
            Ok(Err(line)) => other_stdout.push(line),
            Err(error) => {
                let status = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                // Give the stderr drain a moment to catch the last lines.
                thread::sleep(Duration::from_millis(50));
                let tail =
                    String::from_utf8_lossy(&stderr_tail.lock().expect("stderr lock")).into_owned();
                panic!(
                    "herald serve did not print `herald listening http=...` within \
                     {STARTUP_TIMEOUT:?} ({error:?}; exit status {status:?})\n\
                     other stdout lines: {other_stdout:?}\n--- server stderr ---\n{tail}"
                );
            }
        }
    }
}

fn drain_stderr(mut stderr: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buffer = [0u8; 8192];
    loop {
        match stderr.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(count) => {
                let mut tail = tail.lock().expect("stderr lock");
                tail.extend_from_slice(&buffer[..count]);
                if tail.len() > STDERR_TAIL_BYTES_MAX {
                    let excess = tail.len() - STDERR_TAIL_BYTES_MAX;
                    tail.drain(..excess);
                }
            }
        }
    }
}

/// Parses `herald listening http=127.0.0.1:PORT [kafka=127.0.0.1:PORT]`.
fn parse_listening_line(line: &str) -> Option<Listening> {
    let rest = line.trim().strip_prefix("herald listening")?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|field| field.strip_prefix(name))
            .and_then(|addr| addr.parse().ok())
    };
    Some(Listening {
        http: field("http=")?,
        kafka: field("kafka="),
    })
}

/// One HTTP response: status, headers and the body (parsed as JSON when it is JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON, `Value::Null` if it is empty or not JSON.
    pub body: Value,
    /// `METHOD path`, for failure messages.
    pub request: String,
}

impl Reply {
    /// Panics with the whole reply unless the status is `status`.
    pub fn expect_status(self, status: u16) -> Reply {
        assert_eq!(
            self.status, status,
            "{}: expected status {status}, got {} with body {}",
            self.request, self.status, self.text
        );
        self
    }

    /// Checks an error reply: status, `error.code`, and returns the error object.
    pub fn expect_error(&self, status: u16, code: &str) -> &Value {
        assert_eq!(
            self.status, status,
            "{}: expected {status} {code}, got {} with body {}",
            self.request, self.status, self.text
        );
        let error = &self.body["error"];
        assert_eq!(
            error["code"].as_str(),
            Some(code),
            "{}: expected error code {code:?}, got body {}",
            self.request,
            self.text
        );
        assert!(
            error["message"].is_string(),
            "{}: error without a message: {}",
            self.request,
            self.text
        );
        error
    }

    /// The `error.field` of an error reply, if any.
    pub fn error_field(&self) -> Option<&str> {
        self.body["error"]["field"].as_str()
    }
}

/// Acknowledgement of one published event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ack {
    pub id: String,
    pub partition: u32,
    pub offset: u64,
}

/// A blocking JSON client for one server address.
#[derive(Clone)]
pub struct Api {
    client: reqwest::blocking::Client,
    pub base: String,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api::with_timeout(addr, Some(REQUEST_TIMEOUT))
    }

    /// A client whose requests time out after `timeout` (`None`: never, for streams).
    pub fn with_timeout(addr: SocketAddr, timeout: Option<Duration>) -> Api {
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .expect("build HTTP client");
        Api {
            client,
            base: format!("http://{addr}"),
        }
    }

    /// The same server, every request carrying `Authorization: <value>`.
    pub fn with_authorization(&self, value: &str) -> Api {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(value).expect("header value"),
        );
        let client = reqwest::blocking::Client::builder()
            .timeout(Some(REQUEST_TIMEOUT))
            .default_headers(headers)
            .build()
            .expect("build HTTP client");
        Api {
            client,
            base: self.base.clone(),
        }
    }

    /// The same server, with `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Api {
        self.with_authorization(&format!("Bearer {token}"))
    }

    /// Sends `method path` with an optional JSON body.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut builder = self.client.request(method.clone(), self.url(path));
        if let Some(body) = body {
            builder = builder
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        self.send(builder, format!("{method} {path}"))
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; transport errors are returned, not panicked on.
    pub fn try_send(
        &self,
        builder: reqwest::blocking::RequestBuilder,
        request: String,
    ) -> Result<Reply, reqwest::Error> {
        let response = builder.send()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            text,
            body,
            request,
        })
    }

    fn send(&self, builder: reqwest::blocking::RequestBuilder, request: String) -> Reply {
        match self.try_send(builder, request.clone()) {
            Ok(reply) => reply,
            Err(error) => panic!("{request}: transport error: {error:?}"),
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path)), format!("GET {path}"))
    }

    /// GET with query parameters (values are percent-encoded).
    pub fn get_query(&self, path: &str, query: &[(&str, String)]) -> Reply {
        let builder = self.client.get(self.url(path)).query(query);
        self.send(builder, format!("GET {path} {query:?}"))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        let builder = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string());
        self.send(
            builder,
            format!("POST {path} {}", abbreviate(&body.to_string())),
        )
    }

    /// POST with an explicit content type, raw body and extra headers.
    pub fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let request = format!(
            "POST {path} content-type={content_type:?} headers={headers:?} body={}",
            abbreviate(&String::from_utf8_lossy(&body))
        );
        self.send(self.raw_builder(path, content_type, body, headers), request)
    }

    pub fn raw_builder(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::blocking::RequestBuilder {
        let mut builder = self.client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.send(self.client.delete(self.url(path)), format!("DELETE {path}"))
    }

    // ---- topics ----

    /// Creates a topic with `partitions` partitions (fsync default) and returns its description.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Value {
        self.create_topic_with(&json!({"name": name, "partitions": partitions}))
    }

    pub fn create_topic_with(&self, body: &Value) -> Value {
        self.post_json("/v1/topics", body).expect_status(201).body
    }

    pub fn describe_topic(&self, name: &str) -> Value {
        self.get(&format!("/v1/topics/{name}"))
            .expect_status(200)
            .body
    }

    /// Names from `GET /v1/topics`.
    pub fn topic_names(&self) -> Vec<String> {
        let body = self.get("/v1/topics").expect_status(200).body;
        body["topics"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /v1/topics: no `topics` array in {body}"))
            .iter()
            .map(|t| t["name"].as_str().expect("topic name").to_string())
            .collect()
    }

    // ---- publish ----

    /// Publishes a batch (`application/cloudevents-batch+json`) and returns the acks.
    pub fn publish(&self, topic: &str, events: &[Value]) -> Vec<Ack> {
        let reply = self
            .post_raw(
                &format!("/v1/topics/{topic}/events"),
                Some("application/cloudevents-batch+json"),
                Value::Array(events.to_vec()).to_string().into_bytes(),
                &[],
            )
            .expect_status(200);
        let acks = parse_acks(&reply);
        assert_eq!(
            acks.len(),
            events.len(),
            "one ack per event: {}",
            reply.text
        );
        for (ack, event) in acks.iter().zip(events) {
            assert_eq!(
                Some(ack.id.as_str()),
                event["id"].as_str(),
                "acks in request order"
            );
        }
        acks
    }

    /// Publishes one structured event (`application/cloudevents+json`).
    pub fn publish_one(&self, topic: &str, event: &Value) -> Ack {
        let reply = self
            .post_raw(
                &format!("/v1/topics/{topic}/events"),
                Some("application/cloudevents+json"),
                event.to_string().into_bytes(),
                &[],
            )
            .expect_status(200);
        let mut acks = parse_acks(&reply);
        assert_eq!(acks.len(), 1, "one ack: {}", reply.text);
        acks.remove(0)
    }

    // ---- fetch ----

    /// `GET /v1/topics/{topic}/events` with the given query; expects 200.
    pub fn fetch(&self, topic: &str, query: &[(&str, String)]) -> Value {
        self.get_query(&format!("/v1/topics/{topic}/events"), query)
            .expect_status(200)
            .body
    }

    /// Every record of one partition, from its start to its current end.
    pub fn fetch_all(&self, topic: &str, partition: u32) -> Vec<Value> {
        let mut records = Vec::new();
        let first = self.fetch(
            topic,
            &[
                ("partition", partition.to_string()),
                ("max", "10000".into()),
            ],
        );
        let mut page = first;
        loop {
            let events = page["events"]
                .as_array()
                .unwrap_or_else(|| panic!("fetch: no `events` array in {page}"));
            let count = events.len();
            records.extend(events.iter().cloned());
            let next = page["next_offset"].as_u64().expect("next_offset");
            let end = page["end_offset"].as_u64().expect("end_offset");
            if next >= end || count == 0 {
                assert!(next >= end, "empty page before the end: {page}");
                return records;
            }
            page = self.fetch(
                topic,
                &[
                    ("partition", partition.to_string()),
                    ("offset", next.to_string()),
                    ("max", "10000".into()),
                ],
            );
        }
    }

    // ---- groups ----

    pub fn join_group(&self, group: &str, body: &Value) -> Value {
        self.post_json(&format!("/v1/groups/{group}/members"), body)
            .expect_status(200)
            .body
    }

    pub fn describe_group(&self, group: &str) -> Value {
        self.get(&format!("/v1/groups/{group}"))
            .expect_status(200)
            .body
    }
}

/// The `events` acks of a publish reply.
pub fn parse_acks(reply: &Reply) -> Vec<Ack> {
    reply.body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no `events` array in {}", reply.request, reply.text))
        .iter()
        .map(|ack| Ack {
            id: ack["id"].as_str().expect("ack id").to_string(),
            partition: u32::try_from(ack["partition"].as_u64().expect("ack partition"))
                .expect("partition fits u32"),
            offset: ack["offset"].as_u64().expect("ack offset"),
        })
        .collect()
}

fn abbreviate(text: &str) -> String {
    const LENGTH_MAX: usize = 300;
    if text.len() <= LENGTH_MAX {
        return text.to_string();
    }
    let mut end = LENGTH_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

// ---- events ----

/// A minimal valid structured CloudEvent.
pub fn event(id: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/herald/tests",
        "type": "test.event",
    })
}

/// A CloudEvent with JSON data.
pub fn event_with_data(id: &str, data: Value) -> Value {
    let mut event = event(id);
    event["data"] = data;
    event
}

/// A CloudEvent with a partition key.
pub fn keyed_event(id: &str, key: &str) -> Value {
    let mut event = event(id);
    event["partitionkey"] = Value::String(key.to_string());
    event
}

/// The `event.id` of a fetched record.
pub fn record_id(record: &Value) -> &str {
    record["event"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("record without event.id: {record}"))
}

pub fn record_offset(record: &Value) -> u64 {
    record["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("record without offset: {record}"))
}

pub fn record_partition(record: &Value) -> u32 {
    let partition = record["partition"]
        .as_u64()
        .unwrap_or_else(|| panic!("record without partition: {record}"));
    u32::try_from(partition).expect("partition fits u32")
}

// ---- waiting and randomness ----

/// Polls `condition` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The test seed: `HERALD_TEST_SEED` if set, else derived from the clock. Printed so a
/// failing run can be replayed with `HERALD_TEST_SEED=<seed>`.
pub fn seed() -> u64 {
    let seed = match std::env::var("HERALD_TEST_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("HERALD_TEST_SEED={text:?} is not a u64")),
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos();
            (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
        }
    };
    eprintln!("seed={seed} (replay with HERALD_TEST_SEED={seed})");
    seed
}

// ---- CLI ----

/// Output of one CLI run.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl CliOutput {
    /// Panics unless the command exited 0.
    pub fn success(self) -> CliOutput {
        assert!(
            self.status.success(),
            "`{}` failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.command,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Every non-empty stdout line parsed as JSON.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!(
                        "`{}`: stdout line is not JSON ({e}): {line:?}",
                        self.command
                    )
                })
            })
            .collect()
    }
}

/// Runs `herald --url URL ARGS...` with `stdin` as its input, killing it after `timeout`.
pub fn run_cli(url: &str, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> CliOutput {
    let command = format!("herald --url {url} {}", args.join(" "));
    let mut child = Command::new(herald_bin())
        .arg("--url")
        .arg(url)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{command}`: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        thread::spawn(move || {
            use std::io::Write;
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = read_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_background(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for CLI") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = stdout.join().expect("stdout reader");
            let stderr = stderr.join().expect("stderr reader");
            panic!(
                "`{command}` did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                abbreviate(&stdout),
                stderr
            );
        }
        thread::sleep(Duration::from_millis(5));
    };
    CliOutput {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        command,
    }
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
