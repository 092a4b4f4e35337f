//! [`Report`]: the result of one `herald bench` run, printed as text or JSON.
//!
//! Throughput counts payload bytes only (not ids, keys or framing), in MB = 10^6
//! bytes. Publish-ack latency is per publish request (batch); publish→deliver latency
//! is per message. Both are from the scheduled send time in open-loop runs.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::args::{Fsync, RunArgs, Storage, Transport};
use crate::stats::Latency;
use crate::workload::{Delivered, ProducerOutcome};

/// The result of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always `"run"`: tells runs from limits in a results file.
    pub kind: String,
    pub label: Option<String>,
    /// `herald-embedded`, `herald-http`, `herald-http-jetstream`, `nats`, `redis`.
    pub system: String,
    pub transport: Transport,
    /// Where the Herald under load kept its topics (reports before this field: `local`).
    #[serde(default)]
    pub storage: Storage,
    pub fsync: Fsync,
    /// `fsync` (acks wait for the disk) or `no-fsync`.
    pub durability: String,
    pub producers: usize,
    pub groups: usize,
    pub consumers_per_group: usize,
    pub message_bytes: usize,
    pub batch: usize,
    pub inflight: usize,
    pub keys: u64,
    pub partitions: u32,
    /// Herald topic dedup window, when set on the command line.
    pub dedup_window_ms: Option<u64>,
    /// Open loop: the target rate (messages/s over all producers).
    pub target_rate: Option<f64>,
    /// The maximum measured first, with `--rate-fraction`.
    pub calibrated_max_msgs_per_s: Option<f64>,
    pub published: u64,
    pub publish_failed: u64,
    pub first_error: Option<String>,
    pub publish_seconds: f64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub publish_ack_latency: Option<Latency>,
    pub delivered: Option<u64>,
    pub deliver_msgs_per_s: Option<f64>,
    pub deliver_mb_per_s: Option<f64>,
    pub end_to_end_latency: Option<Latency>,
    pub replay: Option<ReplayReport>,
    /// Broker RSS (MB) before the producers started and its peak during the phase
    /// (Herald embedded or a server the tool started; none for peers).
    pub rss_idle_mb: Option<f64>,
    pub rss_peak_mb: Option<f64>,
}

/// Reading a filled topic back from its start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayReport {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
}

impl ReplayReport {
    pub fn new(messages: u64, bytes: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            messages,
            bytes,
            seconds,
            msgs_per_s: messages as f64 / seconds,
            mb_per_s: bytes as f64 / seconds / 1e6,
        }
    }
}

impl Report {
    pub fn from_phase(
        args: &RunArgs,
        rate: Option<f64>,
        start: Instant,
        published: &ProducerOutcome,
        delivered: Option<&Delivered>,
    ) -> Self {
        let seconds = |end: Option<Instant>| {
            end.map_or(0.0, |e| e.saturating_duration_since(start).as_secs_f64())
        };
        let per_s = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let publish_seconds = seconds(published.last_ack);
        let bytes = args.message_bytes as f64;
        let publish_msgs_per_s = per_s(published.acked, publish_seconds);
        let deliver_seconds = delivered.map(|d| seconds(d.last_at));
        let transport = args.transport;
        let fsync = if transport == Transport::Nats || args.storage == Storage::Jetstream {
            // nats-server 2.9 has no per-write sync (see target::nats); Herald on
            // JetStream acknowledges what JetStream acknowledged.
            Fsync::Never
        } else {
            args.fsync
        };
        Self {
            kind: "run".into(),
            label: args.label.clone(),
            system: args.system(),
            transport,
            storage: args.storage,
            fsync,
            durability: fsync.durability().into(),
            producers: args.producers,
            groups: args.groups,
            consumers_per_group: args.consumers,
            message_bytes: args.message_bytes,
            batch: args.batch,
            inflight: args.inflight,
            keys: args.keys,
            partitions: args.partitions,
            dedup_window_ms: args.dedup_window_ms,
            target_rate: rate,
            calibrated_max_msgs_per_s: None,
            published: published.acked,
            publish_failed: published.failed,
            first_error: published.first_error.clone(),
            publish_seconds,
            publish_msgs_per_s,
            publish_mb_per_s: publish_msgs_per_s * bytes / 1e6,
            publish_ack_latency: published.ack_latency(),
            delivered: delivered.map(|d| d.count),
            deliver_msgs_per_s: delivered
                .zip(deliver_seconds)
                .map(|(d, s)| per_s(d.count, s)),
            deliver_mb_per_s: delivered
                .zip(deliver_seconds)
                .map(|(d, s)| per_s(d.bytes, s) / 1e6),
            end_to_end_latency: delivered.and_then(|d| Latency::of(&d.latency)),
            replay: None,
            rss_idle_mb: None,
            rss_peak_mb: None,
        }
    }

    /// Human-readable summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {}: {} producers, {} group(s) x {} consumer(s), {} B messages, batch {}, {} keys, fsync {:?}{}",
            self.label.as_deref().unwrap_or("bench"),
            self.system,
            self.producers,
            self.groups,
            self.consumers_per_group,
            self.message_bytes,
            self.batch,
            self.keys,
            self.fsync,
            match self.target_rate {
                Some(r) => format!(", open loop at {r:.0} msg/s"),
                None => ", closed loop (max)".into(),
            }
        );
        if let Some(max) = self.calibrated_max_msgs_per_s {
            let _ = writeln!(out, "  calibrated max: {max:.0} msg/s");
        }
        let _ = writeln!(
            out,
            "  publish: {} msgs in {:.2} s = {:.0} msg/s, {:.1} MB/s{}",
            self.published,
            self.publish_seconds,
            self.publish_msgs_per_s,
            self.publish_mb_per_s,
            if self.publish_failed > 0 {
                format!(
                    " ({} failed: {})",
                    self.publish_failed,
                    self.first_error.as_deref().unwrap_or("?")
                )
            } else {
                String::new()
            }
        );
        if let Some(l) = &self.publish_ack_latency {
            let _ = writeln!(out, "  publish-ack latency (per batch): {}", l.to_text());
        }
        if let (Some(n), Some(r), Some(mb)) = (
            self.delivered,
            self.deliver_msgs_per_s,
            self.deliver_mb_per_s,
        ) {
            let _ = writeln!(out, "  delivered: {n} msgs = {r:.0} msg/s, {mb:.1} MB/s");
        }
        if let Some(l) = &self.end_to_end_latency {
            let _ = writeln!(out, "  publish->deliver latency: {}", l.to_text());
        }
        if let (Some(idle), Some(peak)) = (self.rss_idle_mb, self.rss_peak_mb) {
            let _ = writeln!(out, "  broker RSS: {idle:.1} MB idle, {peak:.1} MB peak");
        }
        if let Some(r) = &self.replay {
            let _ = writeln!(
                out,
                "  replay: {} msgs, {:.1} MB in {:.2} s = {:.0} msg/s, {:.1} MB/s",
                r.messages,
                r.bytes as f64 / 1e6,
                r.seconds,
                r.msgs_per_s,
                r.mb_per_s
            );
        }
        out
    }
}
