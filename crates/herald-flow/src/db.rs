//! SQLite plumbing shared by projections and sagas: opening with durable settings and the
//! checkpoint table. Invariant: a checkpoint is only ever written inside the transaction
//! that applied the events it covers.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction};

use crate::FlowError;

/// Opens (creating) a database file: WAL journal, `synchronous=FULL` (every commit is
/// fsynced before it returns), a busy timeout for readers in other processes.
pub(crate) fn open(path: &Path) -> Result<Connection, FlowError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    init(&conn)?;
    Ok(conn)
}

pub(crate) fn open_in_memory() -> Result<Connection, FlowError> {
    let conn = Connection::open_in_memory()?;
    init(&conn)?;
    Ok(conn)
}

fn init(conn: &Connection) -> Result<(), FlowError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS herald_checkpoints (
             name TEXT PRIMARY KEY,
             position INTEGER NOT NULL
         );",
    )?;
    Ok(())
}

pub(crate) fn checkpoint(conn: &Connection, name: &str) -> Result<Option<u64>, FlowError> {
    let position: Option<i64> = conn
        .query_row(
            "SELECT position FROM herald_checkpoints WHERE name = ?1",
            [name],
            |row| row.get(0),
        )
        .optional()?;
    position.map(|p| from_sql_int(p, name)).transpose()
}

/// A stored checkpoint position (SQL integers are signed) back to a position.
pub(crate) fn from_sql_int(position: i64, name: &str) -> Result<u64, FlowError> {
    u64::try_from(position).map_err(|_| FlowError::Corrupt {
        what: "checkpoint",
        message: format!("negative position {position} for {name}"),
    })
}

pub(crate) fn set_checkpoint(
    tx: &Transaction<'_>,
    name: &str,
    position: u64,
) -> Result<(), FlowError> {
    let position = to_sql_int(position)?;
    tx.execute(
        "INSERT INTO herald_checkpoints (name, position) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET position = excluded.position",
        rusqlite::params![name, position],
    )?;
    Ok(())
}

pub(crate) fn clear_checkpoint(tx: &Transaction<'_>, name: &str) -> Result<(), FlowError> {
    tx.execute("DELETE FROM herald_checkpoints WHERE name = ?1", [name])?;
    Ok(())
}

pub(crate) fn to_sql_int(value: u64) -> Result<i64, FlowError> {
    i64::try_from(value).map_err(|_| FlowError::Invalid {
        what: "position",
        message: format!("{value} does not fit a signed 64-bit SQL integer"),
    })
}
