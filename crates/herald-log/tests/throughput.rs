//! Append throughput under `FsyncPolicy::Always` with concurrent appenders
//! (group commit). Ignored by default; run it with
//! `cargo test --release -p herald-log --test throughput -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_log::{LogConfig, PartitionLog, Record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check; run with --release --ignored --nocapture"]
async fn always_fsync_with_16_appenders() {
    let appenders = 16;
    let record_bytes = 1024;
    let duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    let value = Bytes::from(vec![7u8; record_bytes]);
    let started = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|_| {
            let log = Arc::clone(&log);
            let value = value.clone();
            tokio::spawn(async move {
                let mut appended = 0u64;
                while started.elapsed() < duration {
                    let record = Record {
                        timestamp_ms: 0,
                        key: None,
                        value: value.clone(),
                    };
                    log.append(vec![record]).await.expect("append");
                    appended += 1;
                }
                appended
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("join");
    }
    let seconds = started.elapsed().as_secs_f64();
    let fsyncs = log.fsync_count();
    println!(
        "{appenders} appenders, {record_bytes}-byte records, fsync Always: {:.0} appends/s, \
         {:.1} MiB/s, {fsyncs} fsyncs ({:.1} appends per fsync)",
        total as f64 / seconds,
        total as f64 * record_bytes as f64 / seconds / (1024.0 * 1024.0),
        total as f64 / fsyncs.max(1) as f64,
    );
}
