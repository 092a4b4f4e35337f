//! `herald bench`: Herald's load generator, and the peers' too.
//!
//! One tool drives Herald (embedded in-process, or over HTTP) and the brokers users
//! would pick instead (NATS JetStream through `async-nats`, Redis Streams through
//! `redis`) with the same workload and the same concurrency, so every figure can be
//! put next to the others as a ratio. It also measures the machine's physical limits.
//!
//! - [`args`]: the command line (`herald bench`, `herald bench limits`, `herald bench table`).
//! - [`message`]: the payload layout (send timestamp in the first 8 bytes) and batches.
//! - [`target`]: one module per system; each creates its stream/topic, produces, consumes, replays.
//! - [`workload`]: producers (closed- or open-loop), consumers, replay, progress bar.
//! - [`stats`]: HDR histograms and their percentiles.
//! - [`report`]: the result of one run, as text or JSON.
//! - [`limits`]: disk sequential write, fdatasync latency, loopback TCP, memcpy.
//! - [`table`]: the side-by-side table built from many runs' JSON results.
//!
//! Latency at a target rate is measured open-loop: each batch has a scheduled send
//! time, producers never wait for an acknowledgement before sending the next batch
//! on schedule, and latency is taken from the scheduled time, so a stall shows up in
//! the tail instead of silently slowing the load (coordinated omission).
//!
//! Not here: correctness checks of the brokers (the tests do that), and anything that
//! would run in CI beyond the smoke run.

#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod args;
pub mod limits;
pub mod message;
pub mod report;
pub mod stats;
pub mod table;
pub mod target;
pub mod workload;

pub use args::{BenchAction, BenchCommand, RunArgs, Transport};

/// Runs `herald bench ...`. `json`: print machine-readable results (one JSON object).
pub async fn run(command: BenchCommand, json: bool) -> anyhow::Result<()> {
    match command.action {
        Some(BenchAction::Limits(args)) => {
            let limits = limits::measure(&args).await?;
            if json {
                println!("{}", serde_json::to_string(&limits)?);
            } else {
                print!("{}", limits.to_text());
            }
            Ok(())
        }
        Some(BenchAction::Table(args)) => {
            print!("{}", table::render_files(&args.files)?);
            Ok(())
        }
        None => {
            let report = workload::run(&command.run, !json).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(())
        }
    }
}
