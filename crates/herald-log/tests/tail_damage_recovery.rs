//! Property: after the tail segment is cut at any byte, or has any one bit flipped,
//! reopening succeeds and reads back exactly the whole, valid batches before the
//! damage (nothing after it, nothing corrupt); appends then continue at the right
//! offset.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use herald_log::{FsyncPolicy, LogConfig, PartitionLog, Record};
use proptest::prelude::*;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2048,
        index_interval_bytes: 128,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

#[derive(Clone, Debug)]
enum Damage {
    /// Cut the file to this fraction (in 1/10_000) of its length.
    Truncate(u64),
    /// Flip bit `bit` of the byte at this fraction of the length.
    FlipBit(u64, u8),
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0u64..10_000).prop_map(Damage::Truncate),
        (0u64..10_000, 0u8..8).prop_map(|(at, bit)| Damage::FlipBit(at, bit)),
    ]
}

proptest! {
    #![proptest_config(common::proptest_config(96))]

    #[test]
    fn tail_damage_leaves_exactly_the_valid_prefix(
        batches in common::batches_strategy(1..30),
        damage in damage_strategy(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let log = PartitionLog::open(dir.path(), config()).expect("open");
            for batch in &batches {
                log.append_blocking(batch.clone()).expect("append");
            }
            log.close().expect("close");
        }
        let (tail_base, tail_path) = common::segment_logs(dir.path()).pop().expect("a segment");
        let layout = common::batch_layout(&batches, tail_base);
        let tail_len = layout.last().map_or(0, |(_, range)| range.end);
        prop_assert_eq!(std::fs::metadata(&tail_path).expect("stat").len(), tail_len);
        // Offsets that must survive: everything before the tail, plus the tail's
        // batches that end before the damage.
        let survivors_end = match damage {
            Damage::Truncate(fraction) => {
                let cut = tail_len * fraction / 10_000;
                let file = OpenOptions::new().write(true).open(&tail_path).expect("open tail");
                file.set_len(cut).expect("truncate");
                layout.iter().take_while(|(_, r)| r.end <= cut).last()
                    .map_or(tail_base, |(first, _)| next_after(&batches, *first))
            }
            Damage::FlipBit(fraction, bit) => {
                let at = (tail_len * fraction / 10_000).min(tail_len - 1);
                let file = OpenOptions::new().read(true).write(true).open(&tail_path).expect("open tail");
                let mut byte = [0u8];
                file.read_exact_at(&mut byte, at).expect("read");
                byte[0] ^= 1 << bit;
                file.write_all_at(&byte, at).expect("write");
                layout.iter().find(|(_, r)| r.contains(&at)).map_or(tail_base, |(first, _)| *first)
            }
        };
        let expected: Vec<_> = common::expected_records(&batches)
            .into_iter()
            .filter(|r| r.offset < survivors_end)
            .collect();
        let log = PartitionLog::open(dir.path(), config()).expect("reopen after damage");
        prop_assert_eq!(log.next_offset(), survivors_end);
        let kept_bytes = layout.iter().take_while(|(first, _)| *first < survivors_end)
            .last().map_or(0, |(_, r)| r.end);
        let damaged_len = std::fs::metadata(&tail_path).expect("stat").len();
        prop_assert_eq!(damaged_len, kept_bytes, "the tail is cut at the last whole batch");
        prop_assert_eq!(&common::read_everything(&log), &expected);
        let extra = Record { timestamp_ms: 7, key: None, value: Bytes::from_static(b"after") };
        let outcome = log.append_blocking(vec![extra.clone()]).expect("append after recovery");
        prop_assert_eq!(outcome.base_offset, survivors_end);
        let back = log.read(survivors_end, 10, usize::MAX).expect("read new");
        prop_assert_eq!(back.len(), 1);
        prop_assert_eq!(&back[0].value, &extra.value);
        log.close().expect("close");
        let log = PartitionLog::open(dir.path(), config()).expect("reopen again");
        prop_assert_eq!(log.recovery_report().truncated_bytes, 0);
        prop_assert_eq!(log.next_offset(), survivors_end + 1);
    }
}

/// The offset after the batch that starts at `first`.
fn next_after(batches: &[Vec<Record>], first: u64) -> u64 {
    let mut offset = 0;
    for batch in batches {
        let next = offset + batch.len() as u64;
        if offset == first {
            return next;
        }
        offset = next;
    }
    offset
}
