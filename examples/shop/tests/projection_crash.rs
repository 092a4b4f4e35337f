//! Projection kill -9 test: the order-summary projection is killed with SIGKILL several
//! times while events keep arriving, restarted each time on the same database; the read
//! model then equals a from-scratch rebuild and the event store (no event applied twice,
//! none skipped: each row counts the events applied to it).

mod common;

use std::time::Duration;

use common::{query_i64, run_shop_ok, seed, spawn_shop, wait_for, Herald};
use rand::{Rng, SeedableRng};
use shop::projection::dump;

const ORDERS: usize = 60;
const CHECKPOINT_SQL: &str = "SELECT position FROM herald_checkpoints WHERE name = 'order-summary'";

#[test]
fn killed_projection_equals_a_rebuild() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let herald = Herald::start();
    let state_dir = herald.dir("state");
    let state = state_dir.to_str().expect("utf-8 path").to_string();
    let live = state_dir.join("live.db");
    let live_path = live.to_str().expect("utf-8 path").to_string();
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
    let projection_args = ["projection", "--db", &live_path, "--batch", "2"];
    let mut projection = spawn_shop("projection", &herald.url, &projection_args);
    let mut last = -1;
    for round in 0..3 {
        let ahead = 1 + rng.random_range(0..20);
        let target = last + ahead;
        let at = wait_for("the projection to advance", Duration::from_secs(60), || {
            let position = query_i64(&live, CHECKPOINT_SQL)?;
            (position >= target).then_some(position)
        });
        projection.kill9();
        let on_disk = query_i64(&live, CHECKPOINT_SQL).unwrap_or(-1);
        eprintln!("round {round}: killed the projection near checkpoint {at} (on disk {on_disk})");
        last = on_disk;
        projection = spawn_shop("projection", &herald.url, &projection_args);
    }
    wait_for("orders to be placed", Duration::from_secs(60), || {
        placing.try_finished()
    });
    // The live model, caught up, agrees with the store (status and event count per order).
    let report = run_shop_ok(
        &herald.url,
        &[
            "check",
            "--orders",
            &orders,
            "--projection-db",
            &live_path,
            "--timeout-secs",
            "90",
        ],
    );
    eprintln!("{report}");
    projection.kill9();
    // And with a from-scratch rebuild into a fresh database.
    let fresh = state_dir.join("fresh.db");
    run_shop_ok(
        &herald.url,
        &[
            "projection",
            "--db",
            fresh.to_str().expect("utf-8"),
            "--rebuild",
            "--once",
        ],
    );
    run_shop_ok(&herald.url, &["projection", "--db", &live_path, "--once"]);
    let open = |path: &std::path::Path| rusqlite::Connection::open(path).expect("open read model");
    let live_model = dump(&open(&live)).expect("dump live");
    let fresh_model = dump(&open(&fresh)).expect("dump fresh");
    assert_eq!(live_model.0.len(), ORDERS);
    assert_eq!(
        live_model, fresh_model,
        "killed-and-resumed model differs from a rebuild"
    );
}
