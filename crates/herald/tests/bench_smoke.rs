//! Smoke run of `herald bench`: a second of the embedded transport with `--json`
//! must print one report that parses and shows messages flowing; Herald on JetStream runs
//! next to raw JetStream and `bench table` puts them side by side. (The real benchmarks
//! are `bench/compare.sh`; see BENCHMARKS.md.)

mod common;

use std::process::Command;

use common::nats::NatsServer;

/// A one-second run: two producers, one consumer group, small messages in batches.
const SHORT_RUN: [&str; 10] = [
    "--duration",
    "1",
    "--producers",
    "2",
    "--groups",
    "1",
    "--message-bytes",
    "256",
    "--batch",
    "50",
];

/// Runs `herald bench ARGS --json` and returns its report.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env("NO_COLOR", "1")
        .output()
        .expect("run herald bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "herald bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("one JSON line");
    serde_json::from_str(line).expect("JSON report")
}

#[test]
fn bench_embedded_json_reports_throughput() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let mut args = vec!["--transport", "embedded"];
    args.extend(SHORT_RUN);
    args.extend(["--fsync", "never", "--data-dir", data]);
    let report = bench_json(&args);
    assert_eq!(report["system"], "herald-embedded");
    let rate = report["publish_msgs_per_s"]
        .as_f64()
        .expect("publish_msgs_per_s");
    assert!(rate > 0.0, "no throughput: {report}");
    assert!(report["published"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(report["publish_failed"], 0, "{report}");
    assert!(report["delivered"].as_u64().unwrap_or(0) > 0, "{report}");
    assert!(
        report["end_to_end_latency"]["p99_us"].as_f64().is_some(),
        "{report}"
    );
    assert!(
        report["publish_ack_latency"]["p50_us"].as_f64().is_some(),
        "{report}"
    );
}

#[test]
fn bench_limits_json_parses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "bench",
            "limits",
            "--write-bytes",
            "4194304",
            "--syncs",
            "5",
        ])
        .args(["--seconds", "0.1", "--json", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run herald bench limits");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let limits: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON limits");
    for field in [
        "disk_write_mb_per_s",
        "loopback_tcp_mb_per_s",
        "memcpy_gb_per_s",
    ] {
        assert!(
            limits[field].as_f64().unwrap_or(0.0) > 0.0,
            "{field}: {limits}"
        );
    }
}

#[test]
fn bench_runs_herald_on_jetstream_next_to_raw_jetstream() {
    let nats = NatsServer::start_temp();
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().to_str().expect("utf-8 path");
    let mut common = SHORT_RUN.to_vec();
    common.extend(["--label", "js", "--nats-url", &url]);
    let mut herald_args = vec![
        "--transport",
        "http",
        "--storage",
        "jetstream",
        "--dedup-window-ms",
        "0",
        "--data-dir",
        data,
    ];
    herald_args.extend(&common);
    let herald = bench_json(&herald_args);
    assert_eq!(herald["system"], "herald-http-jetstream", "{herald}");
    assert_eq!(herald["storage"], "jetstream", "{herald}");
    assert_eq!(herald["fsync"], "never", "acks are JetStream's: {herald}");
    let mut raw_args = vec!["--transport", "nats"];
    raw_args.extend(&common);
    let raw = bench_json(&raw_args);
    assert_eq!(raw["system"], "nats", "{raw}");
    for report in [&herald, &raw] {
        assert!(report["published"].as_u64().unwrap_or(0) > 0, "{report}");
        assert_eq!(report["publish_failed"], 0, "{report}");
        assert!(report["delivered"].as_u64().unwrap_or(0) > 0, "{report}");
    }

    // One table, Herald on JetStream over raw JetStream as a ratio.
    let files = [("herald.json", &herald), ("nats.json", &raw)].map(|(name, report)| {
        let path = dir.path().join(name);
        std::fs::write(&path, report.to_string()).expect("write report");
        path
    });
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["bench", "table"])
        .args(&files)
        .output()
        .expect("run herald bench table");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        table.contains("herald-http-jetstream") && table.contains("| nats"),
        "{table}"
    );
    assert!(table.contains('×'), "a ratio column: {table}");
}

#[test]
fn bench_refuses_jetstream_storage_in_process() {
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "bench",
            "--transport",
            "embedded",
            "--storage",
            "jetstream",
            "--duration",
            "1",
        ])
        .output()
        .expect("run herald bench");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--storage jetstream needs --transport http or kafka"),
        "{stderr}"
    );
}
