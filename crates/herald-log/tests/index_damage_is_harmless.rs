//! Property: index files are a cache. Whatever happens to a sealed segment's `.index`
//! or `.timeindex` (deleted, emptied, cut at any byte, one bit flipped, zeroed), the
//! log opens, every offset reads back exactly as written (never `Corrupt`, never
//! other data) and every timestamp lookup gives the same answer as a brute-force scan.
//! Appends then continue at the right offset.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use herald_log::segment::{segment_file_name, INDEX_EXTENSION, TIME_INDEX_EXTENSION};
use herald_log::{FsyncPolicy, LogConfig, PartitionLog, StoredRecord};
use proptest::prelude::*;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        index_interval_bytes: 96,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

#[derive(Clone, Debug)]
enum Damage {
    Delete,
    /// Cut the file to this fraction (in 1/10_000) of its length (0 empties it).
    Truncate(u64),
    /// Flip bit `bit` of the byte at this fraction of the length.
    FlipBit(u64, u8),
    /// Overwrite the file with zeros, keeping its length.
    Zero,
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        Just(Damage::Delete),
        Just(Damage::Zero),
        (0u64..10_000).prop_map(Damage::Truncate),
        (0u64..10_000, 0u8..8).prop_map(|(at, bit)| Damage::FlipBit(at, bit)),
    ]
}

fn apply(path: &Path, damage: &Damage) {
    if let Damage::Delete = damage {
        std::fs::remove_file(path).expect("delete");
        return;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let len = file.metadata().expect("stat").len();
    match *damage {
        Damage::Delete => {}
        Damage::Truncate(fraction) => file.set_len(len * fraction / 10_000).expect("truncate"),
        Damage::FlipBit(_, _) if len == 0 => {}
        Damage::FlipBit(fraction, bit) => {
            let at = (len * fraction / 10_000).min(len - 1);
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at).expect("read");
            byte[0] ^= 1 << bit;
            file.write_all_at(&byte, at).expect("write");
        }
        Damage::Zero => file
            .write_all_at(&vec![0u8; len as usize], 0)
            .expect("zero"),
    }
}

/// The first offset whose record timestamp is >= `timestamp_ms`, else the end.
fn brute_force_lookup(records: &[StoredRecord], timestamp_ms: i64) -> u64 {
    records
        .iter()
        .find(|r| r.timestamp_ms >= timestamp_ms)
        .map_or(records.len() as u64, |r| r.offset)
}

proptest! {
    #![proptest_config(common::proptest_config(96))]

    #[test]
    fn index_damage_costs_time_never_data(
        batches in common::batches_strategy(20..40),
        monotonic in proptest::bool::ANY,
        segment_pick in 0usize..100,
        in_time_index in proptest::bool::ANY,
        damage in damage_strategy(),
    ) {
        // Timestamps either as generated (out of order) or rising, as most logs are.
        let mut batches = batches;
        if monotonic {
            let mut next = 0i64;
            for record in batches.iter_mut().flatten() {
                next += record.timestamp_ms.rem_euclid(50);
                record.timestamp_ms = next;
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = PartitionLog::open(dir.path(), config()).expect("open");
            for batch in &batches {
                log.append_blocking(batch.clone()).expect("append");
            }
            log.close().expect("close");
        }
        let logs = common::segment_logs(dir.path());
        prop_assume!(logs.len() >= 2);
        let sealed = &logs[..logs.len() - 1];
        let (base, _) = sealed[segment_pick % sealed.len()];
        let extension = if in_time_index { TIME_INDEX_EXTENSION } else { INDEX_EXTENSION };
        apply(&dir.path().join(segment_file_name(base, extension)), &damage);

        let expected = common::expected_records(&batches);
        let log = PartitionLog::open(dir.path(), config()).expect("open after damage");
        prop_assert!(log.recovery_report().gaps.is_empty());
        prop_assert_eq!(log.next_offset(), expected.len() as u64);
        for original in &expected {
            let records = log.read(original.offset, 1, usize::MAX).expect("read");
            prop_assert_eq!(records.len(), 1);
            prop_assert_eq!(&records[0], original);
        }
        prop_assert_eq!(&common::read_everything(&log), &expected);
        let mut probes: Vec<i64> = expected
            .iter()
            .flat_map(|r| [r.timestamp_ms - 1, r.timestamp_ms, r.timestamp_ms + 1])
            .collect();
        probes.extend([i64::MIN, i64::MAX]);
        for probe in probes {
            let found = log.offset_for_timestamp(probe).expect("lookup");
            prop_assert_eq!(found, brute_force_lookup(&expected, probe), "timestamp {}", probe);
        }
        let outcome = log.append_blocking(batches[0].clone()).expect("append after damage");
        prop_assert_eq!(outcome.base_offset, expected.len() as u64);
    }
}
