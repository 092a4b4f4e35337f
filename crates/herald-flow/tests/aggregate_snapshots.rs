//! The aggregate repository with snapshots (embedded event store): a snapshot is saved
//! every N events, a load starts from it and reads only the later events, the state is
//! the same as a full replay, and a snapshot that no longer deserializes is ignored.

use herald_client::{ExpectedVersion, Herald};
use herald_flow::{Aggregate, Repository};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter {
    total: i64,
    /// Events folded since this value was built (from default or from a snapshot).
    #[serde(skip)]
    applied: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Added {
    amount: i64,
}

impl Aggregate for Counter {
    type Command = i64;
    type Event = Added;
    type Error = String;

    fn event_type(_: &Added) -> &'static str {
        "counter.added"
    }

    fn apply(&mut self, event: &Added) {
        self.total += event.amount;
        self.applied += 1;
    }

    fn handle(&self, amount: &i64) -> Result<Vec<Added>, String> {
        if *amount == 0 {
            return Err("nothing to add".into());
        }
        Ok(vec![Added { amount: *amount }])
    }
}

#[tokio::test]
async fn loads_read_only_events_after_the_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let herald = Herald::open(dir.path().join("data")).await.expect("open");
    let repo: Repository<Counter> = Repository::new(herald.clone(), "/test").with_snapshots(10);
    let plain: Repository<Counter> = Repository::new(herald.clone(), "/test");
    for i in 1..=25 {
        repo.execute_root("counter-1", &i, "c-1")
            .await
            .expect("execute");
    }
    // Snapshots were due after versions 9 and 19; the load starts at 19.
    let snapshot = herald
        .load_snapshot("counter-1")
        .await
        .expect("load snapshot")
        .expect("a snapshot");
    assert_eq!(snapshot.version, 19);
    assert_eq!(snapshot.data["total"], (1..=20).sum::<i64>());
    let loaded = repo.load_from_snapshot("counter-1").await.expect("load");
    assert_eq!(loaded.snapshot_version, Some(19));
    assert_eq!(loaded.events_read, 5, "only versions 20..=24 are read");
    assert_eq!(loaded.state.applied, 5);
    assert_eq!(loaded.version, Some(24));
    let full = plain
        .load_from_snapshot("counter-1")
        .await
        .expect("full load");
    assert_eq!((full.events_read, full.snapshot_version), (25, None));
    assert_eq!(loaded.state.total, full.state.total);
    assert_eq!(full.state.total, (1..=25).sum::<i64>());
    // A snapshot of another shape is ignored: the load replays every event.
    herald
        .save_snapshot("counter-1", 24, serde_json::json!({"unexpected": true}))
        .await
        .expect("save odd snapshot");
    let fallback = repo.load_from_snapshot("counter-1").await.expect("load");
    assert_eq!(
        (fallback.snapshot_version, fallback.events_read),
        (None, 25)
    );
    assert_eq!(fallback.state.total, full.state.total);
    // A soft delete drops the snapshot; the recreated stream loads from its new events.
    herald
        .delete_stream("counter-1", ExpectedVersion::Any, false)
        .await
        .expect("delete");
    repo.execute_root("counter-1", &7, "c-2")
        .await
        .expect("execute");
    let recreated = repo.load_from_snapshot("counter-1").await.expect("load");
    assert_eq!((recreated.state.total, recreated.version), (7, Some(25)));
}
