//! A projection over a topic partition (embedded broker): positions are offsets, the
//! checkpoint survives reopening, lag is end offset minus checkpoint.

use herald_client::{CloudEvent, Herald, TopicConfig};
use herald_flow::source::SourcedEvent;
use herald_flow::{EventSource, HandlerError, Projection, ProjectionRunner, TopicSource};
use rusqlite::Transaction;

struct Ids;

impl Projection for Ids {
    fn name(&self) -> &str {
        "ids"
    }

    fn setup(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute_batch("CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, position INTEGER)")?;
        Ok(())
    }

    fn reset(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute_batch("DROP TABLE IF EXISTS ids")?;
        Ok(())
    }

    fn apply(&mut self, tx: &Transaction<'_>, event: &SourcedEvent) -> Result<(), HandlerError> {
        // A primary key: applying an event twice would fail the test.
        tx.execute(
            "INSERT INTO ids (id, position) VALUES (?1, ?2)",
            rusqlite::params![event.event.id, event.position as i64],
        )?;
        Ok(())
    }
}

#[tokio::test]
async fn projects_a_topic_partition_and_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let herald = Herald::open(dir.path().join("data"))
        .await
        .expect("embedded herald");
    herald
        .create_topic("orders", TopicConfig::with_partitions(1))
        .await
        .expect("create topic");
    let source = TopicSource::new(herald.clone(), "orders", 0);
    assert_eq!(source.head().await.expect("head"), None);
    for i in 0..7 {
        herald
            .publish(
                "orders",
                CloudEvent::new(format!("e{i}"), "/t", "order.placed"),
            )
            .await
            .expect("publish");
    }
    let db = dir.path().join("read.db");
    {
        let mut runner = ProjectionRunner::open(&db, source.clone(), Ids)
            .expect("open")
            .with_batch_max(3);
        assert_eq!(runner.step().await.expect("step"), 3);
        let lag = runner.lag().await.expect("lag");
        assert_eq!(
            (lag.head, lag.checkpoint, lag.positions_behind),
            (Some(6), Some(2), 4)
        );
    }
    let mut runner = ProjectionRunner::open(&db, source, Ids).expect("reopen");
    assert_eq!(runner.catch_up().await.expect("catch up"), 4);
    let count: i64 = runner
        .connection()
        .query_row("SELECT COUNT(*) FROM ids", [], |row| row.get(0))
        .expect("count");
    assert_eq!(count, 7);
    assert_eq!(runner.lag().await.expect("lag").positions_behind, 0);
    herald.close().await;
}
