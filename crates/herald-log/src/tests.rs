//! Unit tests of [`PartitionLog`] scenarios: rolls, retention, reads, lookups,
//! reopen, watch, backpressure, close, group commit, and injected disk faults.

use std::fs;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::segment::{segment_file_name, INDEX_EXTENSION, LOG_EXTENSION, TIME_INDEX_EXTENSION};
use crate::{FsyncPolicy, LogConfig, LogError, PartitionLog, Record, StoredRecord};

fn record(timestamp_ms: i64, value: &str) -> Record {
    Record {
        timestamp_ms,
        key: None,
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn keyed(timestamp_ms: i64, key: &str, value: &str) -> Record {
    Record {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        ..record(timestamp_ms, value)
    }
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1024,
        index_interval_bytes: 128,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

/// Appends `count` single-record batches with values `v{i}` and timestamps `i * 10`.
fn fill(log: &PartitionLog, count: u64) {
    for i in 0..count {
        let outcome = log
            .append_blocking(vec![record(i as i64 * 10, &format!("v{i}"))])
            .expect("append");
        assert_eq!(outcome.base_offset, outcome.last_offset);
    }
}

fn read_all(log: &PartitionLog) -> Vec<StoredRecord> {
    log.read(log.start_offset(), usize::MAX, usize::MAX)
        .expect("read")
}

fn values(records: &[StoredRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

#[test]
fn append_assigns_dense_offsets_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    let first = log
        .append_blocking(vec![keyed(1, "k", "a"), record(2, "b")])
        .expect("append");
    assert_eq!((first.base_offset, first.last_offset), (0, 1));
    let second = log.append_blocking(vec![record(3, "c")]).expect("append");
    assert_eq!((second.base_offset, second.last_offset), (2, 2));
    assert_eq!(log.next_offset(), 3);
    let records = read_all(&log);
    assert_eq!(values(&records), ["a", "b", "c"]);
    assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(records[1].key, None);
    assert_eq!(
        records.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(log.read(3, 10, 10).expect("read at end"), vec![]);
}

#[test]
fn bad_input_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        batch_bytes_max: 100,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config).expect("open");
    assert!(matches!(
        log.append_blocking(vec![]),
        Err(LogError::EmptyBatch)
    ));
    let big = record(0, &"x".repeat(100));
    assert!(matches!(
        log.append_blocking(vec![big]),
        Err(LogError::BatchTooLarge {
            size: 156,
            max: 100
        })
    ));
    assert_eq!(log.next_offset(), 0);
}

#[test]
fn rolls_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config()).expect("open");
    fill(&log, 100); // 100 batches of ~59 bytes: ~6 KiB over 1 KiB segments
    assert!(
        log.segment_count() >= 5,
        "segments: {}",
        log.segment_count()
    );
    let segments = log.shared.segments.read().clone();
    for pair in segments.windows(2) {
        assert_eq!(pair[0].end_offset(), pair[1].base_offset());
        assert!(pair[0].size_bytes() > 0);
        assert!(pair[0].is_sealed());
    }
    for segment in &segments {
        let log_bytes = fs::metadata(segment.log_path()).expect("stat").len();
        assert!(log_bytes <= 1024, "segment of {log_bytes} bytes");
        for extension in [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
            let name = segment_file_name(segment.base_offset(), extension);
            assert!(dir.path().join(name).exists());
        }
    }
    assert_eq!(read_all(&log).len(), 100);
}

#[test]
fn an_oversized_batch_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config()).expect("open");
    fill(&log, 2);
    log.append_blocking(vec![record(0, &"x".repeat(3000))])
        .expect("append");
    fill(&log, 1);
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_all(&log).len(), 4);
}

#[test]
fn rolls_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_age_max: Some(Duration::from_millis(50)),
        ..small_config()
    };
    let log = PartitionLog::open(dir.path(), config).expect("open");
    fill(&log, 2);
    assert_eq!(log.segment_count(), 1);
    std::thread::sleep(Duration::from_millis(80));
    fill(&log, 1);
    assert_eq!(log.segment_count(), 2);
    fill(&log, 1);
    assert_eq!(log.segment_count(), 2, "the new segment is young");
    assert_eq!(read_all(&log).len(), 4);
}

#[test]
fn retention_by_size_deletes_oldest_sealed_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention_bytes: Some(3000),
        ..small_config()
    };
    let log = PartitionLog::open(dir.path(), config).expect("open");
    fill(&log, 200);
    let before = log.segment_count();
    assert!(log.size_bytes() > 3000);
    let deleted = log.enforce_retention(0).expect("retention");
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), before - deleted);
    assert!(log.size_bytes() <= 3000, "size {}", log.size_bytes());
    let first = log.start_offset();
    assert!(first > 0);
    let records = read_all(&log);
    assert_eq!(records.first().map(|r| r.offset), Some(first));
    assert_eq!(records.last().map(|r| r.offset), Some(199));
    assert!(matches!(
        log.read(0, 1, 1),
        Err(LogError::OffsetOutOfRange { requested: 0, .. })
    ));
    let name = segment_file_name(0, LOG_EXTENSION);
    assert!(!dir.path().join(name).exists());
    assert_eq!(log.enforce_retention(0).expect("retention"), 0);
}

#[test]
fn delete_records_before_drops_only_whole_segments_below_the_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config()).expect("open");
    fill(&log, 200);
    assert!(log.segment_count() > 3);
    assert_eq!(log.delete_records_before(0).expect("noop"), 0);
    let deleted = log.delete_records_before(120).expect("delete");
    assert!(deleted > 0);
    let start = log.start_offset();
    assert!(start > 0 && start <= 120, "start {start}");
    let records = read_all(&log);
    assert_eq!(records.first().map(|r| r.offset), Some(start));
    assert_eq!(records.last().map(|r| r.offset), Some(199));
    // Never the active segment, even when everything is below the offset.
    log.delete_records_before(u64::MAX)
        .expect("delete all sealed");
    assert_eq!(log.segment_count(), 1);
    assert_eq!(read_all(&log).last().map(|r| r.offset), Some(199));
    drop(log);
    let reopened = PartitionLog::open(dir.path(), small_config()).expect("reopen");
    assert_eq!(reopened.next_offset(), 200);
}

#[test]
fn retention_by_age_uses_the_newest_timestamp_and_spares_the_active_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        retention_age: Some(Duration::from_millis(1000)),
        ..small_config()
    };
    let log = PartitionLog::open(dir.path(), config).expect("open");
    fill(&log, 100); // timestamps 0..990
    let segments = log.segment_count();
    assert!(segments > 2);
    // Keep what is newer than 1500 - 1000 = 500.
    let deleted = log.enforce_retention(1500).expect("retention");
    assert!(deleted > 0 && deleted < segments);
    let records = read_all(&log);
    assert!(records[0].timestamp_ms <= 500);
    let first_kept = log.shared.segments.read()[0].max_timestamp_ms();
    assert!(first_kept >= 500);
    // Far in the future everything sealed goes, never the active segment.
    log.enforce_retention(1_000_000).expect("retention");
    assert_eq!(log.segment_count(), 1);
    assert_eq!(read_all(&log).last().map(|r| r.offset), Some(99));
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config()).expect("open");
    fill(&log, 100); // offset i has timestamp 10 * i, across several segments
    assert!(log.segment_count() > 3);
    assert_eq!(log.offset_for_timestamp(i64::MIN).expect("lookup"), 0);
    assert_eq!(log.offset_for_timestamp(0).expect("lookup"), 0);
    assert_eq!(log.offset_for_timestamp(1).expect("lookup"), 1);
    assert_eq!(log.offset_for_timestamp(500).expect("lookup"), 50);
    assert_eq!(log.offset_for_timestamp(505).expect("lookup"), 51);
    assert_eq!(log.offset_for_timestamp(990).expect("lookup"), 99);
    assert_eq!(log.offset_for_timestamp(991).expect("lookup"), 100);
}

#[test]
fn offset_for_timestamp_with_out_of_order_timestamps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config()).expect("open");
    let stamps = [50, 10, 70, 20, 70, 90, 5, 100];
    for ts in stamps {
        log.append_blocking(vec![record(ts, "x")]).expect("append");
    }
    for target in [0, 5, 10, 50, 51, 70, 71, 90, 95, 100, 101] {
        let expected = stamps
            .iter()
            .position(|ts| *ts >= target)
            .unwrap_or(stamps.len()) as u64;
        assert_eq!(
            log.offset_for_timestamp(target).expect("lookup"),
            expected,
            "target {target}"
        );
    }
}

#[test]
fn reads_cross_segment_boundaries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config()).expect("open");
    fill(&log, 60);
    let boundary = log.shared.segments.read()[1].base_offset();
    let records = log.read(boundary - 2, 5, usize::MAX).expect("read");
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (boundary - 2..boundary + 3).collect::<Vec<_>>());
    for offset in 0..60 {
        let records = log.read(offset, 1, 0).expect("read");
        assert_eq!(values(&records), [format!("v{offset}")]);
    }
}

#[test]
fn read_limits_records_and_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    let batch: Vec<Record> = (0..10).map(|i| record(i, "0123456789")).collect();
    log.append_blocking(batch).expect("append");
    assert_eq!(log.read(0, 3, usize::MAX).expect("read").len(), 3);
    assert_eq!(log.read(2, 100, usize::MAX).expect("read").len(), 8);
    assert_eq!(log.read(0, 100, 35).expect("read").len(), 3);
    assert_eq!(log.read(0, 100, 40).expect("read").len(), 4);
    assert_eq!(
        log.read(0, 100, 0).expect("read").len(),
        1,
        "at least one record"
    );
    assert_eq!(log.read(0, 0, 100).expect("read").len(), 0);
    let middle = log.read(5, 2, usize::MAX).expect("read");
    assert_eq!(middle.iter().map(|r| r.offset).collect::<Vec<_>>(), [5, 6]);
}

#[test]
fn out_of_range_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    fill(&log, 3);
    match log.read(4, 1, 1) {
        Err(LogError::OffsetOutOfRange {
            requested: 4,
            start: 0,
            end: 3,
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(log.read(3, 1, 1).expect("read").is_empty());
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let log = PartitionLog::open(dir.path(), small_config()).expect("open");
        fill(&log, 50);
        log.append_blocking(vec![keyed(-5, "key", "last")])
            .expect("append");
        log.close().expect("close");
        read_all(&log)
    };
    let log = PartitionLog::open(dir.path(), small_config()).expect("reopen");
    assert_eq!(read_all(&log), expected);
    let report = log.recovery_report();
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.rebuilt_indexes, 0);
    assert_eq!(report.records, 51);
    assert_eq!(report.next_offset, 51);
    assert_eq!(report.segments, log.segment_count());
    assert!(report.gaps.is_empty());
    assert_eq!(log.offset_for_timestamp(200).expect("lookup"), 20);
    let outcome = log
        .append_blocking(vec![record(1, "after")])
        .expect("append");
    assert_eq!(outcome.base_offset, 51);
}

#[test]
fn reopen_rebuilds_missing_or_garbled_sealed_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = {
        let log = PartitionLog::open(dir.path(), small_config()).expect("open");
        fill(&log, 60);
        read_all(&log)
    };
    fs::remove_file(dir.path().join(segment_file_name(0, INDEX_EXTENSION))).expect("rm");
    let second = {
        let log = PartitionLog::open(dir.path(), small_config()).expect("open");
        let base_offset = log.shared.segments.read()[1].base_offset();
        base_offset
    };
    fs::write(
        dir.path()
            .join(segment_file_name(second, TIME_INDEX_EXTENSION)),
        b"garbage!",
    )
    .expect("write");
    let log = PartitionLog::open(dir.path(), small_config()).expect("reopen");
    assert_eq!(log.recovery_report().rebuilt_indexes, 1);
    assert_eq!(read_all(&log), expected);
    assert_eq!(log.offset_for_timestamp(100).expect("lookup"), 10);
}

#[test]
fn a_missing_middle_segment_is_reported_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (lost_base, lost_end) = {
        let log = PartitionLog::open(dir.path(), small_config()).expect("open");
        fill(&log, 80);
        let segments = log.shared.segments.read();
        (segments[1].base_offset(), segments[2].base_offset())
    };
    for extension in [LOG_EXTENSION, INDEX_EXTENSION, TIME_INDEX_EXTENSION] {
        fs::remove_file(dir.path().join(segment_file_name(lost_base, extension))).expect("rm");
    }
    let log = PartitionLog::open(dir.path(), small_config()).expect("reopen");
    let gaps = &log.recovery_report().gaps;
    assert_eq!(gaps.len(), 1);
    assert_eq!((gaps[0].start, gaps[0].end), (lost_base, lost_end));
    match log.read(lost_base + 1, 10, usize::MAX) {
        Err(LogError::Corrupt { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(log.offset_after_damage(lost_base + 1), lost_end);
    assert_eq!(
        log.offset_after_damage(0),
        lost_end,
        "the next segment after the first"
    );
    assert_eq!(log.offset_after_damage(79), 80);
    // A read that runs into the gap returns what came before it.
    let before = log.read(0, usize::MAX, usize::MAX).expect("read");
    assert_eq!(before.last().map(|r| r.offset), Some(lost_base - 1));
    assert_eq!(log.read(lost_end, 1, 1).expect("read")[0].offset, lost_end);
    assert_eq!(
        log.append_blocking(vec![record(0, "x")])
            .expect("append")
            .base_offset,
        80
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_wakes_on_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    let mut watch = log.watch();
    assert_eq!(*watch.borrow_and_update(), 0);
    let waiter = tokio::spawn(async move {
        watch
            .wait_for(|end| *end >= 2)
            .await
            .map(|end| *end)
            .expect("watch")
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    log.append(vec![record(0, "a"), record(0, "b")])
        .await
        .expect("append");
    let end = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("join");
    assert_eq!(end, 2);
}

#[test]
fn backpressure_when_the_queue_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        queue_depth_max: 1,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config).expect("open");
    log.faults().pause();
    // The paused writer holds at most one request; the queue holds one more.
    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..3 {
        match log.submit(vec![record(i, "x")]) {
            Ok(reply) => accepted.push(reply),
            Err(error) => {
                refused = Some(error);
                break;
            }
        }
    }
    let refused = refused.expect("a third append must be refused");
    assert!(matches!(refused, LogError::Backpressure));
    assert!(refused.is_retryable());
    assert!(!accepted.is_empty());
    log.faults().resume();
    for reply in accepted {
        reply.blocking_recv().expect("reply").expect("append");
    }
    log.append_blocking(vec![record(9, "y")])
        .expect("accepted again");
}

#[test]
fn append_after_close_is_closed_and_reads_still_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    fill(&log, 3);
    log.close().expect("close");
    log.close().expect("closing twice is fine");
    assert!(matches!(
        log.append_blocking(vec![record(0, "x")]),
        Err(LogError::Closed)
    ));
    assert_eq!(read_all(&log).len(), 3);
}

#[test]
fn close_drains_queued_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    log.faults().pause();
    let replies: Vec<_> = (0..10)
        .map(|i| log.submit(vec![record(i, "q")]).expect("queued"))
        .collect();
    let closer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.close())
    };
    std::thread::sleep(Duration::from_millis(20));
    log.faults().resume();
    closer.join().expect("join").expect("close");
    for reply in replies {
        reply
            .blocking_recv()
            .expect("reply")
            .expect("appended before close");
    }
    assert_eq!(log.next_offset(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_shares_one_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    log.faults().pause();
    let before = log.fsync_count();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let log = Arc::clone(&log);
            tokio::spawn(async move { log.append(vec![record(i, "concurrent")]).await })
        })
        .collect();
    // Let every task queue its append while the writer is held.
    tokio::time::sleep(Duration::from_millis(100)).await;
    log.faults().resume();
    let mut offsets = Vec::new();
    for task in tasks {
        offsets.push(task.await.expect("join").expect("append").base_offset);
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..64).collect::<Vec<_>>());
    let fsyncs = log.fsync_count() - before;
    assert!(fsyncs <= 4, "64 appends took {fsyncs} fsyncs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaused_concurrent_appends_still_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    let before = log.fsync_count();
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for i in 0..16 {
                    log.append(vec![record(task * 100 + i, "x")])
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join");
    }
    assert_eq!(log.next_offset(), 256);
    let fsyncs = log.fsync_count() - before;
    assert!(fsyncs < 256, "256 appends took {fsyncs} fsyncs");
}

#[test]
fn disk_full_rolls_back_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    fill(&log, 2);
    log.faults().fail_next_write(30, io::ErrorKind::StorageFull);
    let error = log
        .append_blocking(vec![record(0, "lost")])
        .expect_err("disk full");
    assert!(error.is_retryable(), "{error}");
    assert!(log.shared.poisoned().is_none());
    assert_eq!(log.next_offset(), 2);
    let outcome = log
        .append_blocking(vec![record(0, "retried")])
        .expect("space again");
    assert_eq!(outcome.base_offset, 2);
    log.close().expect("close");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("reopen");
    assert_eq!(
        log.recovery_report().truncated_bytes,
        0,
        "the partial write was undone"
    );
    assert_eq!(values(&read_all(&log)), ["v0", "v1", "retried"]);
}

#[test]
fn a_failed_write_poisons_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    fill(&log, 2);
    log.faults()
        .fail_next_write(10, io::ErrorKind::PermissionDenied);
    let error = log
        .append_blocking(vec![record(0, "x")])
        .expect_err("write fails");
    assert!(matches!(error, LogError::Io { .. }) && !error.is_retryable());
    assert!(matches!(
        log.append_blocking(vec![record(0, "y")]),
        Err(LogError::Poisoned(_))
    ));
    assert_eq!(read_all(&log).len(), 2, "reads keep working");
    assert!(matches!(log.flush(), Err(LogError::Poisoned(_))));
    assert!(matches!(log.close(), Err(LogError::Poisoned(_))));
}

#[test]
fn a_failed_fsync_poisons_the_log_and_publishes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), LogConfig::default()).expect("open");
    fill(&log, 1);
    log.faults().fail_next_sync(io::ErrorKind::Other);
    assert!(log.append_blocking(vec![record(0, "x")]).is_err());
    assert_eq!(log.next_offset(), 1, "an unsynced batch stays invisible");
    assert!(matches!(
        log.append_blocking(vec![record(0, "y")]),
        Err(LogError::Poisoned(_))
    ));
    assert_eq!(read_all(&log).len(), 1);
}

#[test]
fn interval_policy_is_visible_at_once_and_syncs_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(30)),
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.path(), config).expect("open");
    let before = log.fsync_count();
    fill(&log, 5);
    assert_eq!(log.next_offset(), 5);
    std::thread::sleep(Duration::from_millis(200));
    let fsyncs = log.fsync_count() - before;
    assert!((1..=5).contains(&fsyncs), "{fsyncs} fsyncs");
    log.flush().expect("flush");
    assert_eq!(log.fsync_count() - before, fsyncs + 1);
}

#[test]
fn never_policy_syncs_only_at_roll_and_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(
        dir.path(),
        LogConfig {
            fsync: FsyncPolicy::Never,
            ..LogConfig::default()
        },
    )
    .expect("open");
    fill(&log, 20);
    assert_eq!(log.fsync_count(), 0);
    log.close().expect("close");
    assert_eq!(log.fsync_count(), 1);
}

#[test]
fn concurrent_readers_never_see_past_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = PartitionLog::open(dir.path(), small_config()).expect("open");
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || fill(&log, 300))
    };
    let mut last_seen = 0;
    while last_seen < 300 {
        let end = log.next_offset();
        let records = log
            .read(log.start_offset(), usize::MAX, usize::MAX)
            .expect("read");
        assert!(
            records.len() as u64 >= end,
            "saw {} of {end}",
            records.len()
        );
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64);
            assert_eq!(r.value, format!("v{i}").as_bytes());
        }
        last_seen = records.len() as u64;
    }
    writer.join().expect("join");
}

#[test]
fn partition_log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PartitionLog>();
    assert_send_sync::<Arc<PartitionLog>>();
}
