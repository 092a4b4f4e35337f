//! Projection kill -9 test, once per store (SQLite file, Postgres database): the
//! order-summary projection is killed with SIGKILL several times while events keep
//! arriving, restarted each time on the same database; the read model then equals a
//! from-scratch rebuild and the event store (no event applied twice, none skipped: each
//! row counts the events applied to it).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{query_i64, run_shop_ok, seed, spawn_shop, wait_for, Herald};
use herald_testkit::PgServer;
use rand::{Rng, SeedableRng};
use shop::projection::{ReadModel, SummaryRow, Totals};

const ORDERS: usize = 60;
const CHECKPOINT_SQL: &str = "SELECT position FROM herald_checkpoints WHERE name = 'order-summary'";

#[test]
fn killed_sqlite_projection_equals_a_rebuild() {
    killed_projection_equals_a_rebuild(Kind::Sqlite);
}

#[test]
fn killed_postgres_projection_equals_a_rebuild() {
    killed_projection_equals_a_rebuild(Kind::Postgres);
}

enum Kind {
    Sqlite,
    Postgres,
}

/// Where the live and the rebuilt read models are.
enum Store {
    Sqlite {
        live: PathBuf,
        fresh: PathBuf,
    },
    Postgres {
        server: PgServer,
        live: String,
        fresh: String,
    },
}

impl Store {
    fn new(kind: Kind, state_dir: &Path) -> Store {
        match kind {
            Kind::Sqlite => Store::Sqlite {
                live: state_dir.join("live.db"),
                fresh: state_dir.join("fresh.db"),
            },
            Kind::Postgres => {
                let server = PgServer::start();
                let live = server.create_database("live");
                let fresh = server.create_database("fresh");
                Store::Postgres {
                    server,
                    live,
                    fresh,
                }
            }
        }
    }

    /// `shop projection` arguments for the live or the fresh model.
    fn projection_args(&self, fresh: bool) -> Vec<String> {
        match self {
            Store::Sqlite { live, fresh: f } => {
                let path = if fresh { f } else { live };
                vec!["--db".into(), path.to_str().expect("utf-8 path").into()]
            }
            Store::Postgres { live, fresh: f, .. } => {
                vec!["--postgres".into(), if fresh { f } else { live }.clone()]
            }
        }
    }

    /// `shop check` arguments comparing the live model.
    fn check_args(&self) -> Vec<String> {
        let mut args = self.projection_args(false);
        args[0] = match self {
            Store::Sqlite { .. } => "--projection-db".into(),
            Store::Postgres { .. } => "--projection-postgres".into(),
        };
        args
    }

    /// The live model's checkpoint as another process sees it.
    fn checkpoint(&self) -> Option<i64> {
        match self {
            Store::Sqlite { live, .. } => query_i64(live, CHECKPOINT_SQL),
            Store::Postgres { server, .. } => server.query_i64("live", CHECKPOINT_SQL),
        }
    }

    fn dump(&self, fresh: bool) -> (Vec<SummaryRow>, Totals) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let model = match self {
                Store::Sqlite { live, fresh: f } => {
                    ReadModel::Sqlite(if fresh { f } else { live }.clone())
                }
                Store::Postgres { live, fresh: f, .. } => {
                    ReadModel::postgres(if fresh { f } else { live })
                        .await
                        .expect("connect to postgres")
                }
            };
            model.dump().await.expect("dump the read model")
        })
    }
}

fn killed_projection_equals_a_rebuild(kind: Kind) {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let herald = Herald::start();
    let state_dir = herald.dir("state");
    let state = state_dir.to_str().expect("utf-8 path").to_string();
    let store = Store::new(kind, &state_dir);
    run_shop_ok(&herald.url, &["setup"]);
    let _services: Vec<_> = ["order", "payment", "inventory", "shipping"]
        .iter()
        .map(|s| {
            spawn_shop(
                s,
                &herald.url,
                &[s, "--variant", "choreography", "--state-dir", &state],
            )
        })
        .collect();
    let orders = ORDERS.to_string();
    let seed_text = seed.to_string();
    let mut placing = spawn_shop(
        "place",
        &herald.url,
        &[
            "place", "--orders", &orders, "--seed", &seed_text, "--run", "p",
        ],
    );
    // Small batches: many transactions, so a kill lands between and inside them.
    let mut live_args = vec!["projection".to_string()];
    live_args.extend(store.projection_args(false));
    live_args.extend(["--batch".to_string(), "2".to_string()]);
    let projection_args: Vec<&str> = live_args.iter().map(String::as_str).collect();
    let mut projection = spawn_shop("projection", &herald.url, &projection_args);
    let mut last = -1;
    for round in 0..3 {
        let ahead = 1 + rng.random_range(0..20);
        let target = last + ahead;
        let at = wait_for("the projection to advance", Duration::from_secs(60), || {
            let position = store.checkpoint()?;
            (position >= target).then_some(position)
        });
        projection.kill9();
        let on_disk = store.checkpoint().unwrap_or(-1);
        eprintln!("round {round}: killed the projection near checkpoint {at} (on disk {on_disk})");
        last = on_disk;
        projection = spawn_shop("projection", &herald.url, &projection_args);
    }
    wait_for("orders to be placed", Duration::from_secs(60), || {
        placing.try_finished()
    });
    // The live model, caught up, agrees with the store (status and event count per order).
    let mut check = vec!["check", "--orders", &orders, "--timeout-secs", "90"];
    let check_args = store.check_args();
    check.extend(check_args.iter().map(String::as_str));
    let report = run_shop_ok(&herald.url, &check);
    eprintln!("{report}");
    projection.kill9();
    // And with a from-scratch rebuild into a fresh database.
    let fresh_args = store.projection_args(true);
    let mut rebuild: Vec<&str> = vec!["projection", "--rebuild", "--once"];
    rebuild.extend(fresh_args.iter().map(String::as_str));
    run_shop_ok(&herald.url, &rebuild);
    let live_args = store.projection_args(false);
    let mut once: Vec<&str> = vec!["projection", "--once"];
    once.extend(live_args.iter().map(String::as_str));
    run_shop_ok(&herald.url, &once);
    let live_model = store.dump(false);
    let fresh_model = store.dump(true);
    assert_eq!(live_model.0.len(), ORDERS);
    assert_eq!(
        live_model, fresh_model,
        "killed-and-resumed model differs from a rebuild"
    );
}
