//! The command-line client (`herald --url URL ...`) against a running server: topics,
//! produce (arguments, stdin, file, keys), consume, tail and groups.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{record_id, record_offset, run_cli, CliOutput, Server};
use herald_core::partitioner::partition_for_key;
use serde_json::{json, Value};

const CLI_TIMEOUT: Duration = Duration::from_secs(60);

fn cli(server: &Server, args: &[&str]) -> CliOutput {
    run_cli(&server.url(), args, None, CLI_TIMEOUT)
}

/// Topic names in `--json topics list` output, whichever of the two shapes it uses
/// (one topic per line, or one `{"topics": [...]}` object).
fn listed_names(lines: &[Value], list_field: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in lines {
        match line.get(list_field).and_then(Value::as_array) {
            Some(items) => names.extend(
                items
                    .iter()
                    .filter_map(|t| t["name"].as_str().map(String::from)),
            ),
            None => names.extend(line["name"].as_str().map(String::from)),
        }
    }
    names
}

#[test]
fn topics_commands() {
    let server = Server::start();
    let api = server.api();
    cli(&server, &["topics", "create", "plain"]).success();
    cli(
        &server,
        &[
            "--json",
            "topics",
            "create",
            "wide",
            "--partitions",
            "3",
            "--fsync",
            "never",
        ],
    )
    .success();

    let duplicate = cli(&server, &["topics", "create", "plain"]);
    assert!(
        !duplicate.status.success(),
        "duplicate create must fail: {duplicate:?}"
    );
    let invalid = cli(&server, &["topics", "create", "../bad"]);
    assert!(
        !invalid.status.success(),
        "invalid name must fail: {invalid:?}"
    );

    let listed = cli(&server, &["--json", "topics", "list"]).success();
    let mut names = listed_names(&listed.json_lines(), "topics");
    names.sort();
    assert_eq!(names, ["plain", "wide"], "{listed:?}");
    let human = cli(&server, &["topics", "list"]).success();
    assert!(
        human.stdout.contains("plain") && human.stdout.contains("wide"),
        "{human:?}"
    );

    let described = cli(&server, &["--json", "topics", "describe", "wide"]).success();
    let lines = described.json_lines();
    assert_eq!(lines.len(), 1, "{described:?}");
    assert_eq!(lines[0]["name"], "wide", "{described:?}");
    assert_eq!(lines[0]["partitions"], 3, "{described:?}");
    assert_eq!(lines[0]["config"]["fsync"], "never", "{described:?}");
    assert_eq!(api.describe_topic("plain")["partitions"], 1);

    let missing = cli(&server, &["topics", "describe", "nope"]);
    assert!(
        !missing.status.success(),
        "describe of an unknown topic must fail: {missing:?}"
    );

    cli(&server, &["topics", "delete", "wide"]).success();
    api.get("/v1/topics/wide")
        .expect_error(404, "topic_not_found");
    let again = cli(&server, &["topics", "delete", "wide"]);
    assert!(
        !again.status.success(),
        "second delete must fail: {again:?}"
    );
}

#[test]
fn produce_and_consume() {
    let server = Server::start();
    let api = server.api();
    cli(&server, &["topics", "create", "t", "--fsync", "never"]).success();

    // From arguments: strings, JSON data and a full CloudEvent.
    cli(
        &server,
        &[
            "produce",
            "t",
            "--type",
            "cli.arg",
            "--source",
            "/cli/test",
            "alpha",
            "beta",
        ],
    )
    .success();
    cli(&server, &["produce", "t", r#"{"n": 1}"#]).success();
    let full = r#"{"specversion":"1.0","id":"full-1","source":"/full","type":"full.event","data":{"x":true}}"#;
    cli(&server, &["produce", "t", full]).success();

    // From stdin: 1000 lines.
    let input: String = (0..1000).map(|i| format!("{{\"line\": {i}}}\n")).collect();
    run_cli(
        &server.url(),
        &["produce", "t", "--type", "cli.stdin"],
        Some(input.as_bytes()),
        CLI_TIMEOUT,
    )
    .success();

    // From a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.txt");
    std::fs::write(&file, "file line one\nfile line two\n").expect("write file");
    cli(
        &server,
        &["produce", "t", "--file", file.to_str().expect("utf-8 path")],
    )
    .success();

    let total = 2 + 1 + 1 + 1000 + 2;
    let max = total.to_string();
    let consumed = cli(
        &server,
        &[
            "--json", "consume", "t", "--offset", "earliest", "--max", &max,
        ],
    )
    .success();
    let records = consumed.json_lines();
    assert_eq!(records.len(), total, "{}", consumed.stderr);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record_offset(record), index as u64, "{record}");
        assert_eq!(record["topic"], "t", "{record}");
        assert_eq!(record["partition"], 0, "{record}");
        assert!(record["timestamp"].is_string(), "{record}");
        assert_eq!(record["event"]["specversion"], "1.0", "{record}");
    }
    assert_eq!(records[0]["event"]["data"], "alpha", "{}", records[0]);
    assert_eq!(records[0]["event"]["type"], "cli.arg");
    assert_eq!(records[0]["event"]["source"], "/cli/test");
    assert_eq!(records[1]["event"]["data"], "beta", "{}", records[1]);
    assert_eq!(
        records[2]["event"]["data"],
        json!({"n": 1}),
        "{}",
        records[2]
    );
    assert_eq!(record_id(&records[3]), "full-1");
    assert_eq!(records[3]["event"]["type"], "full.event");
    assert_eq!(records[3]["event"]["data"], json!({"x": true}));
    for (line, record) in records[4..1004].iter().enumerate() {
        assert_eq!(record["event"]["data"], json!({"line": line}), "{record}");
        assert_eq!(record["event"]["type"], "cli.stdin", "{record}");
    }
    assert_eq!(records[1004]["event"]["data"], "file line one");
    assert_eq!(records[1005]["event"]["data"], "file line two");
    // Every produced event got its own id.
    let ids: std::collections::HashSet<&str> = records.iter().map(record_id).collect();
    assert_eq!(ids.len(), total, "distinct ids");

    // --offset N --max M.
    let slice = cli(
        &server,
        &["--json", "consume", "t", "--offset", "500", "--max", "3"],
    )
    .success();
    let offsets: Vec<u64> = slice.json_lines().iter().map(record_offset).collect();
    assert_eq!(offsets, [500, 501, 502], "{slice:?}");
    // Without --follow, consume stops at the end of the log.
    let rest = cli(&server, &["--json", "consume", "t", "--offset", "1000"]).success();
    assert_eq!(rest.json_lines().len(), total - 1000, "{rest:?}");
    // --from-time far in the past starts at the beginning.
    let timed = cli(
        &server,
        &[
            "--json",
            "consume",
            "t",
            "--from-time",
            "2000-01-01T00:00:00Z",
            "--max",
            "1",
        ],
    )
    .success();
    assert_eq!(
        timed
            .json_lines()
            .iter()
            .map(record_offset)
            .collect::<Vec<_>>(),
        [0]
    );
    assert_eq!(
        api.describe_topic("t")["partition_stats"][0]["end_offset"],
        total
    );
}

#[test]
fn produce_with_key_goes_to_one_partition() {
    let server = Server::start();
    let api = server.api();
    cli(&server, &["topics", "create", "k", "--partitions", "3"]).success();
    cli(
        &server,
        &["produce", "k", "--key", "cust-9", "one", "two", "three"],
    )
    .success();
    let partition = partition_for_key(b"cust-9", 3);
    let records = api.fetch_all("k", partition);
    let data: Vec<&Value> = records.iter().map(|r| &r["event"]["data"]).collect();
    assert_eq!(data, [&json!("one"), &json!("two"), &json!("three")]);
    for record in &records {
        assert_eq!(record["key"], "cust-9", "{record}");
    }
    let consumed = cli(
        &server,
        &[
            "--json",
            "consume",
            "k",
            "--partition",
            &partition.to_string(),
            "--offset",
            "earliest",
            "--max",
            "3",
        ],
    )
    .success();
    assert_eq!(consumed.json_lines().len(), 3, "{consumed:?}");
}

#[test]
fn tail_follows_new_events() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("live", 1);
    api.publish("live", &[common::event("old")]);

    let mut child = Command::new(common::herald_bin())
        .args(["--url", &server.url(), "--json", "tail", "live"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn herald tail");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    // tail starts at the end: publish until it has subscribed and prints our event.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut published = 0;
    let seen = loop {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herald tail printed nothing for 15 s ({published} events published)");
        }
        api.publish_one("live", &common::event(&format!("new{published}")));
        published += 1;
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let record: Value = serde_json::from_str(&seen)
        .unwrap_or_else(|e| panic!("tail line is not JSON ({e}): {seen}"));
    assert!(
        record_id(&record).starts_with("new"),
        "tail starts at the end, got {record}"
    );
}

#[test]
fn groups_commands() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("gt", 1);
    let events: Vec<Value> = (0..20).map(|i| common::event(&format!("e{i}"))).collect();
    api.publish("gt", &events);

    // A group with committed offsets, made over HTTP.
    let joined = api.join_group(
        "cg",
        &json!({"topics": ["gt"], "auto_offset_reset": "earliest"}),
    );
    let member = joined["member_id"].as_str().expect("member_id").to_string();
    api.post_json(
        &format!("/v1/groups/cg/members/{member}/commit"),
        &json!({"offsets": [{"topic": "gt", "partition": 0, "offset": 12}]}),
    )
    .expect_status(200);

    let listed = cli(&server, &["--json", "groups", "list"]).success();
    let names = listed_names(&listed.json_lines(), "groups");
    assert_eq!(names, ["cg"], "{listed:?}");
    let human = cli(&server, &["groups", "list"]).success();
    assert!(human.stdout.contains("cg"), "{human:?}");

    let described = cli(&server, &["--json", "groups", "describe", "cg"]).success();
    let lines = described.json_lines();
    assert_eq!(lines.len(), 1, "{described:?}");
    assert_eq!(lines[0]["name"], "cg", "{described:?}");
    assert_eq!(lines[0]["offsets"][0]["committed"], 12, "{described:?}");
    assert_eq!(lines[0]["offsets"][0]["lag"], 8, "{described:?}");
    assert_eq!(
        lines[0]["members"][0]["member_id"],
        member.as_str(),
        "{described:?}"
    );

    // Reset is refused while the group has a member.
    let busy = cli(
        &server,
        &["groups", "reset", "cg", "--topic", "gt", "--to", "earliest"],
    );
    assert!(
        !busy.status.success(),
        "reset of an active group must fail: {busy:?}"
    );
    api.delete(&format!("/v1/groups/cg/members/{member}"))
        .expect_status(204);

    let committed = |api: &common::Api| api.describe_group("cg")["offsets"][0]["committed"].clone();
    cli(
        &server,
        &["groups", "reset", "cg", "--topic", "gt", "--to", "earliest"],
    )
    .success();
    assert_eq!(committed(&api), 0);
    cli(
        &server,
        &["groups", "reset", "cg", "--topic", "gt", "--to", "latest"],
    )
    .success();
    assert_eq!(committed(&api), 20);
    cli(
        &server,
        &["groups", "reset", "cg", "--topic", "gt", "--to", "5"],
    )
    .success();
    assert_eq!(committed(&api), 5);

    cli(&server, &["groups", "delete", "cg"]).success();
    api.get("/v1/groups/cg")
        .expect_error(404, "group_not_found");

    let missing = cli(&server, &["groups", "describe", "nope"]);
    assert!(
        !missing.status.success(),
        "describe of an unknown group must fail: {missing:?}"
    );
}

#[test]
fn consume_as_group_member_resumes_from_commits() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("gm", 2);
    let events: Vec<Value> = (0..20).map(|i| common::event(&format!("e{i}"))).collect();
    api.publish("gm", &events);

    let mut seen = Vec::new();
    for max in ["8", "8"] {
        let run = cli(
            &server,
            &["--json", "consume", "gm", "--group", "cli-g", "--max", max],
        )
        .success();
        let records = run.json_lines();
        assert_eq!(records.len(), 8, "{run:?}");
        seen.extend(records.iter().map(|r| record_id(r).to_string()));
    }
    // No --max, no --follow: reads what is left and stops.
    let rest = cli(&server, &["--json", "consume", "gm", "--group", "cli-g"]).success();
    seen.extend(rest.json_lines().iter().map(|r| record_id(r).to_string()));
    seen.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    expected.sort();
    assert_eq!(
        seen, expected,
        "each event once across three runs of one group"
    );

    let described = api.describe_group("cli-g");
    assert_eq!(
        described["members"],
        json!([]),
        "the CLI member left: {described}"
    );
    for entry in described["offsets"].as_array().expect("offsets") {
        assert_eq!(entry["lag"], 0, "{described}");
    }
}
