//! The example's consistency run with a small N, both variants: real `herald serve`, each
//! service its own `shop` process, seeded orders with injected failures, then `shop check`
//! (every order completed or fully compensated, money and stock add up, no doubled effect,
//! the order-summary projection agrees with the store).

mod common;

use common::{run_shop_ok, seed, spawn_shop, Herald, Process};

const ORDERS: &str = "24";

fn start_services(herald: &Herald, variant: &str) -> Vec<Process> {
    let state = herald.dir("state");
    let state = state.to_str().expect("utf-8 path");
    let mut processes: Vec<Process> = ["order", "payment", "inventory", "shipping"]
        .iter()
        .map(|service| {
            spawn_shop(
                service,
                &herald.url,
                &[service, "--variant", variant, "--state-dir", state],
            )
        })
        .collect();
    if variant == "orchestration" {
        processes.push(spawn_shop(
            "orchestrator",
            &herald.url,
            &[
                "orchestrator",
                "--state-dir",
                state,
                "--step-timeout-ms",
                "15000",
            ],
        ));
    }
    let db = herald.dir("state").join("summary.db");
    processes.push(spawn_shop(
        "projection",
        &herald.url,
        &["projection", "--db", db.to_str().expect("utf-8 path")],
    ));
    processes
}

fn run(variant: &str) {
    let seed = seed().to_string();
    let herald = Herald::start();
    run_shop_ok(&herald.url, &["setup"]);
    let mut processes = start_services(&herald, variant);
    run_shop_ok(
        &herald.url,
        &[
            "place",
            "--orders",
            ORDERS,
            "--seed",
            &seed,
            "--failure-percent",
            "40",
            "--run",
            "c",
        ],
    );
    let db = herald.dir("state").join("summary.db");
    let report = run_shop_ok(
        &herald.url,
        &[
            "check",
            "--orders",
            ORDERS,
            "--projection-db",
            db.to_str().expect("utf-8"),
            "--timeout-secs",
            "90",
        ],
    );
    eprintln!("{report}");
    for process in &mut processes {
        process.assert_running();
    }
}

#[test]
fn choreography_run_is_consistent() {
    run("choreography");
}

#[test]
fn orchestration_run_is_consistent() {
    run("orchestration");
}
