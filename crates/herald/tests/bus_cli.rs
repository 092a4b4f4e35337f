//! The bus CLI against a real server: `subscriptions create|list|describe|delete`,
//! `queue pull|ack|nack`, with human and `--json` output and readable errors.

mod bus_common;
mod common;

use std::time::Duration;

use bus_common::*;
use common::*;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn subscriptions_and_queue_commands() {
    let server = Server::start();
    let api = server.api();
    let url = server.url();
    api.create_topic("orders.eu", 1);
    let out = run_cli(
        &url,
        &[
            "subscriptions",
            "create",
            "billing",
            "--topic",
            "orders.*",
            "--filter",
            r#"{"type":["order.created"]}"#,
            "--visibility-timeout-ms",
            "60000",
            "--max-deliveries",
            "2",
        ],
        None,
        TIMEOUT,
    )
    .success();
    assert!(
        out.stdout.contains("created subscription billing"),
        "{}",
        out.stdout
    );
    let listed = run_cli(&url, &["--json", "subscriptions", "list"], None, TIMEOUT).success();
    assert_eq!(listed.json_lines()[0]["name"], "billing");
    let described = run_cli(
        &url,
        &["--json", "subscriptions", "describe", "billing"],
        None,
        TIMEOUT,
    )
    .success();
    assert_eq!(described.json_lines()[0]["max_deliveries"], 2);

    publish_data(
        &api,
        "orders.eu",
        "o1",
        "order.created",
        json!({"total": 1}),
    );
    publish_data(&api, "orders.eu", "o2", "order.paid", json!({"total": 2}));
    publish_data(
        &api,
        "orders.eu",
        "o3",
        "order.created",
        json!({"total": 3}),
    );
    wait_queued(&api, "billing", 2);

    let pulled = run_cli(
        &url,
        &["--json", "queue", "pull", "billing", "--max", "1"],
        None,
        TIMEOUT,
    )
    .success();
    let first = pulled.json_lines()[0].clone();
    assert_eq!(first["event"]["id"], "o1");
    let receipt = first["receipt"].as_str().expect("receipt").to_string();
    let nacked = run_cli(
        &url,
        &["queue", "nack", "billing", &receipt, "--reason", "later"],
        None,
        TIMEOUT,
    )
    .success();
    assert!(nacked.stdout.contains("released"), "{}", nacked.stdout);
    let human = run_cli(
        &url,
        &[
            "queue",
            "pull",
            "billing",
            "--max",
            "5",
            "--wait-ms",
            "2000",
        ],
        None,
        TIMEOUT,
    )
    .success();
    assert!(
        human.stdout.contains("id=o1") && human.stdout.contains("id=o3"),
        "{}",
        human.stdout
    );
    let receipts: Vec<String> = human
        .stdout
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .next()?
                .strip_prefix("receipt=")
                .map(str::to_string)
        })
        .collect();
    let mut args = vec!["queue", "ack", "billing"];
    args.extend(receipts.iter().map(String::as_str));
    let acked = run_cli(&url, &args, None, TIMEOUT).success();
    assert_eq!(acked.stdout.matches("acked").count(), 2, "{}", acked.stdout);
    assert!(pull(&api, "billing", 10, 1_000, 200).is_empty());

    let missing = run_cli(&url, &["queue", "pull", "nope"], None, TIMEOUT);
    assert!(!missing.status.success());
    assert!(
        missing.stderr.contains("subscription_not_found"),
        "{}",
        missing.stderr
    );
    let bad = run_cli(
        &url,
        &["subscriptions", "create", "x", "--topic", "a..b"],
        None,
        TIMEOUT,
    );
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("invalid"), "{}", bad.stderr);

    run_cli(&url, &["subscriptions", "delete", "billing"], None, TIMEOUT).success();
    api.get("/v1/subscriptions/billing")
        .expect_error(404, "subscription_not_found");
}
