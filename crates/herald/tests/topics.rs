//! Topic lifecycle over HTTP: create, list, describe, delete, conflicts, unknown
//! topics, name validation (no path traversal) and metadata surviving a restart.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{event, Server};
use serde_json::json;

#[test]
fn create_list_describe_delete() {
    let server = Server::start();
    let api = server.api();

    let created =
        api.create_topic_with(&json!({"name": "orders", "partitions": 3, "fsync": "never"}));
    assert_eq!(created["name"], "orders", "{created}");
    assert_eq!(created["partitions"], 3, "{created}");
    assert_eq!(created["config"]["fsync"], "never", "{created}");

    let defaults = api.create_topic_with(&json!({"name": "defaults"}));
    assert_eq!(
        defaults["partitions"], 1,
        "partitions default to 1: {defaults}"
    );
    assert_eq!(
        defaults["config"]["fsync"], "always",
        "fsync defaults to always: {defaults}"
    );

    let long_name = "x".repeat(249);
    api.create_topic(&long_name, 1);
    api.create_topic("orders.v1_a-b", 2);

    let names: BTreeSet<String> = api.topic_names().into_iter().collect();
    let expected: BTreeSet<String> = ["orders", "defaults", long_name.as_str(), "orders.v1_a-b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, expected);

    let described = api.describe_topic("orders");
    assert_eq!(described["name"], "orders");
    assert_eq!(described["partitions"], 3);
    assert_eq!(described["config"]["fsync"], "never");
    let created_at = described["created_at"].as_str().expect("created_at string");
    chrono::DateTime::parse_from_rfc3339(created_at).expect("created_at is RFC 3339");
    let stats = described["partition_stats"]
        .as_array()
        .expect("partition_stats");
    assert_eq!(stats.len(), 3, "{described}");
    for (index, stat) in stats.iter().enumerate() {
        assert_eq!(stat["partition"], index as u64, "{described}");
        assert_eq!(stat["start_offset"], 0, "{described}");
        assert_eq!(stat["end_offset"], 0, "{described}");
    }

    api.publish("orders", &[event("a"), event("b")]);
    let described = api.describe_topic("orders");
    let total: u64 = described["partition_stats"]
        .as_array()
        .expect("partition_stats")
        .iter()
        .map(|s| s["end_offset"].as_u64().expect("end_offset"))
        .sum();
    assert_eq!(total, 2, "two events published: {described}");

    api.delete("/v1/topics/orders").expect_status(204);
    api.get("/v1/topics/orders")
        .expect_error(404, "topic_not_found");
    api.delete("/v1/topics/orders")
        .expect_error(404, "topic_not_found");
    assert!(!api.topic_names().contains(&"orders".to_string()));

    // A recreated topic starts empty.
    api.create_topic("orders", 1);
    let recreated = api.describe_topic("orders");
    assert_eq!(
        recreated["partition_stats"][0]["end_offset"], 0,
        "{recreated}"
    );
    let page = api.fetch("orders", &[]);
    assert_eq!(page["events"], json!([]), "{page}");
}

#[test]
fn duplicate_create_is_409_and_unknown_is_404() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("t", 2);
    api.post_json("/v1/topics", &json!({"name": "t", "partitions": 2}))
        .expect_error(409, "topic_exists");
    api.post_json("/v1/topics", &json!({"name": "t", "partitions": 5}))
        .expect_error(409, "topic_exists");
    // The original is untouched.
    assert_eq!(api.describe_topic("t")["partitions"], 2);

    api.get("/v1/topics/nope")
        .expect_error(404, "topic_not_found");
    api.delete("/v1/topics/nope")
        .expect_error(404, "topic_not_found");
    api.get_query("/v1/topics/nope/events", &[])
        .expect_error(404, "topic_not_found");
}

#[test]
fn invalid_topic_configs_are_rejected() {
    let server = Server::start();
    let api = server.api();
    let cases = [
        (json!({"name": "p0", "partitions": 0}), "partitions"),
        (json!({"name": "pneg", "partitions": -1}), "partitions"),
        (json!({"name": "fs", "fsync": "sometimes"}), "fsync"),
        (json!({"partitions": 1}), "name"),
    ];
    let mut wrong_fields = Vec::new();
    for (body, field) in cases {
        let reply = api.post_json("/v1/topics", &body);
        reply.expect_error(400, "invalid_argument");
        // `field` names the culprit when the server can tell which one it is.
        if let Some(reported) = reply.error_field() {
            if !reported.contains(field) {
                wrong_fields.push(format!("{body}: field {reported:?}, expected {field:?}"));
            }
        }
    }
    assert!(
        wrong_fields.is_empty(),
        "wrong `field` in errors: {wrong_fields:#?}"
    );
    assert!(api.topic_names().is_empty(), "no topic was created");
}

#[test]
fn invalid_names_are_rejected_without_touching_the_disk() {
    let server = Server::start();
    let api = server.api();
    // Unique per run, so a leftover of an earlier (buggy) run cannot be mistaken for ours.
    let marker = format!(
        "escape{}",
        server
            .root()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("root name")
    );
    let too_long = "x".repeat(250);
    let invalid = [
        format!("../{marker}1"),
        format!("../../{marker}2"),
        format!("{marker}3/../../{marker}4"),
        format!("a/{marker}5"),
        format!("a\\{marker}6"),
        String::new(),
        too_long.clone(),
        "..".to_string(),
        ".".to_string(),
        "a b".to_string(),
        "é".to_string(),
    ];
    for name in &invalid {
        let reply = api.post_json("/v1/topics", &json!({"name": name, "partitions": 1}));
        reply.expect_error(400, "invalid_argument");
        if let Some(field) = reply.error_field() {
            assert!(
                field == "name" || field == "topic",
                "{name:?}: error field {field:?} should name the topic name"
            );
        }
    }
    assert!(api.topic_names().is_empty(), "no topic was created");
    assert_no_escapes(server.root(), &marker);
    let long: Vec<_> = walk(server.root())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.len() >= 250))
        .collect();
    assert!(
        long.is_empty(),
        "a path was created for a 250-byte name: {long:?}"
    );
    // Nothing but the data directory inside the temporary root.
    let top: Vec<_> = std::fs::read_dir(server.root())
        .expect("read root")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        top,
        vec![std::ffi::OsString::from("data")],
        "only the data dir in root"
    );

    // Invalid names in the path are rejected too (never 2xx, never 5xx).
    let paths = [
        "/v1/topics/a%20b".to_string(),
        format!("/v1/topics/%2E%2E%2F{marker}7"),
        format!("/v1/topics/{too_long}"),
    ];
    for path in &paths {
        for reply in [api.get(path), api.delete(path)] {
            assert!(
                reply.status == 400 || reply.status == 404,
                "{}: expected 400 or 404, got {} {}",
                reply.request,
                reply.status,
                reply.text
            );
        }
    }
    assert_no_escapes(server.root(), &marker);
    api.get("/healthz").expect_status(200);
}

#[test]
fn topic_metadata_survives_restart() {
    let mut server = Server::start();
    let api = server.api();
    api.create_topic_with(
        &json!({"name": "keep", "partitions": 4, "fsync": "interval", "fsync_interval_ms": 50}),
    );
    api.create_topic_with(&json!({"name": "other", "partitions": 2, "fsync": "never"}));
    api.create_topic("gone", 1);
    api.delete("/v1/topics/gone").expect_status(204);
    api.publish("keep", &[event("k1"), event("k2"), event("k3")]);
    let before_keep = api.describe_topic("keep");
    let before_other = api.describe_topic("other");

    let status = server.terminate();
    assert!(status.success(), "graceful exit, got {status}");
    server.restart();
    let api = server.api();

    let names: BTreeSet<String> = api.topic_names().into_iter().collect();
    let expected: BTreeSet<String> = ["keep", "other"].iter().map(|s| s.to_string()).collect();
    assert_eq!(names, expected, "deleted topic stays deleted");
    let after_keep = api.describe_topic("keep");
    let after_other = api.describe_topic("other");
    for (before, after) in [(&before_keep, &after_keep), (&before_other, &after_other)] {
        assert_eq!(
            before["partitions"], after["partitions"],
            "{before} vs {after}"
        );
        assert_eq!(before["config"], after["config"], "{before} vs {after}");
        assert_eq!(
            before["created_at"], after["created_at"],
            "{before} vs {after}"
        );
        assert_eq!(before["partition_stats"], after["partition_stats"]);
    }
    assert_eq!(after_keep["config"]["fsync"], "interval");
    assert_eq!(after_other["config"]["fsync"], "never");

    // Same after a crash.
    server.kill9();
    server.restart();
    let api = server.api();
    assert_eq!(api.describe_topic("keep")["partitions"], 4);
    assert_eq!(api.describe_topic("other")["partitions"], 2);
    api.get("/v1/topics/gone")
        .expect_error(404, "topic_not_found");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// Panics if any path containing `marker` exists under `root` or next to it.
fn assert_no_escapes(root: &Path, marker: &str) {
    let mut found: Vec<PathBuf> = walk(root)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(marker))
        .collect();
    if let Some(parent) = root.parent() {
        for index in 1..=7 {
            let candidate = parent.join(format!("{marker}{index}"));
            if candidate.exists() {
                found.push(candidate);
            }
        }
    }
    assert!(
        found.is_empty(),
        "paths created from invalid names: {found:?}"
    );
}
