//! The command line of `herald bench`. Every option has a default that runs a short
//! publish-only benchmark against an embedded broker.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// `herald bench [OPTIONS]` runs a workload; `herald bench limits|table` do the rest.
#[derive(Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchCommand {
    #[command(subcommand)]
    pub action: Option<BenchAction>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug, Clone)]
pub enum BenchAction {
    /// Measure the machine's limits: sequential write MB/s and fdatasync latency of a
    /// directory's disk, loopback TCP MB/s, memcpy GB/s.
    Limits(LimitsArgs),
    /// Print one side-by-side table from JSON results (`--json` output of runs and of
    /// `limits`, one object per line or per file).
    Table(TableArgs),
}

#[derive(Args, Debug, Clone)]
pub struct LimitsArgs {
    /// Directory whose disk is measured (the data directory).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Bytes written for the sequential-write probe.
    #[arg(long, default_value_t = 512 * 1024 * 1024)]
    pub write_bytes: u64,
    /// fdatasync calls for the sync-latency probe.
    #[arg(long, default_value_t = 1000)]
    pub syncs: u32,
    /// Seconds each of the TCP and memcpy probes runs.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
}

#[derive(Args, Debug, Clone)]
pub struct TableArgs {
    /// Result files (JSON lines).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Which system the load goes to, and how.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Herald in this process (`Herald::open`), no network.
    Embedded,
    /// Herald over its HTTP API (`--server-url`, or a `herald serve` the tool starts).
    Http,
    /// Herald over the Kafka protocol (needs the Kafka listener).
    Kafka,
    /// NATS JetStream (file storage) through `async-nats`.
    Nats,
    /// Redis Streams (XADD, pipelined) through `redis`.
    Redis,
}

impl Transport {
    /// The name used in reports: `herald-embedded`, `nats`, ...
    pub fn system(self) -> &'static str {
        match self {
            Transport::Embedded => "herald-embedded",
            Transport::Http => "herald-http",
            Transport::Kafka => "herald-kafka",
            Transport::Nats => "nats",
            Transport::Redis => "redis",
        }
    }

    pub fn is_herald(self) -> bool {
        matches!(
            self,
            Transport::Embedded | Transport::Http | Transport::Kafka
        )
    }
}

/// Where the `herald serve` the tool starts keeps its topics.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// Herald's own log in its data directory (the default).
    #[default]
    Local,
    /// NATS JetStream at `--nats-url` (`herald serve --storage jetstream`).
    Jetstream,
}

/// When an acknowledged publish is on disk.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// fdatasync before the ack (Herald `always`, Redis `appendfsync always`).
    Always,
    /// fsync on a timer (Herald `interval` 100 ms, Redis `appendfsync everysec`).
    Interval,
    /// No fsync before the ack (Herald `never`, Redis `everysec`, NATS 2.9's default).
    Never,
}

impl Fsync {
    /// `fsync` when every ack waits for the disk, `no-fsync` otherwise.
    pub fn durability(self) -> &'static str {
        match self {
            Fsync::Always => "fsync",
            Fsync::Interval | Fsync::Never => "no-fsync",
        }
    }
}

/// What `herald bench` runs.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// System and transport under load.
    #[arg(long, value_enum, default_value = "embedded")]
    pub transport: Transport,
    /// Concurrent producers (each its own connection).
    #[arg(long, default_value_t = 4)]
    pub producers: usize,
    /// Consumer groups, each receiving every message (fan-out). 0: publish only.
    #[arg(long, default_value_t = 0)]
    pub groups: usize,
    /// Consumers per group (they share the group's partitions).
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Payload bytes per message (at least 8: the send timestamp).
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Messages per publish request (HTTP batch, NATS acks awaited together, Redis pipeline).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Publish requests in flight per producer at full speed.
    #[arg(long, default_value_t = 1)]
    pub inflight: usize,
    /// Distinct keys (cycled); 0: no key. Herald `partitionkey`, NATS subject
    /// `bench.k<n>`, Redis field `k`.
    #[arg(long, default_value_t = 0)]
    pub keys: u64,
    /// Herald topic partitions.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// Target rate, messages/s over all producers (open loop). Without it: as fast as acks allow.
    #[arg(long)]
    pub rate: Option<f64>,
    /// First measure the maximum rate, then run open-loop at this fraction of it (e.g. 0.5).
    #[arg(long, conflicts_with = "rate")]
    pub rate_fraction: Option<f64>,
    /// Seconds to run (default 5 unless `--count` is given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Messages to publish in all (stops at whichever of duration and count comes first).
    #[arg(long)]
    pub count: Option<u64>,
    /// Replay: publish this many payload bytes first, then read them all from the start.
    #[arg(long)]
    pub replay_bytes: Option<u64>,
    /// Storage of the Herald under load (http and kafka transports): `local` (its own log)
    /// or `jetstream` (the started `herald serve` stores topics in JetStream at
    /// `--nats-url`; with `--server-url` it only labels the run). Acks then mean JetStream's
    /// (no fsync on NATS 2.9), so the run is reported as `never`.
    #[arg(long, value_enum, default_value = "local")]
    pub storage: Storage,
    /// Fsync policy: Herald creates the topic with it; Redis gets `CONFIG SET appendfsync`.
    /// NATS (2.9) cannot sync per write: its runs are `never` whatever is asked.
    #[arg(long, value_enum, default_value = "always")]
    pub fsync: Fsync,
    /// Herald topic `dedup_window_ms` (0 turns publish deduplication off). Default: Herald's.
    #[arg(long)]
    pub dedup_window_ms: Option<u64>,
    /// Parent directory for the data of the embedded broker or the started server.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// HTTP transport: URL of a running Herald. Without it the tool starts `herald serve`.
    #[arg(long)]
    pub server_url: Option<String>,
    /// HTTP transport: the `herald` binary to start (default: this executable).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Kafka transport: bootstrap address of a running Herald's Kafka listener (with
    /// `--server-url` for topic creation). Without both, the tool starts `herald serve`.
    #[arg(long)]
    pub kafka_bootstrap: Option<String>,
    /// NATS server URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Redis server URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// A name for this run in reports and tables (e.g. `w1`).
    #[arg(long)]
    pub label: Option<String>,
    /// Most messages/s each consumer takes (to test a producer outrunning consumers).
    #[arg(long)]
    pub consume_rate: Option<f64>,
    /// Seconds consumers may take to catch up after the producers stop.
    #[arg(long, default_value_t = 10.0)]
    pub drain_seconds: f64,
}

impl RunArgs {
    /// The name used in reports: the transport's, plus `-jetstream` for Herald on JetStream.
    pub fn system(&self) -> String {
        match self.storage {
            Storage::Jetstream if self.transport.is_herald() => {
                format!("{}-jetstream", self.transport.system())
            }
            _ => self.transport.system().to_string(),
        }
    }

    /// How long producers run at most.
    pub fn duration_limit(&self) -> Duration {
        let seconds = match (self.duration, self.count) {
            (Some(d), _) => d,
            (None, Some(_)) => 600.0,
            (None, None) => 5.0,
        };
        Duration::from_secs_f64(seconds.max(0.01))
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.producers >= 1, "--producers must be at least 1");
        anyhow::ensure!(self.batch >= 1, "--batch must be at least 1");
        anyhow::ensure!(self.inflight >= 1, "--inflight must be at least 1");
        anyhow::ensure!(
            self.message_bytes >= crate::message::STAMP_BYTES,
            "--message-bytes must be at least {}",
            crate::message::STAMP_BYTES
        );
        anyhow::ensure!(
            self.groups == 0 || self.consumers >= 1,
            "--consumers must be at least 1"
        );
        if let Some(rate) = self.rate {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
        }
        if let Some(f) = self.rate_fraction {
            anyhow::ensure!(f > 0.0 && f <= 1.0, "--rate-fraction must be in (0, 1]");
        }
        anyhow::ensure!(self.partitions >= 1, "--partitions must be at least 1");
        anyhow::ensure!(
            self.storage == Storage::Local
                || matches!(self.transport, Transport::Http | Transport::Kafka),
            "--storage jetstream needs --transport http or kafka (a herald serve on JetStream)"
        );
        if let Some(rate) = self.consume_rate {
            anyhow::ensure!(rate > 0.0, "--consume-rate must be positive");
        }
        Ok(())
    }
}
