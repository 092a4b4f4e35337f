//! Property: a bit flipped anywhere in a sealed segment (its `.log` or `.index`
//! file) does not stop `open()`; a read returns either the original records or
//! `Corrupt`, never damaged data, and every offset of a damaged batch reads as
//! `Corrupt`; damage to the index alone never makes a record unreadable. Appends
//! keep working.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use herald_log::segment::{segment_file_name, INDEX_EXTENSION};
use herald_log::{FsyncPolicy, LogConfig, LogError, PartitionLog};
use proptest::prelude::*;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        index_interval_bytes: 128,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

fn flip(path: &std::path::Path, fraction: u64, bit: u8) -> Option<u64> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let len = file.metadata().expect("stat").len();
    if len == 0 {
        return None;
    }
    let at = (len * fraction / 10_000).min(len - 1);
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).expect("read");
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, at).expect("write");
    Some(at)
}

proptest! {
    #![proptest_config(common::proptest_config(96))]

    #[test]
    fn sealed_damage_is_reported_not_served(
        batches in common::batches_strategy(20..40),
        segment_pick in 0usize..100,
        in_index in proptest::bool::weighted(0.25),
        fraction in 0u64..10_000,
        bit in 0u8..8,
    ) {
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
        let (base, log_path) = &sealed[segment_pick % sealed.len()];
        let expected = common::expected_records(&batches);
        // Offsets of the batch hit by the flip (only known for a flip in the log).
        let mut damaged = 0..0;
        if in_index {
            flip(&dir.path().join(segment_file_name(*base, INDEX_EXTENSION)), fraction, bit);
        } else if let Some(at) = flip(log_path, fraction, bit) {
            let layout = common::batch_layout(&batches, *base);
            let (first, _) = layout.iter().find(|(_, r)| r.contains(&at)).expect("flip inside a batch");
            let count = batches.iter().flatten().count() as u64;
            let next = layout.iter().map(|(o, _)| *o).find(|o| o > first).unwrap_or(count);
            damaged = *first..next;
        }
        let log = PartitionLog::open(dir.path(), config()).expect("open after damage");
        prop_assert_eq!(log.next_offset(), expected.len() as u64);
        for original in &expected {
            match log.read(original.offset, 1, usize::MAX) {
                Ok(records) => {
                    prop_assert!(!damaged.contains(&original.offset), "served damaged offset {}", original.offset);
                    prop_assert_eq!(records.len(), 1);
                    prop_assert_eq!(&records[0], original);
                }
                Err(LogError::Corrupt { .. }) => {
                    prop_assert!(!in_index, "index damage made offset {} unreadable", original.offset);
                }
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
        // A long read returns a correct prefix, or Corrupt at its very start.
        if let Ok(records) = log.read(0, usize::MAX, usize::MAX) {
            prop_assert_eq!(&records[..], &expected[..records.len()]);
        }
        let outcome = log.append_blocking(batches[0].clone()).expect("append after damage");
        prop_assert_eq!(outcome.base_offset, expected.len() as u64);
    }
}
