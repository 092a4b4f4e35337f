//! Property: any sequence of appends (random batch sizes, keys, values and
//! timestamps, with segments small enough to roll often) reads back identically,
//! before and after reopening the log, and timestamp lookups agree with a scan.

mod common;

use herald_log::{FsyncPolicy, LogConfig, PartitionLog};
use proptest::prelude::*;

fn config(segment_bytes_max: u64) -> LogConfig {
    LogConfig {
        segment_bytes_max,
        index_interval_bytes: 256,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

proptest! {
    #![proptest_config(common::proptest_config(48))]

    #[test]
    fn appends_read_back_before_and_after_reopen(
        batches in common::batches_strategy(1..40),
        segment_bytes_max in 256u64..4096,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected = common::expected_records(&batches);
        {
            let log = PartitionLog::open(dir.path(), config(segment_bytes_max)).expect("open");
            let mut next = 0;
            for batch in &batches {
                let outcome = log.append_blocking(batch.clone()).expect("append");
                prop_assert_eq!(outcome.base_offset, next);
                next += batch.len() as u64;
                prop_assert_eq!(outcome.last_offset, next - 1);
            }
            prop_assert_eq!(log.next_offset(), next);
            prop_assert_eq!(&common::read_everything(&log), &expected);
            log.close().expect("close");
        }
        let log = PartitionLog::open(dir.path(), config(segment_bytes_max)).expect("reopen");
        prop_assert_eq!(log.recovery_report().truncated_bytes, 0);
        prop_assert_eq!(&common::read_everything(&log), &expected);
        let whole = log.read(0, usize::MAX, usize::MAX).expect("read all");
        prop_assert_eq!(&whole, &expected);
        for target in [-1_000i64, 0, 250_000, 500_000, 999_999] {
            let first = expected
                .iter()
                .find(|r| r.timestamp_ms >= target)
                .map_or(log.next_offset(), |r| r.offset);
            prop_assert_eq!(log.offset_for_timestamp(target).expect("lookup"), first);
        }
    }
}
