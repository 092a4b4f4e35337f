//! The order-summary read model (CQRS query side): one row per order with its status and
//! the number of order events applied, plus per-status totals. Built by the projection
//! runtime from the `order-` category; `events` makes a double-applied event visible.
//!
//! One logic, two stores: [`writes`] turns an event into SQL statements written once in
//! the dialect both share (Postgres `$n` placeholders, rewritten to SQLite's `?n`), and
//! [`OrderSummary`] runs them as a [`Projection`] (SQLite) or a [`PgProjection`].

use herald_flow::pg::tokio_postgres::types::ToSql;
use herald_flow::pg::tokio_postgres::{self, Client};
use herald_flow::source::SourcedEvent;
use herald_flow::{HandlerError, PgProjection, Projection};
use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::domain::{Order, OrderEvent};

pub const NAME: &str = "order-summary";

/// Tables of the read model: BIGINT is Postgres' i64 and SQLite's INTEGER.
const SETUP_SQL: &str = "CREATE TABLE IF NOT EXISTS order_summary (
         order_id TEXT PRIMARY KEY,
         customer TEXT NOT NULL,
         sku TEXT NOT NULL,
         quantity BIGINT NOT NULL,
         amount BIGINT NOT NULL,
         status TEXT NOT NULL,
         reason TEXT,
         events BIGINT NOT NULL,
         last_position BIGINT NOT NULL
     );
     CREATE TABLE IF NOT EXISTS order_totals (
         status TEXT PRIMARY KEY,
         orders BIGINT NOT NULL,
         amount BIGINT NOT NULL
     );";
const RESET_SQL: &str = "DROP TABLE IF EXISTS order_summary; DROP TABLE IF EXISTS order_totals;";
const INSERT_ORDER_SQL: &str = "INSERT INTO order_summary
         (order_id, customer, sku, quantity, amount, status, reason, events, last_position)
     VALUES ($1, $2, $3, $4, $5, 'placed', NULL, 1, $6)";
const SET_STATUS_SQL: &str = "UPDATE order_summary
     SET status = $2, reason = $3, events = events + 1, last_position = $4
     WHERE order_id = $1";
const ADD_TOTAL_SQL: &str = "INSERT INTO order_totals (status, orders, amount) VALUES ($1, $2, $3)
     ON CONFLICT (status) DO UPDATE SET orders = order_totals.orders + excluded.orders,
         amount = order_totals.amount + excluded.amount";
const ROWS_SQL: &str = "SELECT order_id, status, reason, events FROM order_summary";
const TOTALS_SQL: &str = "SELECT status, orders, amount FROM order_totals";

/// A statement parameter (the types the read model uses).
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(Option<String>),
    Int(i64),
}

/// One statement of an event's effect on the read model.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// Postgres dialect (`$n`); see [`sqlite_sql`].
    pub sql: &'static str,
    pub params: Vec<Param>,
    /// When set, the statement must change a row, else this is the handler's error.
    pub must_change: Option<String>,
}

/// The statements that apply `event` (pure: no I/O).
pub fn writes(event: &SourcedEvent) -> Result<Vec<Write>, HandlerError> {
    let decoded = herald_flow::aggregate::decode::<Order>(&event.event)
        .map_err(|e| HandlerError(format!("undecodable order event {}: {e}", event.event.id)))?;
    let position =
        i64::try_from(event.position).map_err(|_| HandlerError("position overflow".into()))?;
    let writes = match decoded {
        OrderEvent::Placed { order } => vec![
            Write {
                sql: INSERT_ORDER_SQL,
                params: vec![
                    text(&order.order_id),
                    text(&order.customer),
                    text(&order.sku),
                    Param::Int(saturating(order.quantity)),
                    Param::Int(saturating(order.amount)),
                    Param::Int(position),
                ],
                must_change: None,
            },
            add_total("placed", 1, order.amount),
        ],
        OrderEvent::Completed { order } => vec![
            set_status(&order.order_id, "completed", None, position),
            add_total("placed", -1, order.amount),
            add_total("completed", 1, order.amount),
        ],
        OrderEvent::Cancelled { order, reason } => vec![
            set_status(&order.order_id, "cancelled", Some(&reason), position),
            add_total("placed", -1, order.amount),
            add_total("cancelled", 1, order.amount),
        ],
    };
    Ok(writes)
}

fn text(value: &str) -> Param {
    Param::Text(Some(value.to_string()))
}

fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn set_status(order_id: &str, status: &str, reason: Option<&str>, position: i64) -> Write {
    Write {
        sql: SET_STATUS_SQL,
        params: vec![
            text(order_id),
            text(status),
            Param::Text(reason.map(str::to_string)),
            Param::Int(position),
        ],
        must_change: Some(format!("order {order_id} is {status} but was never placed")),
    }
}

fn add_total(status: &str, orders: i64, amount: u64) -> Write {
    let amount = saturating(amount);
    let signed = if orders < 0 { -amount } else { amount };
    Write {
        sql: ADD_TOTAL_SQL,
        params: vec![text(status), Param::Int(orders), Param::Int(signed)],
        must_change: None,
    }
}

/// Postgres placeholders (`$1`) as SQLite's numbered ones (`?1`); the statements here
/// have no `$` anywhere else.
pub fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

fn check_changed(write: &Write, changed: u64) -> Result<(), HandlerError> {
    match &write.must_change {
        Some(message) if changed == 0 => Err(HandlerError(message.clone())),
        _ => Ok(()),
    }
}

/// The projection (stateless: everything lives in the database).
#[derive(Debug, Default)]
pub struct OrderSummary;

impl Projection for OrderSummary {
    fn name(&self) -> &str {
        NAME
    }

    fn setup(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute_batch(SETUP_SQL)?;
        Ok(())
    }

    fn reset(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute_batch(RESET_SQL)?;
        Ok(())
    }

    fn apply(&mut self, tx: &Transaction<'_>, event: &SourcedEvent) -> Result<(), HandlerError> {
        for write in writes(event)? {
            let params = write.params.iter().map(|p| match p {
                Param::Text(t) => rusqlite::types::Value::from(t.clone()),
                Param::Int(i) => rusqlite::types::Value::from(*i),
            });
            let changed = tx.execute(&sqlite_sql(write.sql), rusqlite::params_from_iter(params))?;
            check_changed(&write, changed as u64)?;
        }
        Ok(())
    }
}

impl PgProjection for OrderSummary {
    fn name(&self) -> &str {
        NAME
    }

    async fn setup(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), HandlerError> {
        tx.batch_execute(SETUP_SQL).await?;
        Ok(())
    }

    async fn reset(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), HandlerError> {
        tx.batch_execute(RESET_SQL).await?;
        Ok(())
    }

    async fn apply(
        &mut self,
        tx: &tokio_postgres::Transaction<'_>,
        event: &SourcedEvent,
    ) -> Result<(), HandlerError> {
        for write in writes(event)? {
            let params: Vec<&(dyn ToSql + Sync)> = write
                .params
                .iter()
                .map(|p| match p {
                    Param::Text(t) => t as &(dyn ToSql + Sync),
                    Param::Int(i) => i as &(dyn ToSql + Sync),
                })
                .collect();
            let changed = tx.execute(write.sql, &params).await?;
            check_changed(&write, changed)?;
        }
        Ok(())
    }
}

/// One row of the read model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub order_id: String,
    pub status: String,
    pub reason: Option<String>,
    pub events: i64,
}

/// Per-status totals: `(status, orders, amount)`.
pub type Totals = Vec<(String, i64, i64)>;

/// Rows by order id and totals by status (sorted here: the stores collate differently).
fn sorted(mut rows: Vec<SummaryRow>, mut totals: Totals) -> (Vec<SummaryRow>, Totals) {
    rows.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    totals.sort();
    (rows, totals)
}

/// Every row and the totals of the SQLite read model (empty before the first event).
pub fn dump(conn: &Connection) -> rusqlite::Result<(Vec<SummaryRow>, Totals)> {
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'order_summary'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut statement = conn.prepare(ROWS_SQL)?;
    let rows = statement
        .query_map([], |row| {
            Ok(SummaryRow {
                order_id: row.get(0)?,
                status: row.get(1)?,
                reason: row.get(2)?,
                events: row.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut statement = conn.prepare(TOTALS_SQL)?;
    let totals = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok(sorted(rows, totals))
}

/// Every row and the totals of the Postgres read model (empty before the first event).
pub async fn dump_pg(client: &Client) -> Result<(Vec<SummaryRow>, Totals), tokio_postgres::Error> {
    let exists = client
        .query_one("SELECT to_regclass('order_summary') IS NOT NULL", &[])
        .await?;
    if !exists.try_get::<_, bool>(0)? {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut rows = Vec::new();
    for row in client.query(ROWS_SQL, &[]).await? {
        rows.push(SummaryRow {
            order_id: row.try_get(0)?,
            status: row.try_get(1)?,
            reason: row.try_get(2)?,
            events: row.try_get(3)?,
        });
    }
    let mut totals = Vec::new();
    for row in client.query(TOTALS_SQL, &[]).await? {
        totals.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    Ok(sorted(rows, totals))
}

/// A read model to inspect: an SQLite file (opened read-only at each dump, so another
/// process may be writing it) or a Postgres database.
pub enum ReadModel {
    Sqlite(std::path::PathBuf),
    Postgres(Client),
}

impl ReadModel {
    /// Connects to the Postgres database `url` (see [`herald_flow::pg::parse_config`]).
    pub async fn postgres(url: &str) -> Result<Self, herald_flow::FlowError> {
        let config = herald_flow::pg::parse_config(url)?;
        Ok(ReadModel::Postgres(
            herald_flow::pg::connect(&config).await?,
        ))
    }

    /// Rows and totals (empty before the first event).
    pub async fn dump(&self) -> anyhow::Result<(Vec<SummaryRow>, Totals)> {
        match self {
            ReadModel::Sqlite(path) => {
                let conn =
                    Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(dump(&conn)?)
            }
            ReadModel::Postgres(client) => Ok(dump_pg(client)
                .await
                .map_err(herald_flow::FlowError::Postgres)?),
        }
    }
}
