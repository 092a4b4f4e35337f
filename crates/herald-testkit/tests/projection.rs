//! Projection runtime on the in-memory bus: checkpoint atomic with the read model,
//! resume without double-applying, rebuild, lag, handler errors roll back the batch.

use herald_core::CloudEvent;
use herald_flow::source::SourcedEvent;
use herald_flow::{HandlerError, Projection, ProjectionRunner};
use herald_testkit::InMemoryBus;
use rusqlite::Transaction;

/// Counts events per type; a poisoned type makes `apply` fail.
struct Counter {
    poison: Option<String>,
}

impl Projection for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    fn setup(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS counts (ty TEXT PRIMARY KEY, n INTEGER NOT NULL)",
        )?;
        Ok(())
    }

    fn reset(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute_batch("DROP TABLE IF EXISTS counts")?;
        Ok(())
    }

    fn apply(&mut self, tx: &Transaction<'_>, event: &SourcedEvent) -> Result<(), HandlerError> {
        if self.poison.as_deref() == Some(event.event.ty.as_str()) {
            return Err(HandlerError(format!("poisoned type {}", event.event.ty)));
        }
        tx.execute(
            "INSERT INTO counts (ty, n) VALUES (?1, 1)
             ON CONFLICT(ty) DO UPDATE SET n = n + 1",
            [&event.event.ty],
        )?;
        Ok(())
    }
}

fn counts(conn: &rusqlite::Connection) -> Vec<(String, i64)> {
    let mut statement = conn
        .prepare("SELECT ty, n FROM counts ORDER BY ty")
        .expect("prepare");
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn publish(bus: &InMemoryBus, count: usize, ty: &str) {
    for i in 0..count {
        bus.publish(CloudEvent::new(format!("{ty}-{i}"), "/test", ty));
    }
}

#[tokio::test]
async fn resumes_from_the_checkpoint_without_double_applying() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("read.db");
    let bus = InMemoryBus::new();
    publish(&bus, 10, "a");
    {
        let mut runner = ProjectionRunner::open(&path, bus.clone(), Counter { poison: None })
            .expect("open")
            .with_batch_max(4);
        assert_eq!(runner.step().await.expect("step"), 4);
        assert_eq!(runner.checkpoint().expect("checkpoint"), Some(3));
        let lag = runner.lag().await.expect("lag");
        assert_eq!((lag.head, lag.positions_behind), (Some(9), 6));
    }
    // Reopen: continues at position 4.
    publish(&bus, 3, "b");
    let mut runner = ProjectionRunner::open(&path, bus.clone(), Counter { poison: None })
        .expect("reopen")
        .with_batch_max(4);
    assert_eq!(runner.catch_up().await.expect("catch up"), 9);
    assert_eq!(
        counts(runner.connection()),
        vec![("a".to_string(), 10), ("b".to_string(), 3)]
    );
    assert_eq!(runner.lag().await.expect("lag").positions_behind, 0);
    // Rebuild from scratch gives the same model.
    assert_eq!(runner.rebuild().await.expect("rebuild"), 13);
    assert_eq!(
        counts(runner.connection()),
        vec![("a".to_string(), 10), ("b".to_string(), 3)]
    );
}

#[tokio::test]
async fn a_handler_error_rolls_back_the_whole_batch() {
    let bus = InMemoryBus::new();
    publish(&bus, 2, "a");
    publish(&bus, 1, "bad");
    publish(&bus, 2, "a");
    let mut runner = ProjectionRunner::open_in_memory(
        bus.clone(),
        Counter {
            poison: Some("bad".into()),
        },
    )
    .expect("open");
    let error = runner
        .catch_up()
        .await
        .expect_err("poisoned event stops it");
    let text = error.to_string();
    assert!(
        text.contains("position 2") && text.contains("bad-0"),
        "{text}"
    );
    // Nothing of the batch is kept: the checkpoint and the model agree.
    assert_eq!(runner.checkpoint().expect("checkpoint"), None);
    assert!(counts(runner.connection()).is_empty());
}
