//! CQRS projections into Postgres: a [`PgProjection`] folds events into tables of a
//! Postgres database; the [`PgProjectionRunner`] feeds it batches from any
//! [`EventSource`], with the same API as the SQLite [`crate::ProjectionRunner`].
//!
//! Invariant: each batch is applied in one Postgres transaction that also moves the
//! projection's row in `herald_checkpoints`; the transaction re-reads that row under a
//! per-projection advisory lock and gives the batch up if another runner moved it, so
//! after a crash (kill -9 included), a lost connection or a race between two runners, no
//! event is applied twice or skipped. A handler error rolls the whole batch back.
//! Durability is the server's: with Postgres' defaults (`fsync=on`,
//! `synchronous_commit=on`) a commit that returned is on disk.

use std::future::Future;
use std::time::Duration;

use tokio_postgres::{Client, Config, GenericClient, NoTls, Transaction};

use crate::projection::{handler_error, Lag, BATCH_MAX_DEFAULT, POLL_INTERVAL_DEFAULT};
use crate::source::{EventSource, SourcedEvent};
use crate::{consumer, db, FlowError, HandlerError};

/// The client crate, re-exported so projections name the same `Transaction` type.
pub use tokio_postgres;

/// How long connecting may take when the connection string does not say
/// (`connect_timeout`).
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Serializes `CREATE TABLE IF NOT EXISTS` of concurrent runners (Postgres can fail one
/// of two racing creations with a unique violation on its catalog).
const SETUP_LOCK_KEY: i64 = 0x6865_7261_6c64; // "herald"

/// A read model built from events, in Postgres. Every method runs inside the runner's
/// transaction: use `tx` for all reads and writes so they commit with the checkpoint.
pub trait PgProjection: Send {
    /// Unique name; it keys the checkpoint, so two projections can share one database.
    fn name(&self) -> &str;

    /// Creates the read-model tables if they are missing (runs at every start).
    fn setup(&self, tx: &Transaction<'_>) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Empties the read model (for [`PgProjectionRunner::rebuild`]).
    fn reset(&self, tx: &Transaction<'_>) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies one event. An error stops the runner; nothing of the batch is kept.
    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        event: &SourcedEvent,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Parses a connection string, either a URL (`postgres://user:password@host:port/db`) or
/// key=value pairs (`host=127.0.0.1 port=5432 user=app dbname=app`), and fills in a
/// connect timeout and an application name when it has none.
pub fn parse_config(text: &str) -> Result<Config, FlowError> {
    let mut config: Config = text.parse().map_err(|e: tokio_postgres::Error| {
        let cause = std::error::Error::source(&e).map_or_else(String::new, |c| format!(": {c}"));
        FlowError::Invalid {
            what: "postgres connection string",
            message: format!(
                "{e}{cause} (expected postgres://user@host:port/dbname or \
                 'host=... port=... user=... dbname=...')"
            ),
        }
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT_DEFAULT);
    }
    if config.get_application_name().is_none() {
        config.application_name("herald-flow");
    }
    Ok(config)
}

/// Connects without TLS and drives the connection on a spawned task (which ends, logging
/// why, when the connection is lost; the client's calls then fail with a closed error).
pub async fn connect(config: &Config) -> Result<Client, FlowError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %FlowError::Postgres(e), "postgres connection lost");
        }
    });
    Ok(client)
}

/// Runs one projection against one source and one Postgres database.
pub struct PgProjectionRunner<S, P> {
    source: S,
    projection: P,
    client: Client,
    /// Set when the runner connected itself: it then reconnects after a lost connection.
    config: Option<Config>,
    batch_max: usize,
    poll_interval: Duration,
}

impl<S: EventSource, P: PgProjection> PgProjectionRunner<S, P> {
    /// Connects to the database `url` (see [`parse_config`]), creates the checkpoint
    /// table and the projection's tables. A lost connection is re-established by the
    /// next [`step`](Self::step).
    pub async fn connect(url: &str, source: S, projection: P) -> Result<Self, FlowError> {
        let config = parse_config(url)?;
        let client = connect(&config).await?;
        Self::start(client, Some(config), source, projection).await
    }

    /// A runner on a client the caller connected (and whose connection task it drives);
    /// after that connection is lost every call fails with [`FlowError::Postgres`].
    pub async fn with_client(client: Client, source: S, projection: P) -> Result<Self, FlowError> {
        Self::start(client, None, source, projection).await
    }

    async fn start(
        mut client: Client,
        config: Option<Config>,
        source: S,
        projection: P,
    ) -> Result<Self, FlowError> {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK_KEY])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS herald_checkpoints (
                 name TEXT PRIMARY KEY,
                 position BIGINT NOT NULL
             )",
        )
        .await?;
        if let Err(e) = projection.setup(&tx).await {
            tx.rollback().await?;
            return Err(handler_error(projection.name(), None, e));
        }
        tx.commit().await?;
        Ok(Self {
            source,
            projection,
            client,
            config,
            batch_max: BATCH_MAX_DEFAULT,
            poll_interval: POLL_INTERVAL_DEFAULT,
        })
    }

    consumer::pacing_builders!();

    /// The database client, to query the read model.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn projection(&self) -> &P {
        &self.projection
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// The last position applied, `None` before the first event.
    pub async fn checkpoint(&self) -> Result<Option<u64>, FlowError> {
        read_checkpoint(&self.client, self.projection.name()).await
    }

    /// Reads and applies one batch; returns how many events were applied.
    pub async fn step(&mut self) -> Result<usize, FlowError> {
        Ok(self.step_batch().await?.unwrap_or(0))
    }

    /// One batch; `None` when nothing is newer than the checkpoint.
    async fn step_batch(&mut self) -> Result<Option<usize>, FlowError> {
        self.reconnect_if_lost().await?;
        let name = self.projection.name().to_string();
        let checkpoint = read_checkpoint(&self.client, &name).await?;
        let Some(pending) = consumer::next_batch(checkpoint, &self.source, self.batch_max).await?
        else {
            return Ok(None);
        };
        let tx = self.client.transaction().await?;
        lock_checkpoint(&tx, &name).await?;
        if read_checkpoint(&tx, &name).await? != pending.checkpoint {
            // Another runner of this projection applied the batch meanwhile: read again.
            tx.rollback().await?;
            tracing::warn!(projection = %name, "checkpoint moved by another runner");
            return Ok(Some(0));
        }
        for event in &pending.batch.events {
            if let Err(e) = self.projection.apply(&tx, event).await {
                // A handler that failed because the connection broke is a Postgres error.
                tx.rollback().await?;
                return Err(handler_error(&name, Some(event), e));
            }
        }
        write_checkpoint(&tx, &name, pending.scanned_to).await?;
        tx.commit().await?;
        Ok(Some(pending.batch.events.len()))
    }

    async fn reconnect_if_lost(&mut self) -> Result<(), FlowError> {
        if let (true, Some(config)) = (self.client.is_closed(), &self.config) {
            self.client = connect(config).await?;
            tracing::info!(
                projection = self.projection.name(),
                "reconnected to postgres"
            );
        }
        Ok(())
    }

    /// Applies batches until the source has nothing newer; returns the events applied.
    pub async fn catch_up(&mut self) -> Result<u64, FlowError> {
        consumer::drain(async || self.step_batch().await).await
    }

    /// Empties the read model and its checkpoint in one transaction, then catches up
    /// from the beginning of the source. Returns the events applied.
    pub async fn rebuild(&mut self) -> Result<u64, FlowError> {
        self.reconnect_if_lost().await?;
        let name = self.projection.name().to_string();
        let tx = self.client.transaction().await?;
        lock_checkpoint(&tx, &name).await?;
        let emptied = match self.projection.reset(&tx).await {
            Ok(()) => self.projection.setup(&tx).await,
            Err(e) => Err(e),
        };
        if let Err(e) = emptied {
            tx.rollback().await?;
            return Err(handler_error(&name, None, e));
        }
        tx.execute("DELETE FROM herald_checkpoints WHERE name = $1", &[&name])
            .await?;
        tx.commit().await?;
        self.catch_up().await
    }

    /// Head of the source minus the checkpoint.
    pub async fn lag(&self) -> Result<Lag, FlowError> {
        let head = self.source.head().await?;
        Ok(Lag::new(head, self.checkpoint().await?))
    }

    /// Applies batches until `shutdown` resolves, polling an idle source every poll
    /// interval. Transient failures (Herald or Postgres unreachable, connection lost,
    /// serialization conflicts) are retried with backoff, reconnecting as needed; any
    /// other error (a handler rejecting an event) is returned.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), FlowError> {
        let name = format!("projection:{}", self.projection.name());
        let poll_interval = self.poll_interval;
        consumer::run_until(&name, poll_interval, shutdown, async || self.step().await).await
    }
}

/// Holds the projection's checkpoint row against other runners until the transaction ends.
async fn lock_checkpoint(tx: &Transaction<'_>, name: &str) -> Result<(), FlowError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('herald_checkpoints:' || $1::TEXT))",
        &[&name],
    )
    .await?;
    Ok(())
}

async fn read_checkpoint(
    client: &impl GenericClient,
    name: &str,
) -> Result<Option<u64>, FlowError> {
    let row = client
        .query_opt(
            "SELECT position FROM herald_checkpoints WHERE name = $1",
            &[&name],
        )
        .await?;
    let position: Option<i64> = row.map(|r| r.try_get(0)).transpose()?;
    position.map(|p| db::from_sql_int(p, name)).transpose()
}

async fn write_checkpoint(
    tx: &Transaction<'_>,
    name: &str,
    position: u64,
) -> Result<(), FlowError> {
    let position = db::to_sql_int(position)?;
    tx.execute(
        "INSERT INTO herald_checkpoints (name, position) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        &[&name, &position],
    )
    .await?;
    Ok(())
}
