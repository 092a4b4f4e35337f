//! Helpers shared by the integration tests: seeding, record generation, expected
//! batch layout, and reading a whole log.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use herald_log::batch::encoded_batch_len;
use herald_log::segment::parse_log_file_name;
use herald_log::{PartitionLog, Record, StoredRecord};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// Seed for every random test: `HERALD_TEST_SEED` if set, else a fixed default, so
/// any failure replays. Printed so a failing run names it.
pub fn seed() -> u64 {
    let seed = std::env::var("HERALD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x4845_5241_4c44);
    eprintln!("random seed: {seed} (replay with HERALD_TEST_SEED={seed})");
    seed
}

pub fn proptest_config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(seed()),
        failure_persistence: None,
        ..Config::default()
    }
}

pub fn record_strategy() -> impl Strategy<Value = Record> {
    let key = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12));
    let value = proptest::collection::vec(any::<u8>(), 0..200);
    (-1_000i64..1_000_000, key, value).prop_map(|(timestamp_ms, key, value)| Record {
        timestamp_ms,
        key: key.map(Bytes::from),
        value: Bytes::from(value),
    })
}

/// Batches of 1 to 5 records.
pub fn batches_strategy(count: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Vec<Record>>> {
    proptest::collection::vec(proptest::collection::vec(record_strategy(), 1..5), count)
}

/// The records `batches` should read back as, with their offsets from 0.
pub fn expected_records(batches: &[Vec<Record>]) -> Vec<StoredRecord> {
    batches
        .iter()
        .flatten()
        .zip(0u64..)
        .map(|(r, offset)| StoredRecord {
            offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
        })
        .collect()
}

pub fn read_everything(log: &PartitionLog) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    let mut next = log.start_offset();
    while next < log.next_offset() {
        let records = log.read(next, 7, 500).expect("read");
        assert!(!records.is_empty(), "no progress at offset {next}");
        next = records.last().map_or(next, |r| r.offset + 1);
        out.extend(records);
    }
    out
}

/// Segment `.log` files in `dir`, oldest first, with their base offsets.
pub fn segment_logs(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut logs: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            let entry = e.expect("entry");
            let base = parse_log_file_name(entry.file_name().to_str()?)?;
            Some((base, entry.path()))
        })
        .collect();
    logs.sort();
    logs
}

/// For the batches stored in the segment starting at `segment_base`: each batch's
/// (first offset, byte range in the segment file).
pub fn batch_layout(
    batches: &[Vec<Record>],
    segment_base: u64,
) -> Vec<(u64, std::ops::Range<u64>)> {
    let mut layout = Vec::new();
    let mut offset = 0u64;
    let mut position = 0u64;
    for batch in batches {
        if offset >= segment_base {
            let len = encoded_batch_len(batch);
            layout.push((offset, position..position + len));
            position += len;
        }
        offset += batch.len() as u64;
    }
    layout
}
