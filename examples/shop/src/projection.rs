//! The order-summary read model (CQRS query side): one row per order with its status and
//! the number of order events applied, plus per-status totals. Built by the projection
//! runtime from the `order-` category; `events` makes a double-applied event visible.

use herald_flow::source::SourcedEvent;
use herald_flow::{HandlerError, Projection};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::domain::{Order, OrderEvent};

pub const NAME: &str = "order-summary";

/// The projection (stateless: everything lives in SQLite).
#[derive(Debug, Default)]
pub struct OrderSummary;

impl Projection for OrderSummary {
    fn name(&self) -> &str {
        NAME
    }

    fn setup(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS order_summary (
                 order_id TEXT PRIMARY KEY,
                 customer TEXT NOT NULL,
                 sku TEXT NOT NULL,
                 quantity INTEGER NOT NULL,
                 amount INTEGER NOT NULL,
                 status TEXT NOT NULL,
                 reason TEXT,
                 events INTEGER NOT NULL,
                 last_position INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS order_totals (
                 status TEXT PRIMARY KEY,
                 orders INTEGER NOT NULL,
                 amount INTEGER NOT NULL
             );",
        )?;
        Ok(())
    }

    fn reset(&self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute_batch("DROP TABLE IF EXISTS order_summary; DROP TABLE IF EXISTS order_totals;")?;
        Ok(())
    }

    fn apply(&mut self, tx: &Transaction<'_>, event: &SourcedEvent) -> Result<(), HandlerError> {
        let decoded = herald_flow::aggregate::decode::<Order>(&event.event).map_err(|e| {
            HandlerError(format!("undecodable order event {}: {e}", event.event.id))
        })?;
        let position =
            i64::try_from(event.position).map_err(|_| HandlerError("position overflow".into()))?;
        match decoded {
            OrderEvent::Placed { order } => {
                tx.execute(
                    "INSERT INTO order_summary
                         (order_id, customer, sku, quantity, amount, status, reason, events, last_position)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'placed', NULL, 1, ?6)",
                    params![
                        order.order_id,
                        order.customer,
                        order.sku,
                        i64::try_from(order.quantity).unwrap_or(i64::MAX),
                        i64::try_from(order.amount).unwrap_or(i64::MAX),
                        position
                    ],
                )?;
                add_total(tx, "placed", 1, order.amount)?;
            }
            OrderEvent::Completed { order } => {
                set_status(tx, &order.order_id, "completed", None, position)?;
                add_total(tx, "placed", -1, order.amount)?;
                add_total(tx, "completed", 1, order.amount)?;
            }
            OrderEvent::Cancelled { order, reason } => {
                set_status(tx, &order.order_id, "cancelled", Some(&reason), position)?;
                add_total(tx, "placed", -1, order.amount)?;
                add_total(tx, "cancelled", 1, order.amount)?;
            }
        }
        Ok(())
    }
}

fn set_status(
    tx: &Transaction<'_>,
    order_id: &str,
    status: &str,
    reason: Option<&str>,
    position: i64,
) -> Result<(), HandlerError> {
    let changed = tx.execute(
        "UPDATE order_summary SET status = ?2, reason = ?3, events = events + 1, last_position = ?4
         WHERE order_id = ?1",
        params![order_id, status, reason, position],
    )?;
    if changed == 0 {
        return Err(HandlerError(format!(
            "order {order_id} is {status} but was never placed"
        )));
    }
    Ok(())
}

fn add_total(
    tx: &Transaction<'_>,
    status: &str,
    orders: i64,
    amount: u64,
) -> Result<(), HandlerError> {
    let amount = i64::try_from(amount).unwrap_or(i64::MAX);
    let signed = if orders < 0 { -amount } else { amount };
    tx.execute(
        "INSERT INTO order_totals (status, orders, amount) VALUES (?1, ?2, ?3)
         ON CONFLICT(status) DO UPDATE SET orders = orders + ?2, amount = amount + ?3",
        params![status, orders, signed],
    )?;
    Ok(())
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

/// Every row, by order id, and the totals.
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
    let mut statement = conn
        .prepare("SELECT order_id, status, reason, events FROM order_summary ORDER BY order_id")?;
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
    let mut statement =
        conn.prepare("SELECT status, orders, amount FROM order_totals ORDER BY status")?;
    let totals = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok((rows, totals))
}
