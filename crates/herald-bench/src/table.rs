//! The side-by-side table: many runs' JSON results (and one `limits` result) in, one
//! Markdown table out, with Herald/peer ratios and Herald as a fraction of the limits.
//!
//! Rows are (workload label, durability, metric); columns are the systems, then the
//! ratios. For throughput higher is better; for latency rows the ratio is still
//! Herald/peer, so there lower is better.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::limits::Limits;
use crate::report::Report;

const SYSTEMS: [&str; 7] = [
    "herald-embedded",
    "herald-http",
    "herald-kafka",
    "herald-http-jetstream",
    "herald-kafka-jetstream",
    "nats",
    "redis",
];

/// Reads every file (JSON objects, one per line) and renders the table.
pub fn render_files(files: &[PathBuf]) -> Result<String> {
    let mut runs = Vec::new();
    let mut limits = None;
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
            let value: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("parsing a line of {}", file.display()))?;
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("limits") => limits = Some(serde_json::from_value(value)?),
                _ => runs.push(serde_json::from_value(value)?),
            }
        }
    }
    Ok(render(&runs, limits.as_ref()))
}

/// One metric of one run.
#[derive(Clone, Copy)]
struct Cell {
    value: f64,
    /// Payload MB/s behind a throughput value, for the fractions of the limits.
    mb_per_s: Option<f64>,
}

/// The metrics a run contributes: (name, cell).
fn metrics(r: &Report) -> Vec<(&'static str, Cell)> {
    let plain = |value| Cell {
        value,
        mb_per_s: None,
    };
    if let Some(replay) = &r.replay {
        return vec![(
            "replay msg/s",
            Cell {
                value: replay.msgs_per_s,
                mb_per_s: Some(replay.mb_per_s),
            },
        )];
    }
    let mut out = Vec::new();
    if r.target_rate.is_some() {
        if let Some(max) = r.calibrated_max_msgs_per_s {
            out.push((
                "max publish msg/s (with consumers)",
                Cell {
                    value: max,
                    mb_per_s: Some(max * r.message_bytes as f64 / 1e6),
                },
            ));
        }
        if let Some(l) = &r.end_to_end_latency {
            out.push(("p50 publish→deliver µs at 50%", plain(l.p50_us)));
            out.push(("p99 publish→deliver µs at 50%", plain(l.p99_us)));
            out.push(("p99.9 publish→deliver µs at 50%", plain(l.p999_us)));
        }
        return out;
    }
    out.push((
        "publish msg/s",
        Cell {
            value: r.publish_msgs_per_s,
            mb_per_s: Some(r.publish_mb_per_s),
        },
    ));
    if let Some(l) = &r.publish_ack_latency {
        out.push(("p99 publish-ack µs (batch)", plain(l.p99_us)));
    }
    out
}

fn render(runs: &[Report], limits: Option<&Limits>) -> String {
    // (label, durability) in order of first appearance, then metric rows.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut cells: BTreeMap<(String, String, &'static str, String), Cell> = BTreeMap::new();
    let mut metric_order: BTreeMap<(String, String), Vec<&'static str>> = BTreeMap::new();
    for r in runs {
        let group = (
            r.label.clone().unwrap_or_else(|| "bench".into()),
            r.durability.clone(),
        );
        if !order.contains(&group) {
            order.push(group.clone());
        }
        for (metric, cell) in metrics(r) {
            let names = metric_order.entry(group.clone()).or_default();
            if !names.contains(&metric) {
                names.push(metric);
            }
            cells.insert(
                (group.0.clone(), group.1.clone(), metric, r.system.clone()),
                cell,
            );
        }
    }
    let present: Vec<&str> = SYSTEMS
        .iter()
        .copied()
        .filter(|s| runs.iter().any(|r| r.system == *s))
        .collect();
    let heralds: Vec<&str> = present
        .iter()
        .copied()
        .filter(|s| s.starts_with("herald"))
        .collect();
    let peers: Vec<&str> = present
        .iter()
        .copied()
        .filter(|s| !s.starts_with("herald"))
        .collect();
    let short = |s: &str| s.trim_start_matches("herald-").to_string();

    let mut header = vec!["workload".to_string(), "durability".into(), "metric".into()];
    header.extend(present.iter().map(|s| s.to_string()));
    for peer in &peers {
        for herald in &heralds {
            header.push(format!("{}/{}", short(herald), peer));
        }
    }
    for herald in &heralds {
        header.push(format!("{} of limit", short(herald)));
    }
    let mut out = String::new();
    push_row(&mut out, &header);
    push_row(&mut out, &vec!["---".to_string(); header.len()]);

    for group in &order {
        for metric in metric_order.get(group).into_iter().flatten() {
            let cell = |system: &str| {
                cells
                    .get(&(
                        group.0.clone(),
                        group.1.clone(),
                        *metric,
                        system.to_string(),
                    ))
                    .copied()
            };
            let mut row = vec![group.0.clone(), group.1.clone(), metric.to_string()];
            row.extend(
                present
                    .iter()
                    .map(|s| cell(s).map_or("-".into(), |c| number(c.value))),
            );
            for peer in &peers {
                for herald in &heralds {
                    row.push(match (cell(herald), cell(peer)) {
                        (Some(h), Some(p)) if p.value > 0.0 => format!("{:.2}×", h.value / p.value),
                        _ => "-".into(),
                    });
                }
            }
            for herald in &heralds {
                row.push(
                    cell(herald)
                        .and_then(|c| fraction_of_limit(herald, metric, c, limits))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            push_row(&mut out, &row);
        }
    }
    if let Some(l) = limits {
        let width = header.len();
        let mut limit_row = |name: &str, value: String| {
            let mut row = vec!["limit".to_string(), String::new(), name.to_string(), value];
            row.resize(width, String::new());
            push_row(&mut out, &row);
        };
        limit_row("disk sequential write MB/s", number(l.disk_write_mb_per_s));
        if let Some(s) = &l.fdatasync {
            limit_row(
                "fdatasync µs p50 / p99",
                format!("{} / {}", number(s.p50_us), number(s.p99_us)),
            );
        }
        limit_row("loopback TCP MB/s", number(l.loopback_tcp_mb_per_s));
        limit_row("memcpy GB/s", format!("{:.1}", l.memcpy_gb_per_s));
    }
    out
}

/// Herald's payload MB/s as a fraction of the limit that bounds it: the disk for
/// embedded publishes, loopback TCP for networked ones, memcpy for embedded replay.
fn fraction_of_limit(
    system: &str,
    metric: &str,
    cell: Cell,
    limits: Option<&Limits>,
) -> Option<String> {
    let limits = limits?;
    let mb = cell.mb_per_s?;
    let replay = metric.starts_with("replay");
    let (limit, name) = match (system, replay) {
        ("herald-embedded", false) => (limits.disk_write_mb_per_s, "disk"),
        ("herald-embedded", true) => (limits.memcpy_gb_per_s * 1000.0, "memcpy"),
        (_, false) => (limits.disk_write_mb_per_s, "disk"),
        (_, true) => (limits.loopback_tcp_mb_per_s, "tcp"),
    };
    (limit > 0.0).then(|| format!("{:.0}% {name}", 100.0 * mb / limit))
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn push_row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Fsync, Transport};

    fn run(system: &str, transport: Transport, msgs_per_s: f64) -> Report {
        let line = serde_json::json!({
            "kind": "run", "label": "w1", "system": system, "transport": transport,
            "fsync": Fsync::Never, "durability": "no-fsync", "producers": 4, "groups": 0,
            "consumers_per_group": 1, "message_bytes": 1000, "batch": 100, "inflight": 1,
            "keys": 0, "partitions": 1, "target_rate": null, "calibrated_max_msgs_per_s": null,
            "published": 1, "publish_failed": 0, "first_error": null, "publish_seconds": 1.0,
            "publish_msgs_per_s": msgs_per_s, "publish_mb_per_s": msgs_per_s * 1000.0 / 1e6,
            "publish_ack_latency": null, "delivered": null, "deliver_msgs_per_s": null,
            "deliver_mb_per_s": null, "end_to_end_latency": null, "replay": null
        });
        serde_json::from_value(line).unwrap_or_else(|e| panic!("report JSON: {e}"))
    }

    #[test]
    fn ratios_and_fractions_of_limits() {
        let runs = [
            run("herald-embedded", Transport::Embedded, 200_000.0),
            run("nats", Transport::Nats, 100_000.0),
        ];
        let limits = Limits {
            kind: "limits".into(),
            dir: "/".into(),
            disk_write_mb_per_s: 400.0,
            fdatasync: None,
            loopback_tcp_mb_per_s: 1000.0,
            memcpy_gb_per_s: 5.0,
        };
        let table = render(&runs, Some(&limits));
        let row = table
            .lines()
            .find(|l| l.contains("publish msg/s"))
            .unwrap_or_default();
        assert!(
            row.contains("| 200000 | 100000 | 2.00× | 50% disk |"),
            "{table}"
        );
        assert!(
            table.contains("| limit |  | disk sequential write MB/s | 400 |"),
            "{table}"
        );
    }
}
