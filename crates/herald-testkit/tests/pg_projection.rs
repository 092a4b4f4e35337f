//! Postgres projection runtime on the in-memory bus, against a private Postgres cluster
//! ([`PgServer`]): checkpoint atomic with the read model, resume without double-applying,
//! a handler error mid-batch rolls back model and checkpoint together, rebuild equals
//! incremental, lag, two racing runners, and clear errors for bad connection strings,
//! unreachable servers and a lost connection (then reconnect).

use herald_core::CloudEvent;
use herald_flow::pg::parse_config;
use herald_flow::pg::tokio_postgres::{Client, Transaction};
use herald_flow::source::SourcedEvent;
use herald_flow::{FlowError, HandlerError, PgProjection, PgProjectionRunner};
use herald_testkit::{InMemoryBus, PgServer};

/// Records every event by id (a primary key: applying one twice fails the handler); a
/// poisoned type makes `apply` fail after the earlier events of its batch were written.
struct Ids {
    poison: Option<String>,
}

impl Ids {
    fn clean() -> Self {
        Ids { poison: None }
    }
}

impl PgProjection for Ids {
    fn name(&self) -> &str {
        "ids"
    }

    async fn setup(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS ids (
                 id TEXT PRIMARY KEY, ty TEXT NOT NULL, position BIGINT NOT NULL)",
        )
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.batch_execute("DROP TABLE IF EXISTS ids").await?;
        Ok(())
    }

    async fn apply(
        &mut self,
        tx: &Transaction<'_>,
        event: &SourcedEvent,
    ) -> Result<(), HandlerError> {
        if self.poison.as_deref() == Some(event.event.ty.as_str()) {
            return Err(HandlerError(format!("poisoned type {}", event.event.ty)));
        }
        let position = i64::try_from(event.position).map_err(|_| "position overflow")?;
        tx.execute(
            "INSERT INTO ids (id, ty, position) VALUES ($1, $2, $3)",
            &[&event.event.id, &event.event.ty, &position],
        )
        .await?;
        Ok(())
    }
}

/// The model: `(id, type, position)` by position.
async fn rows(client: &Client) -> Vec<(String, String, i64)> {
    client
        .query("SELECT id, ty, position FROM ids ORDER BY position", &[])
        .await
        .expect("query the model")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// A runner of [`Ids`] on `url` reading at most `batch_max` events a transaction.
async fn connect(
    url: &str,
    bus: &InMemoryBus,
    batch_max: usize,
) -> PgProjectionRunner<InMemoryBus, Ids> {
    PgProjectionRunner::connect(url, bus.clone(), Ids::clean())
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
        .with_batch_max(batch_max)
}

/// A fresh cluster, and a bus holding events of `types` (ids `e0`, `e1`, ...).
fn cluster_and_bus(types: &[&str]) -> (PgServer, InMemoryBus) {
    let bus = InMemoryBus::new();
    publish(&bus, types);
    (PgServer::start(), bus)
}

fn publish(bus: &InMemoryBus, types: &[&str]) {
    for ty in types {
        let id = format!("e{}", bus.len());
        bus.publish(CloudEvent::new(id, "/test", *ty));
    }
}

#[tokio::test]
async fn resumes_from_the_checkpoint_without_double_applying() {
    let pg = PgServer::start();
    let bus = InMemoryBus::new();
    {
        // A client the caller connected works as well as a connection string.
        let config = parse_config(&pg.url()).expect("parse");
        let client = herald_flow::pg::connect(&config).await.expect("connect");
        let runner = PgProjectionRunner::with_client(client, bus.clone(), Ids::clean())
            .await
            .expect("runner on a client");
        let lag = runner.lag().await.expect("lag of an empty source");
        assert_eq!(
            (lag.head, lag.checkpoint, lag.positions_behind),
            (None, None, 0)
        );
    }
    publish(&bus, &["a"; 10]);
    {
        let mut runner = connect(&pg.url(), &bus, 4).await;
        assert_eq!(runner.step().await.expect("step"), 4);
        assert_eq!(runner.checkpoint().await.expect("checkpoint"), Some(3));
        let lag = runner.lag().await.expect("lag");
        assert_eq!(
            (lag.head, lag.checkpoint, lag.positions_behind),
            (Some(9), Some(3), 6)
        );
    }
    // A new runner (a restarted process) continues at position 4.
    publish(&bus, &["b"; 3]);
    let mut runner = connect(&pg.url(), &bus, 4).await;
    assert_eq!(runner.catch_up().await.expect("catch up"), 9);
    let model = rows(runner.client()).await;
    assert_eq!(model.len(), 13);
    assert!(model.iter().enumerate().all(|(i, r)| r.2 == i as i64));
    let lag = runner.lag().await.expect("lag");
    assert_eq!((lag.checkpoint, lag.positions_behind), (Some(12), 0));
    assert_eq!(runner.catch_up().await.expect("nothing new"), 0);
}

#[tokio::test]
async fn a_handler_error_mid_batch_rolls_back_model_and_checkpoint() {
    let (pg, bus) = cluster_and_bus(&["a", "a", "a", "bad", "a"]);
    let poisoned = Ids {
        poison: Some("bad".into()),
    };
    let mut runner = PgProjectionRunner::connect(&pg.url(), bus.clone(), poisoned)
        .await
        .expect("connect")
        .with_batch_max(2);
    assert_eq!(runner.step().await.expect("first batch"), 2);
    // The second batch writes position 2, then fails at position 3.
    match runner.catch_up().await {
        Err(FlowError::Handler {
            position,
            event_id,
            message,
            ..
        }) => {
            assert_eq!((position, event_id.as_str()), (3, "e3"));
            assert!(message.contains("poisoned"), "{message}");
        }
        other => panic!("the poisoned event must stop the runner: {other:?}"),
    }
    assert_eq!(runner.checkpoint().await.expect("checkpoint"), Some(1));
    assert_eq!(
        rows(runner.client()).await.len(),
        2,
        "position 2 was rolled back"
    );
    // A database error inside the handler (duplicate key) rolls back the same way.
    runner
        .client()
        .execute("INSERT INTO ids VALUES ('e2', 'planted', 99)", &[])
        .await
        .expect("plant a row");
    let mut runner = connect(&pg.url(), &bus, 2).await;
    let error = runner.step().await.expect_err("duplicate key");
    assert!(error.to_string().contains("duplicate key"), "{error}");
    assert_eq!(runner.checkpoint().await.expect("checkpoint"), Some(1));
    runner
        .client()
        .execute("DELETE FROM ids WHERE ty = 'planted'", &[])
        .await
        .expect("remove the planted row");
    // Fixed handler: everything applies exactly once.
    assert_eq!(runner.catch_up().await.expect("catch up"), 3);
    assert_eq!(rows(runner.client()).await.len(), 5);
}

#[tokio::test]
async fn rebuild_equals_the_incremental_model() {
    let pg = PgServer::start();
    let bus = InMemoryBus::new();
    let mut runner = connect(&pg.url(), &bus, 7).await;
    // Events arrive while the projection runs: publish and step interleaved.
    let types = ["order", "payment", "stock", "shipment"];
    for round in 0..12 {
        let burst: Vec<&str> = (0..round % 5 + 1).map(|i| types[(round + i) % 4]).collect();
        publish(&bus, &burst);
        runner.step().await.expect("step");
    }
    runner.catch_up().await.expect("catch up");
    let incremental = rows(runner.client()).await;
    assert_eq!(incremental.len() as u64, bus.len());
    assert_eq!(runner.rebuild().await.expect("rebuild"), bus.len());
    assert_eq!(rows(runner.client()).await, incremental);
    // And from scratch into another database.
    let fresh = pg.create_database("fresh");
    let mut scratch = connect(&fresh, &bus, 256).await;
    assert_eq!(scratch.rebuild().await.expect("rebuild fresh"), bus.len());
    assert_eq!(rows(scratch.client()).await, incremental);
}

#[tokio::test]
async fn two_racing_runners_apply_each_event_once() {
    let (pg, bus) = cluster_and_bus(&["a"; 200]);
    let mut first = connect(&pg.url(), &bus, 3).await;
    let mut second = connect(&pg.url(), &bus, 3).await;
    let (applied_first, applied_second) = tokio::join!(first.catch_up(), second.catch_up());
    let (applied_first, applied_second) = (
        applied_first.expect("first runner"),
        applied_second.expect("second runner"),
    );
    eprintln!("first applied {applied_first}, second {applied_second}");
    assert_eq!(applied_first + applied_second, 200);
    assert_eq!(rows(first.client()).await.len(), 200);
}

#[tokio::test]
async fn bad_connection_strings_and_unreachable_servers_are_clear_errors() {
    let bus = InMemoryBus::new();
    for bad in [
        "postgres://[::1",
        "host=127.0.0.1 port=notaport",
        "nonsense_key=1",
    ] {
        let error = PgProjectionRunner::connect(bad, bus.clone(), Ids::clean())
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad:?} is accepted"));
        let text = error.to_string();
        assert!(
            matches!(error, FlowError::Invalid { .. }),
            "{bad:?}: {text}"
        );
        assert!(text.contains("postgres connection string"), "{text}");
        eprintln!("{bad:?}: {text}");
    }
    // Nobody listens on a port just probed free.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe")
        .port();
    let url = format!("postgres://herald@127.0.0.1:{port}/postgres");
    let error = PgProjectionRunner::connect(&url, bus.clone(), Ids::clean())
        .await
        .err()
        .expect("nothing listens");
    let text = error.to_string();
    eprintln!("unreachable: {text}");
    assert!(matches!(error, FlowError::Postgres(_)), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(
        error.is_transient(),
        "a refused connection is worth retrying"
    );
    // A server that answers but has no such database.
    let pg = PgServer::start();
    let error = PgProjectionRunner::connect(&pg.url_for("missing"), bus, Ids::clean())
        .await
        .err()
        .expect("no such database");
    let text = error.to_string();
    assert!(
        text.contains("database \"missing\" does not exist"),
        "{text}"
    );
}

#[tokio::test]
async fn a_lost_connection_is_an_error_then_the_runner_reconnects() {
    let (pg, bus) = cluster_and_bus(&["a"; 5]);
    let mut runner = connect(&pg.url(), &bus, 256).await;
    assert_eq!(runner.catch_up().await.expect("catch up"), 5);
    pg.stop();
    publish(&bus, &["b"; 5]);
    let error = runner.step().await.expect_err("server is down");
    eprintln!("while down: {error}");
    assert!(matches!(error, FlowError::Postgres(_)), "{error}");
    assert!(error.is_transient(), "{error}");
    let error = runner.step().await.expect_err("still down");
    assert!(error.is_transient(), "{error}");
    pg.restart();
    assert_eq!(runner.catch_up().await.expect("after restart"), 5);
    assert_eq!(rows(runner.client()).await.len(), 10);
}

/// Polls the checkpoint (through psql, as another process would) until it reaches
/// `position`; panics after `timeout`.
async fn wait_for_checkpoint(pg: &PgServer, position: i64, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let sql = "SELECT position FROM herald_checkpoints WHERE name = 'ids'";
    while pg.query_i64("postgres", sql) != Some(position) {
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoint did not reach {position} within {timeout:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn run_survives_a_server_restart() {
    let (pg, bus) = cluster_and_bus(&["a"; 5]);
    let pg = std::sync::Arc::new(pg);
    let mut runner = connect(&pg.url(), &bus, 2).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follow = runner.run(async {
        let _ = stopped.await;
    });
    let outage = async {
        let timeout = std::time::Duration::from_secs(30);
        wait_for_checkpoint(&pg, 4, timeout).await;
        // Stop, publish and restart off the runtime: the runner keeps polling meanwhile,
        // loses its connection and meets refused ones with events waiting.
        let (server, events) = (std::sync::Arc::clone(&pg), bus.clone());
        tokio::task::spawn_blocking(move || {
            server.stop();
            publish(&events, &["b"; 5]);
            server.restart();
        })
        .await
        .expect("restart the server");
        wait_for_checkpoint(&pg, 9, timeout).await;
        let _ = stop.send(());
    };
    let (ran, ()) = tokio::join!(follow, outage);
    ran.expect("run retries a lost connection instead of failing");
    assert_eq!(rows(runner.client()).await.len(), 10);
}
