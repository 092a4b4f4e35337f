//! Smoke run of `herald bench`: a second of the embedded transport with `--json`
//! must print one report that parses and shows messages flowing. (The real
//! benchmarks are `bench/compare.sh`; see BENCHMARKS.md.)

use std::process::Command;

#[test]
fn bench_embedded_json_reports_throughput() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "bench",
            "--transport",
            "embedded",
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
            "--fsync",
            "never",
            "--json",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run herald bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "herald bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("one JSON line");
    let report: serde_json::Value = serde_json::from_str(line).expect("JSON report");
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
