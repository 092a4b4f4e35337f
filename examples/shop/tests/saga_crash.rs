//! Saga crash test: the orchestrator is killed with SIGKILL while sagas are in flight
//! (orders still arriving), restarted on its state directory, killed and restarted once
//! more; afterwards every saga completes or compensates and the shop is consistent.

mod common;

use std::time::Duration;

use common::{query_i64, run_shop_ok, seed, spawn_shop, wait_for, Herald};
use rand::{Rng, SeedableRng};

const ORDERS: usize = 40;

#[test]
fn killed_orchestrator_resumes_every_saga() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let herald = Herald::start();
    let state_dir = herald.dir("state");
    let state = state_dir.to_str().expect("utf-8 path").to_string();
    let saga_db = state_dir.join("orchestrator.db");
    run_shop_ok(&herald.url, &["setup"]);
    let _services: Vec<_> = ["order", "payment", "inventory", "shipping"]
        .iter()
        .map(|s| {
            spawn_shop(
                s,
                &herald.url,
                &[s, "--variant", "orchestration", "--state-dir", &state],
            )
        })
        .collect();
    let orchestrator_args = [
        "orchestrator",
        "--state-dir",
        &state,
        "--step-timeout-ms",
        "15000",
    ];
    let mut orchestrator = spawn_shop("orchestrator", &herald.url, &orchestrator_args);
    // Orders arrive while the orchestrator works and dies.
    let orders = ORDERS.to_string();
    let seed_text = seed.to_string();
    let mut placing = spawn_shop(
        "place",
        &herald.url,
        &[
            "place",
            "--orders",
            &orders,
            "--seed",
            &seed_text,
            "--failure-percent",
            "40",
            "--run",
            "k",
        ],
    );
    let mut in_flight_at_kill = Vec::new();
    let mut started_before = 0;
    for round in 0..2 {
        // Each incarnation starts some sagas of its own before it dies.
        let started_min = started_before + 3 + rng.random_range(0..5);
        wait_for("sagas to start", Duration::from_secs(60), || {
            let started = query_i64(&saga_db, "SELECT COUNT(*) FROM herald_sagas")?;
            (started >= started_min).then_some(())
        });
        orchestrator.kill9();
        let started = query_i64(&saga_db, "SELECT COUNT(*) FROM herald_sagas").unwrap_or(0);
        let open = query_i64(
            &saga_db,
            "SELECT COUNT(*) FROM herald_sagas WHERE status IN ('running', 'compensating')",
        )
        .unwrap_or(0);
        eprintln!(
            "round {round}: killed the orchestrator with {started} sagas started, {open} open"
        );
        in_flight_at_kill.push((started, open));
        started_before = started;
        orchestrator = spawn_shop("orchestrator", &herald.url, &orchestrator_args);
    }
    // Every kill left work behind: open sagas, or orders not yet seen.
    for (started, open) in &in_flight_at_kill {
        assert!(
            *open > 0 || (*started as usize) < ORDERS,
            "kill came too late: {in_flight_at_kill:?}"
        );
    }
    wait_for("orders to be placed", Duration::from_secs(60), || {
        placing.try_finished()
    });
    let report = run_shop_ok(
        &herald.url,
        &["check", "--orders", &orders, "--timeout-secs", "90"],
    );
    eprintln!("{report}");
    let terminal = query_i64(
        &saga_db,
        "SELECT COUNT(*) FROM herald_sagas WHERE status IN ('completed', 'compensated')",
    );
    assert_eq!(
        terminal,
        Some(ORDERS as i64),
        "every saga completes or compensates"
    );
    orchestrator.assert_running();
}
