//! Running a workload: producers, consumers, replay, the progress bar.
//!
//! A run has one or two phases, each on a fresh topic/stream: with `--rate-fraction`
//! a closed-loop calibration phase measures the maximum publish rate, then the
//! measured phase runs open-loop at that fraction of it. With `--replay-bytes` the
//! topic is filled first and then read from its start.
//!
//! Producers: closed-loop (no `--rate`) sends the next batch as soon as one of its
//! `--inflight` slots is free, and latency counts from the actual send. Open-loop
//! (`--rate`) sends batch `k` of producer `p` at `start + (k + p/N) * interval`
//! whether or not earlier acks came back (up to [`OPEN_LOOP_INFLIGHT_MAX`] batches
//! outstanding), and latency counts from that scheduled time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::RunArgs;
use crate::message::{self, Batch};
use crate::report::{ReplayReport, Report};
use crate::stats::{self, Latency};
use crate::target::{Consumer, Producer, Target};

/// Batches one open-loop producer may have outstanding before it waits.
pub const OPEN_LOOP_INFLIGHT_MAX: usize = 4096;
/// A producer gives up after this many failed sends in a row.
const CONSECUTIVE_ERRORS_MAX: u64 = 100;
/// A replay with no progress for this long stops.
const REPLAY_STALL: Duration = Duration::from_secs(15);

/// Counters shared with the progress bar.
#[derive(Default)]
pub struct Live {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub stop_consumers: AtomicBool,
}

/// What a consumer saw: message count, payload bytes, publish→deliver latency.
pub struct Delivered {
    live: Arc<Live>,
    pub count: u64,
    pub bytes: u64,
    unflushed: u64,
    record_latency: bool,
    pub latency: Histogram<u64>,
    pub last_at: Option<Instant>,
}

impl Delivered {
    pub fn new(live: Arc<Live>, record_latency: bool) -> Self {
        Self {
            live,
            count: 0,
            bytes: 0,
            unflushed: 0,
            record_latency,
            latency: stats::histogram(),
            last_at: None,
        }
    }

    /// One delivered message with this payload.
    pub fn message(&mut self, payload: &[u8]) {
        self.count += 1;
        self.unflushed += 1;
        self.bytes += payload.len() as u64;
        if self.record_latency {
            if let Some(ns) = message::latency_since_stamp(payload) {
                stats::record_ns(&mut self.latency, ns);
            }
        }
    }

    /// Publishes the count to the shared counters.
    fn flush(&mut self) {
        if self.unflushed > 0 {
            self.live
                .delivered
                .fetch_add(self.unflushed, Ordering::Relaxed);
            self.unflushed = 0;
            self.last_at = Some(Instant::now());
        }
    }
}

/// Runs the workload `args` describes and returns its report.
pub async fn run(args: &RunArgs, progress: bool) -> Result<Report> {
    args.validate()?;
    message::epoch();
    let mut target = Target::connect(args).await?;
    let result = run_on(&mut target, args, progress).await;
    target.close().await;
    result
}

async fn run_on(target: &mut Target, args: &RunArgs, progress: bool) -> Result<Report> {
    let base = format!("bench-{}-{}", std::process::id(), message::now_stamp());
    if let Some(bytes) = args.replay_bytes {
        return replay(target, args, bytes, &format!("{base}-replay"), progress).await;
    }
    let (rate, calibrated) = match args.rate_fraction {
        Some(fraction) => {
            let name = format!("{base}-max");
            let max = phase(target, args, None, &name, progress, "max").await?;
            let max_rate = max.publish_msgs_per_s;
            anyhow::ensure!(max_rate > 0.0, "the calibration phase published nothing");
            (Some(max_rate * fraction), Some(max_rate))
        }
        None => (args.rate, None),
    };
    let mut report = phase(target, args, rate, &format!("{base}-run"), progress, "run").await?;
    report.calibrated_max_msgs_per_s = calibrated;
    Ok(report)
}

/// One phase on a fresh topic: consumers join, producers run, consumers drain.
async fn phase(
    target: &mut Target,
    args: &RunArgs,
    rate: Option<f64>,
    name: &str,
    progress: bool,
    title: &str,
) -> Result<Report> {
    target.prepare(args, name).await?;
    let result = produce_and_consume(target, args, rate, progress, title).await;
    let cleanup = target.cleanup().await;
    let report = result?;
    cleanup.context("deleting the benchmark topic")?;
    Ok(report)
}

async fn produce_and_consume(
    target: &Target,
    args: &RunArgs,
    rate: Option<f64>,
    progress: bool,
    title: &str,
) -> Result<Report> {
    let live = Arc::new(Live::default());
    let mut consumers = Vec::new();
    for group in 0..args.groups {
        for member in 0..args.consumers {
            let consumer = target.consumer(group, member, args.consumers).await?;
            consumers.push(tokio::spawn(consume(
                consumer,
                live.clone(),
                true,
                args.consume_rate,
            )));
        }
    }
    let plan = Plan::new(args, rate);
    let mut producers = Vec::new();
    for index in 0..args.producers {
        let producer = target.producer().await?;
        producers.push(tokio::spawn(produce(
            index,
            producer,
            plan.clone(),
            live.clone(),
        )));
    }
    let rss = RssSampler::start(target.broker_pid());
    let bar = Bar::start(progress, title, args, live.clone());
    let mut published = ProducerOutcome::new();
    for handle in producers {
        published.merge(handle.await.context("producer task")?);
    }
    let mut delivered = Delivered::new(live.clone(), true);
    if !consumers.is_empty() {
        let expected = published.acked * args.groups as u64;
        let drain = Instant::now() + Duration::from_secs_f64(args.drain_seconds);
        while live.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        live.stop_consumers.store(true, Ordering::Relaxed);
        for handle in consumers {
            let outcome = handle.await.context("consumer task")?;
            merge_delivered(&mut delivered, &outcome);
        }
    }
    bar.finish();
    let mut report = Report::from_phase(
        args,
        rate,
        plan.start,
        &published,
        (!delivered_is_empty(args)).then_some(&delivered),
    );
    (report.rss_idle_mb, report.rss_peak_mb) = rss.finish();
    Ok(report)
}

fn delivered_is_empty(args: &RunArgs) -> bool {
    args.groups == 0
}

fn merge_delivered(into: &mut Delivered, from: &Delivered) {
    into.count += from.count;
    into.bytes += from.bytes;
    stats::merge(&mut into.latency, &from.latency);
    into.last_at = into.last_at.max(from.last_at);
}

/// Fills a topic with `bytes` of payload, then reads it all from the start.
async fn replay(
    target: &mut Target,
    args: &RunArgs,
    bytes: u64,
    name: &str,
    progress: bool,
) -> Result<Report> {
    let count = bytes.div_ceil(args.message_bytes as u64).max(1);
    let fill = RunArgs {
        count: Some(count),
        duration: Some(args.duration.unwrap_or(600.0)),
        groups: 0,
        rate: None,
        ..args.clone()
    };
    target.prepare(args, name).await?;
    let result = async {
        let mut report = produce_and_consume(target, &fill, None, progress, "fill").await?;
        let live = Arc::new(Live::default());
        let reader = target.reader().await?;
        let bar = Bar::start(progress, "replay", &fill, live.clone());
        let started = Instant::now();
        let read = read_all(reader, live, report.published).await?;
        bar.finish();
        let elapsed = read.last_at.unwrap_or(started) - started;
        report.replay = Some(ReplayReport::new(read.count, read.bytes, elapsed));
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    let cleanup = target.cleanup().await;
    let report = result?;
    cleanup.context("deleting the benchmark topic")?;
    Ok(report)
}

async fn read_all(mut reader: Consumer, live: Arc<Live>, expected: u64) -> Result<Delivered> {
    let mut sink = Delivered::new(live, false);
    let mut progress_at = Instant::now();
    while sink.count < expected && progress_at.elapsed() < REPLAY_STALL {
        let before = sink.count;
        reader.poll(&mut sink).await?;
        sink.flush();
        if sink.count > before {
            progress_at = Instant::now();
        }
    }
    reader.finish().await;
    Ok(sink)
}

async fn consume(
    mut consumer: Consumer,
    live: Arc<Live>,
    record_latency: bool,
    rate: Option<f64>,
) -> Delivered {
    let mut sink = Delivered::new(live.clone(), record_latency);
    let mut errors = 0u64;
    let started = Instant::now();
    while !live.stop_consumers.load(Ordering::Relaxed) {
        if let Some(rate) = rate {
            // Take no more than `rate` messages/s: wait until the count is due.
            let due = started + Duration::from_secs_f64(sink.count as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        match consumer.poll(&mut sink).await {
            Ok(()) => errors = 0,
            Err(e) => {
                errors += 1;
                if errors == 1 || errors == CONSECUTIVE_ERRORS_MAX {
                    eprintln!("herald bench: consumer error: {e:#}");
                }
                if errors >= CONSECUTIVE_ERRORS_MAX {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        sink.flush();
    }
    consumer.finish().await;
    sink
}

/// When and how much the producers send.
#[derive(Clone)]
struct Plan {
    start: Instant,
    deadline: Instant,
    /// Open loop: time between two batches of one producer.
    interval: Option<Duration>,
    producers: usize,
    batch: usize,
    message_bytes: usize,
    keys: u64,
    inflight_max: usize,
    /// Messages not yet claimed by any producer (`--count`).
    remaining: Arc<AtomicU64>,
}

impl Plan {
    fn new(args: &RunArgs, rate: Option<f64>) -> Self {
        let start = Instant::now() + Duration::from_millis(20);
        let interval = rate.map(|r| {
            Duration::from_secs_f64(args.batch as f64 * args.producers as f64 / r.max(1e-9))
        });
        Self {
            start,
            deadline: start + args.duration_limit(),
            interval,
            producers: args.producers,
            batch: args.batch,
            message_bytes: args.message_bytes,
            keys: args.keys,
            inflight_max: if interval.is_some() {
                OPEN_LOOP_INFLIGHT_MAX
            } else {
                args.inflight
            },
            remaining: Arc::new(AtomicU64::new(args.count.unwrap_or(u64::MAX))),
        }
    }

    /// Claims up to one batch of the message budget; 0 when it is spent.
    fn claim(&self) -> usize {
        let want = self.batch as u64;
        let mut claimed = 0;
        let _ = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                claimed = left.min(want);
                Some(left - claimed)
            });
        claimed as usize
    }

    /// When batch `k` of producer `index` is due (open loop).
    fn due(&self, index: usize, k: u64) -> Option<Instant> {
        self.interval.map(|iv| {
            let phase = iv.mul_f64(index as f64 / self.producers as f64);
            self.start + phase + iv.mul_f64(k as f64)
        })
    }
}

/// What the producers achieved.
pub struct ProducerOutcome {
    pub acked: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub ack_latency: Histogram<u64>,
    pub last_ack: Option<Instant>,
    consecutive_errors: u64,
}

impl ProducerOutcome {
    fn new() -> Self {
        Self {
            acked: 0,
            failed: 0,
            first_error: None,
            ack_latency: stats::histogram(),
            last_ack: None,
            consecutive_errors: 0,
        }
    }

    fn merge(&mut self, other: ProducerOutcome) {
        self.acked += other.acked;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        stats::merge(&mut self.ack_latency, &other.ack_latency);
        self.last_ack = self.last_ack.max(other.last_ack);
    }

    pub fn ack_latency(&self) -> Option<Latency> {
        Latency::of(&self.ack_latency)
    }
}

type Sent = (Instant, usize, Result<()>);

/// Accounts for one finished send.
fn complete(out: &mut ProducerOutcome, live: &Live, (scheduled, count, result): Sent) {
    let now = Instant::now();
    match result {
        Ok(()) => {
            stats::record(&mut out.ack_latency, now - scheduled);
            out.acked += count as u64;
            out.last_ack = Some(now);
            live.published.fetch_add(count as u64, Ordering::Relaxed);
            out.consecutive_errors = 0;
        }
        Err(e) => {
            out.failed += count as u64;
            out.first_error.get_or_insert_with(|| format!("{e:#}"));
            out.consecutive_errors += 1;
        }
    }
}

async fn produce(index: usize, producer: Producer, plan: Plan, live: Arc<Live>) -> ProducerOutcome {
    let mut out = ProducerOutcome::new();
    let mut inflight = FuturesUnordered::new();
    tokio::time::sleep_until(plan.start.into()).await;
    let mut seq = 0u64;
    for k in 0u64.. {
        let due = plan.due(index, k);
        if due.unwrap_or_else(Instant::now) >= plan.deadline {
            break;
        }
        let count = plan.claim();
        if count == 0 {
            break;
        }
        while inflight.len() >= plan.inflight_max {
            if let Some(done) = inflight.next().await {
                complete(&mut out, &live, done);
            }
        }
        if let Some(due) = due {
            let sleep = tokio::time::sleep_until(due.into());
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    biased;
                    Some(done) = inflight.next(), if !inflight.is_empty() => {
                        complete(&mut out, &live, done);
                    }
                    _ = &mut sleep => break,
                }
            }
        }
        let scheduled = due.unwrap_or_else(Instant::now);
        let batch = Batch {
            producer: index,
            first_seq: seq,
            count,
            keys: plan.keys,
            payload: message::payload(plan.message_bytes, scheduled),
            scheduled,
        };
        seq += count as u64;
        let send = producer.send(batch);
        inflight.push(async move { (scheduled, count, send.await) });
        if out.consecutive_errors >= CONSECUTIVE_ERRORS_MAX {
            break;
        }
    }
    while let Some(done) = inflight.next().await {
        complete(&mut out, &live, done);
    }
    out
}

/// Samples the broker process's resident set size every 100 ms (Linux `/proc`).
struct RssSampler {
    idle_kb: Option<u64>,
    peak_kb: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: Option<u32>) -> Self {
        let idle_kb = pid.and_then(rss_kb);
        let peak_kb = Arc::new(AtomicU64::new(idle_kb.unwrap_or(0)));
        let task = pid.map(|pid| {
            let peak = peak_kb.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    match rss_kb(pid) {
                        Some(kb) => {
                            peak.fetch_max(kb, Ordering::Relaxed);
                        }
                        None => return,
                    }
                }
            })
        });
        Self {
            idle_kb,
            peak_kb,
            task,
        }
    }

    /// (idle, peak) in MB (10^6 bytes), when measured.
    fn finish(self) -> (Option<f64>, Option<f64>) {
        if let Some(task) = self.task {
            task.abort();
        }
        let mb = |kb: u64| kb as f64 * 1024.0 / 1e6;
        (
            self.idle_kb.map(mb),
            self.idle_kb
                .map(|_| mb(self.peak_kb.load(Ordering::Relaxed))),
        )
    }
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The progress bar (stderr; hidden when not a terminal or with `--json`).
struct Bar {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Bar {
    fn start(show: bool, title: &str, args: &RunArgs, live: Arc<Live>) -> Self {
        let by_count = args.duration.is_none() && args.count.is_some();
        let length = match (by_count, args.count) {
            (true, Some(c)) => c,
            _ => args.duration_limit().as_millis() as u64,
        };
        let target = if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(length), target);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>6} [{elapsed_precise}] {wide_bar} {msg}")
        {
            bar.set_style(style);
        }
        bar.set_prefix(title.to_string());
        let ticking = bar.clone();
        let started = Instant::now();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let published = live.published.load(Ordering::Relaxed);
                let delivered = live.delivered.load(Ordering::Relaxed);
                let seconds = started.elapsed().as_secs_f64().max(1e-3);
                ticking.set_position(if by_count {
                    published
                } else {
                    started.elapsed().as_millis() as u64
                });
                ticking.set_message(format!(
                    "pub {published} ({:.0}/s)  del {delivered} ({:.0}/s)",
                    published as f64 / seconds,
                    delivered as f64 / seconds
                ));
            }
        });
        Self { bar, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}
