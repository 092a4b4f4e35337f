//! Criterion: `PartitionLog::append_blocking` of 1 KiB records, one caller, batches
//! of 1 and 100 records, fsync `never` and `always` (one fdatasync per batch: one
//! caller gets no group commit). Measures the writer hand-off, batch encoding, CRC,
//! the write and the sync.
//!
//! `cargo bench -p herald-log --bench append`

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_log::{FsyncPolicy, LogConfig, PartitionLog, Record};

const RECORD_BYTES: usize = 1024;

fn records(count: usize) -> Vec<Record> {
    let value = Bytes::from(vec![0xa5u8; RECORD_BYTES]);
    (0..count)
        .map(|i| Record {
            timestamp_ms: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{}", i % 100))),
            value: value.clone(),
        })
        .collect()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_1k_records");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    let cases = [
        ("never", FsyncPolicy::Never, 1),
        ("never", FsyncPolicy::Never, 100),
        ("always", FsyncPolicy::Always, 100),
    ];
    for (name, fsync, batch) in cases {
        let Ok(dir) = tempfile::tempdir() else {
            eprintln!("no temporary directory; skipping");
            return;
        };
        let config = LogConfig {
            fsync,
            segment_bytes_max: 256 * 1024 * 1024,
            ..LogConfig::default()
        };
        let log = match PartitionLog::open(dir.path(), config) {
            Ok(log) => log,
            Err(e) => {
                eprintln!("cannot open a log: {e}; skipping");
                return;
            }
        };
        let batch_records = records(batch);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new(format!("fsync_{name}"), batch),
            &batch_records,
            |b, batch_records| {
                b.iter(|| {
                    log.append_blocking(batch_records.clone())
                        .map(|o| o.last_offset)
                })
            },
        );
        let _ = log.close();
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
