//! Herald through its SDK: embedded (`Herald::open` on a temporary data directory) or
//! HTTP (`Herald::connect`, each producer and consumer with its own connection pool),
//! against `--server-url` or a `herald serve` this module starts and stops.
//!
//! Each message is a CloudEvent (`id` `<producer>-<seq>`, source `/bench`, type
//! `bench`) whose binary data is the payload; keys go in `partitionkey`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::future::BoxFuture;
use herald_client::{
    CloudEvent, Data, FsyncMode, GroupConsumer, Herald, JoinOptions, SeekPosition, TopicConfig,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::args::{Fsync, RunArgs, Storage, Transport};
use crate::message::Batch;
use crate::target::POLL_MESSAGES_MAX;
use crate::workload::Delivered;

/// How long a consumer poll waits for new events.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How often group consumers commit their positions.
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Most events a replay fetch asks for (the broker also caps a fetch at 4 MiB).
const REPLAY_FETCH_MAX: usize = 10_000;

pub struct HeraldTarget {
    transport: Transport,
    /// The embedded broker, or an HTTP client for setup calls.
    admin: Herald,
    url: Option<String>,
    server: Option<Server>,
    topic: Arc<str>,
    partitions: u32,
    /// Holds the data directory of the embedded broker or the started server.
    _dir: tempfile::TempDir,
}

impl HeraldTarget {
    pub async fn connect(args: &RunArgs) -> Result<Self> {
        let dir = match &args.data_dir {
            Some(parent) => {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
                tempfile::Builder::new()
                    .prefix("herald-bench-")
                    .tempdir_in(parent)?
            }
            None => tempfile::Builder::new().prefix("herald-bench-").tempdir()?,
        };
        let (admin, url, server) = match args.transport {
            Transport::Embedded => (Herald::open(dir.path().join("data")).await?, None, None),
            _ => match &args.server_url {
                Some(url) => (Herald::connect(url)?, Some(url.clone()), None),
                None => {
                    let storage = match args.storage {
                        Storage::Local => None,
                        Storage::Jetstream => Some(args.nats_url.as_str()),
                    };
                    let server =
                        start_server(args.server_bin.clone(), dir.path().join("data"), storage)
                            .await?;
                    (
                        Herald::connect(&server.url)?,
                        Some(server.url.clone()),
                        Some(server),
                    )
                }
            },
        };
        Ok(Self {
            transport: args.transport,
            admin,
            url,
            server,
            topic: Arc::from(""),
            partitions: args.partitions,
            _dir: dir,
        })
    }

    pub async fn prepare(&mut self, args: &RunArgs, name: &str) -> Result<()> {
        let mut config = TopicConfig {
            fsync: match args.fsync {
                Fsync::Always => FsyncMode::Always,
                Fsync::Interval => FsyncMode::Interval,
                Fsync::Never => FsyncMode::Never,
            },
            // Large segments: rolling is not what is measured.
            segment_bytes: 1024 * 1024 * 1024,
            ..TopicConfig::with_partitions(args.partitions)
        };
        if let Some(window) = args.dedup_window_ms {
            config.dedup_window_ms = window;
        }
        self.admin
            .create_topic(name, config)
            .await
            .with_context(|| format!("creating topic {name}"))?;
        self.topic = Arc::from(name);
        Ok(())
    }

    /// A handle for one producer or consumer: the shared broker, or a new HTTP client.
    fn handle(&self) -> Result<Herald> {
        match (&self.transport, &self.url) {
            (Transport::Embedded, _) | (_, None) => Ok(self.admin.clone()),
            (_, Some(url)) => Ok(Herald::connect(url)?),
        }
    }

    pub fn producer(&self) -> Result<HeraldProducer> {
        Ok(HeraldProducer {
            herald: self.handle()?,
            topic: self.topic.clone(),
        })
    }

    pub async fn consumer(&self, group: usize) -> Result<HeraldConsumer> {
        let herald = self.handle()?;
        let member = herald
            .join_group(
                &format!("{}-g{group}", self.topic),
                JoinOptions::new(vec![self.topic.to_string()]),
            )
            .await?;
        Ok(HeraldConsumer {
            member,
            last_commit: Instant::now(),
        })
    }

    pub fn reader(&self) -> Result<HeraldReader> {
        Ok(HeraldReader {
            herald: self.handle()?,
            topic: self.topic.clone(),
            next_offsets: vec![0; self.partitions as usize],
            partition: 0,
        })
    }

    /// The Kafka bootstrap address: `--kafka-bootstrap`, or the started server's listener.
    pub fn kafka_bootstrap(&self, args: &RunArgs) -> Option<String> {
        args.kafka_bootstrap
            .clone()
            .or_else(|| self.server.as_ref().and_then(|s| s.kafka.clone()))
    }

    /// The process that runs the broker: this one (embedded) or the started server.
    pub fn broker_pid(&self) -> Option<u32> {
        match (&self.transport, &self.server) {
            (Transport::Embedded, _) => Some(std::process::id()),
            (_, Some(server)) => server.child.id(),
            (_, None) => None,
        }
    }

    /// The current phase's topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub async fn cleanup(&mut self) -> Result<()> {
        if !self.topic.is_empty() {
            self.admin.delete_topic(&self.topic).await?;
        }
        Ok(())
    }

    pub async fn close(mut self) {
        self.admin.close().await;
        if let Some(mut server) = self.server.take() {
            stop_server(&mut server.child).await;
        }
    }
}

/// A `herald serve` this tool started: the process, its HTTP URL and Kafka address.
pub struct Server {
    child: Child,
    pub url: String,
    pub kafka: Option<String>,
}

/// Starts `herald serve` on free loopback ports (HTTP, and Kafka when the binary has
/// the listener), storing topics in JetStream at `jetstream` (a NATS URL) when given;
/// waits for its `herald listening http=... [kafka=...]` line.
async fn start_server(
    bin: Option<PathBuf>,
    data_dir: PathBuf,
    jetstream: Option<&str>,
) -> Result<Server> {
    let bin = match bin {
        Some(b) => b,
        None => std::env::current_exe().context("locating the herald binary")?,
    };
    let mut command = Command::new(&bin);
    command.arg("serve");
    if let Some(url) = jetstream {
        command.args(["--storage", "jetstream", "--nats-url", url]);
    }
    let mut child = command
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--http-addr")
        .arg("127.0.0.1:0")
        .arg("--kafka-addr")
        .arg("127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} serve", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout from herald serve")?;
    let mut lines = BufReader::new(stdout).lines();
    let wait = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("herald listening") {
                return Ok::<_, anyhow::Error>(Some(line));
            }
        }
        Ok(None)
    })
    .await;
    let line = match wait {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => bail!("herald serve exited before listening"),
        Ok(Err(e)) => return Err(e),
        Err(_) => bail!("herald serve did not start listening within 30 s"),
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(name))
            .map(str::to_string)
    };
    let http = field("http=").context("no http= in the server's listening line")?;
    Ok(Server {
        child,
        url: format!("http://{http}"),
        kafka: field("kafka="),
    })
}

/// SIGTERM (graceful: flush and fsync), then kill after 10 s.
async fn stop_server(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

pub struct HeraldProducer {
    herald: Herald,
    topic: Arc<str>,
}

impl HeraldProducer {
    pub fn send(&self, batch: Batch) -> BoxFuture<'static, Result<()>> {
        let herald = self.herald.clone();
        let topic = self.topic.clone();
        Box::pin(async move {
            let events = (0..batch.count)
                .map(|i| {
                    let mut event = CloudEvent::new(
                        format!("{}-{}", batch.producer, batch.first_seq + i as u64),
                        "/bench",
                        "bench",
                    );
                    event.data = Some(Data::Binary(batch.payload.clone()));
                    match batch.key(i) {
                        Some(key) => event.with_extension("partitionkey", key),
                        None => event,
                    }
                })
                .collect();
            herald.publish_batch(&topic, events).await?;
            Ok(())
        })
    }
}

fn deliver_event(sink: &mut Delivered, event: &CloudEvent) {
    match &event.data {
        Some(Data::Binary(bytes)) => sink.message(bytes),
        _ => sink.message(&[]),
    }
}

pub struct HeraldConsumer {
    member: GroupConsumer,
    last_commit: Instant,
}

impl HeraldConsumer {
    pub async fn poll(&mut self, sink: &mut Delivered) -> Result<()> {
        let records = self.member.poll(POLL_MESSAGES_MAX, POLL_WAIT).await?;
        for record in &records {
            deliver_event(sink, &record.event);
        }
        if self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.member.commit().await?;
            self.last_commit = Instant::now();
        }
        Ok(())
    }

    pub async fn finish(self) {
        let _ = self.member.commit().await;
        let _ = self.member.leave().await;
    }
}

pub struct HeraldReader {
    herald: Herald,
    topic: Arc<str>,
    next_offsets: Vec<u64>,
    partition: usize,
}

impl HeraldReader {
    pub async fn poll(&mut self, sink: &mut Delivered) -> Result<()> {
        let partition = self.partition % self.next_offsets.len().max(1);
        self.partition = self.partition.wrapping_add(1);
        let Some(offset) = self.next_offsets.get_mut(partition) else {
            bail!("topic has no partitions");
        };
        let page = self
            .herald
            .fetch(
                &self.topic,
                partition as u32,
                SeekPosition::Offset(*offset),
                REPLAY_FETCH_MAX,
                Duration::ZERO,
            )
            .await?;
        for record in &page.events {
            deliver_event(sink, &record.event);
        }
        *offset = page.next_offset;
        Ok(())
    }
}
