//! Publishing in every content mode (structured, batch, binary) and fetching back:
//! acks, key → partition, round-robin, offset / `from_time` / `max` fetches,
//! correlation defaults and long polling.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{event, event_with_data, keyed_event, record_id, record_offset, Api, Server};
use herald_core::partitioner::partition_for_key;
use serde_json::{json, Value};

fn publish_path(topic: &str) -> String {
    format!("/v1/topics/{topic}/events")
}

/// The one record at `offset` of `partition`.
fn record_at(api: &Api, topic: &str, partition: u32, offset: u64) -> Value {
    let page = api.fetch(
        topic,
        &[
            ("partition", partition.to_string()),
            ("offset", offset.to_string()),
            ("max", "1".into()),
        ],
    );
    let events = page["events"].as_array().expect("events");
    assert_eq!(
        events.len(),
        1,
        "one record at {partition}:{offset}: {page}"
    );
    events[0].clone()
}

#[test]
fn structured_batch_and_binary_modes() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("t", 1);

    // Structured, application/cloudevents+json.
    let mut first = event_with_data("s1", json!({"total": 42}));
    first["subject"] = json!("order-1");
    first["time"] = json!("2026-01-01T00:00:00Z");
    first["retries"] = json!(3);
    let ack = api.publish_one("t", &first);
    assert_eq!((ack.id.as_str(), ack.partition, ack.offset), ("s1", 0, 0));

    // Structured, application/json with an object.
    let reply = api
        .post_json(&publish_path("t"), &event_with_data("s2", json!("text")))
        .expect_status(200);
    assert_eq!(
        reply.body,
        json!({"events": [{"id": "s2", "partition": 0, "offset": 1}]})
    );

    // Batch, application/cloudevents-batch+json.
    let acks = api.publish("t", &[event("b1"), event("b2"), event("b3")]);
    let offsets: Vec<u64> = acks.iter().map(|a| a.offset).collect();
    assert_eq!(offsets, vec![2, 3, 4]);

    // Batch, application/json with an array.
    let reply = api
        .post_json(&publish_path("t"), &json!([event("j1"), event("j2")]))
        .expect_status(200);
    assert_eq!(
        reply.body,
        json!({"events": [
            {"id": "j1", "partition": 0, "offset": 5},
            {"id": "j2", "partition": 0, "offset": 6},
        ]})
    );

    // Binary mode: ce-* headers, opaque body.
    let headers = [
        ("ce-id", "bin1"),
        ("ce-source", "/herald/binary"),
        ("ce-type", "test.binary"),
        ("ce-specversion", "1.0"),
        ("ce-subject", "subj"),
        ("ce-myext", "hello"),
    ];
    let reply = api
        .post_raw(
            &publish_path("t"),
            Some("text/plain"),
            b"plain bytes".to_vec(),
            &headers,
        )
        .expect_status(200);
    assert_eq!(reply.body["events"][0]["offset"], 7, "{}", reply.text);
    // Binary mode with a JSON body.
    let headers = [
        ("ce-id", "bin2"),
        ("ce-source", "/herald/binary"),
        ("ce-type", "test.binary"),
        ("ce-specversion", "1.0"),
    ];
    let reply = api
        .post_raw(
            &publish_path("t"),
            Some("application/json"),
            br#"{"a": 1}"#.to_vec(),
            &headers,
        )
        .expect_status(200);
    assert_eq!(reply.body["events"][0]["id"], "bin2", "{}", reply.text);

    let records = api.fetch_all("t", 0);
    let ids: Vec<&str> = records.iter().map(record_id).collect();
    assert_eq!(
        ids,
        ["s1", "s2", "b1", "b2", "b3", "j1", "j2", "bin1", "bin2"]
    );
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record["topic"], "t", "{record}");
        assert_eq!(record["partition"], 0, "{record}");
        assert_eq!(record_offset(record), index as u64, "{record}");
        let timestamp = record["timestamp"].as_str().expect("timestamp");
        chrono::DateTime::parse_from_rfc3339(timestamp).expect("timestamp is RFC 3339");
        assert_eq!(record["event"]["specversion"], "1.0", "{record}");
    }
    let s1 = &records[0]["event"];
    assert_eq!(s1["data"], json!({"total": 42}), "{s1}");
    assert_eq!(s1["subject"], "order-1");
    assert_eq!(s1["time"], "2026-01-01T00:00:00Z");
    assert_eq!(s1["retries"], 3);
    assert_eq!(records[1]["event"]["data"], "text");
    let bin1 = &records[7]["event"];
    assert_eq!(bin1["source"], "/herald/binary", "{bin1}");
    assert_eq!(bin1["type"], "test.binary", "{bin1}");
    assert_eq!(bin1["subject"], "subj", "{bin1}");
    assert_eq!(bin1["myext"], "hello", "{bin1}");
    assert_eq!(bin1["datacontenttype"], "text/plain", "{bin1}");
    assert_eq!(
        bin1["data_base64"],
        herald_core::event::base64_encode(b"plain bytes"),
        "{bin1}"
    );
    assert_eq!(
        records[8]["event"]["data"],
        json!({"a": 1}),
        "{}",
        records[8]
    );
}

#[test]
fn keyed_events_share_a_partition_in_order() {
    let server = Server::start();
    let api = server.api();
    let partitions = 4;
    api.create_topic("keyed", partitions);

    let keys = [
        "cust-1",
        "cust-2",
        "cust-3",
        "cust-42",
        "a-little-bit-long-string",
    ];
    let mut sent: BTreeMap<&str, Vec<(String, u32, u64)>> = BTreeMap::new();
    for round in 0..6 {
        let batch: Vec<Value> = keys
            .iter()
            .flat_map(|key| (0..3).map(move |i| keyed_event(&format!("{key}-{round}-{i}"), key)))
            .collect();
        for (ack, event) in api.publish("keyed", &batch).into_iter().zip(&batch) {
            let key = event["partitionkey"].as_str().expect("key");
            let key = keys.iter().find(|k| **k == key).expect("known key");
            sent.entry(key)
                .or_default()
                .push((ack.id, ack.partition, ack.offset));
        }
    }
    // One single structured event per key too.
    for key in keys {
        let ack = api.publish_one("keyed", &keyed_event(&format!("{key}-single"), key));
        sent.entry(key)
            .or_default()
            .push((ack.id, ack.partition, ack.offset));
    }
    // And one binary-mode event per key (`ce-partitionkey` header).
    for key in keys {
        let id = format!("{key}-binary");
        let headers = [
            ("ce-id", id.as_str()),
            ("ce-source", "/herald/binary"),
            ("ce-type", "test.binary"),
            ("ce-specversion", "1.0"),
            ("ce-partitionkey", key),
        ];
        let reply = api
            .post_raw(
                &publish_path("keyed"),
                Some("text/plain"),
                b"b".to_vec(),
                &headers,
            )
            .expect_status(200);
        let ack = common::parse_acks(&reply).remove(0);
        sent.entry(key)
            .or_default()
            .push((ack.id, ack.partition, ack.offset));
    }

    let logs: Vec<Vec<Value>> = (0..partitions).map(|p| api.fetch_all("keyed", p)).collect();
    for (key, acks) in &sent {
        let expected_partition = partition_for_key(key.as_bytes(), partitions);
        for (id, partition, _) in acks {
            assert_eq!(
                *partition, expected_partition,
                "{id}: key {key} must hash (murmur2) to {expected_partition}"
            );
        }
        let offsets: Vec<u64> = acks.iter().map(|a| a.2).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "{key}: offsets in publish order: {offsets:?}"
        );
        // The partition log holds this key's events in the same order.
        let in_log: Vec<&str> = logs[expected_partition as usize]
            .iter()
            .filter(|r| r["event"]["partitionkey"] == *key)
            .map(record_id)
            .collect();
        let acked: Vec<&str> = acks.iter().map(|a| a.0.as_str()).collect();
        assert_eq!(in_log, acked, "{key}");
        for record in &logs[expected_partition as usize] {
            if record["event"]["partitionkey"] == *key {
                assert_eq!(record["key"], *key, "record key: {record}");
            }
        }
    }
}

#[test]
fn unkeyed_events_round_robin() {
    let server = Server::start();
    let api = server.api();
    let partitions = 4u32;
    api.create_topic("rr", partitions);
    let mut counts = vec![0u32; partitions as usize];
    for i in 0..40 {
        let ack = api.publish_one("rr", &event(&format!("e{i}")));
        counts[ack.partition as usize] += 1;
    }
    let most = counts.iter().max().expect("counts");
    let least = counts.iter().min().expect("counts");
    if common::nats::jetstream_suite() {
        // JetStream spreads unkeyed events by a hash of (source, id) so a retry through
        // any gateway meets its original (see ARCHITECTURE.md): spread, not strict turns.
        assert!(
            *least >= 1,
            "40 unkeyed events over 4 partitions, got {counts:?}"
        );
    } else {
        assert!(
            most - least <= 1,
            "40 unkeyed events over 4 partitions, got {counts:?}"
        );
    }
    let described = api.describe_topic("rr");
    for (partition, count) in counts.iter().enumerate() {
        assert_eq!(
            described["partition_stats"][partition]["end_offset"], *count,
            "{described}"
        );
        let records = api.fetch_all("rr", partition as u32);
        assert_eq!(records.len() as u32, *count);
        for record in &records {
            assert!(
                record["key"].is_null(),
                "unkeyed record has no key: {record}"
            );
        }
    }

    // `?partition=P` forces the partition.
    let reply = api
        .post_raw(
            "/v1/topics/rr/events?partition=2",
            Some("application/cloudevents-batch+json"),
            json!([event("f1"), event("f2"), event("f3")])
                .to_string()
                .into_bytes(),
            &[],
        )
        .expect_status(200);
    for ack in common::parse_acks(&reply) {
        assert_eq!(ack.partition, 2, "{}", reply.text);
    }
}

#[test]
fn fetch_by_offset_time_and_max() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("f", 1);
    let first: Vec<Value> = (0..150).map(|i| event(&format!("a{i}"))).collect();
    api.publish("f", &first);

    let page = api.fetch("f", &[("offset", "5".into()), ("max", "3".into())]);
    let offsets: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(record_offset)
        .collect();
    assert_eq!(offsets, vec![5, 6, 7], "{page}");
    assert_eq!(page["next_offset"], 8);
    assert_eq!(page["start_offset"], 0);
    assert_eq!(page["end_offset"], 150);

    // Defaults: partition 0, offset = log start, max = 100.
    let page = api.fetch("f", &[]);
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 100, "max defaults to 100");
    assert_eq!(record_offset(&events[0]), 0);
    assert_eq!(page["next_offset"], 100);

    // At the head: empty, next_offset = end.
    let page = api.fetch("f", &[("offset", "150".into())]);
    assert_eq!(page["events"], json!([]), "{page}");
    assert_eq!(page["next_offset"], 150);

    // from_time: the first event appended at or after that time.
    let last_old = record_at(&api, "f", 0, 149);
    let last_old_time = parse_time(&last_old["timestamp"]);
    wait_until_clock_passes(last_old_time);
    let second: Vec<Value> = (0..5).map(|i| event(&format!("b{i}"))).collect();
    api.publish("f", &second);
    let b0 = record_at(&api, "f", 0, 150);
    assert_eq!(record_id(&b0), "b0");
    let b0_time = b0["timestamp"].as_str().expect("timestamp").to_string();
    assert!(
        parse_time(&b0["timestamp"]) > last_old_time,
        "append times increase"
    );

    let page = api.fetch("f", &[("from_time", b0_time.clone()), ("max", "10".into())]);
    let ids: Vec<&str> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(record_id)
        .collect();
    assert_eq!(
        ids,
        ["b0", "b1", "b2", "b3", "b4"],
        "from_time={b0_time}: {page}"
    );

    let page = api.fetch(
        "f",
        &[
            ("from_time", "2000-01-01T00:00:00Z".into()),
            ("max", "1".into()),
        ],
    );
    assert_eq!(record_offset(&page["events"][0]), 0, "{page}");
    let page = api.fetch("f", &[("from_time", "2100-01-01T00:00:00Z".into())]);
    assert_eq!(page["events"], json!([]), "{page}");
}

fn parse_time(value: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {value}"));
    chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Waits until the wall clock is at least 5 ms past `time`, so the next append is later.
fn wait_until_clock_passes(time: chrono::DateTime<chrono::FixedOffset>) {
    common::wait_for(
        "the clock to pass the last append",
        Duration::from_secs(5),
        || (chrono::Utc::now() > time + chrono::Duration::milliseconds(5)).then_some(()),
    );
}

#[test]
fn correlation_and_causation_ids() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("c", 1);
    let mut caused = event("child");
    caused["causationid"] = json!("parent");
    caused["correlationid"] = json!("root-1");
    let mut only_causation = event("child2");
    only_causation["causationid"] = json!("child");
    api.publish("c", &[event("root"), caused, only_causation]);

    let records = api.fetch_all("c", 0);
    assert_eq!(
        records[0]["event"]["correlationid"], "root",
        "defaults to own id: {}",
        records[0]
    );
    assert!(records[0]["event"]
        .get("causationid")
        .is_none_or(Value::is_null));
    assert_eq!(
        records[1]["event"]["correlationid"], "root-1",
        "{}",
        records[1]
    );
    assert_eq!(
        records[1]["event"]["causationid"], "parent",
        "{}",
        records[1]
    );
    assert_eq!(
        records[2]["event"]["correlationid"], "child2",
        "{}",
        records[2]
    );
    assert_eq!(
        records[2]["event"]["causationid"], "child",
        "{}",
        records[2]
    );
}

#[test]
fn long_poll_wakes_on_append() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("lp", 1);
    api.publish("lp", &[event("before")]);

    let poller = api.clone();
    let started = Instant::now();
    let handle = thread::spawn(move || {
        let page = poller.fetch("lp", &[("offset", "1".into()), ("wait_ms", "5000".into())]);
        (page, Instant::now())
    });
    // Publish once the poll is (very likely) parked; correctness does not depend on it.
    thread::sleep(Duration::from_millis(300));
    let published_at = Instant::now();
    api.publish("lp", &[event("wake")]);
    let (page, returned_at) = handle.join().expect("poller");
    let ids: Vec<&str> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(record_id)
        .collect();
    assert_eq!(ids, ["wake"], "{page}");
    let total = returned_at - started;
    let after_publish = returned_at.saturating_duration_since(published_at);
    assert!(
        total < Duration::from_millis(3000) && after_publish < Duration::from_millis(2000),
        "long poll returned {after_publish:?} after the publish ({total:?} in all); must be prompt"
    );
}

#[test]
fn idle_long_poll_returns_empty_after_wait() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("idle", 1);
    let started = Instant::now();
    let page = api.fetch("idle", &[("wait_ms", "800".into())]);
    let elapsed = started.elapsed();
    assert_eq!(page["events"], json!([]), "{page}");
    assert_eq!(page["next_offset"], 0, "{page}");
    assert!(
        elapsed >= Duration::from_millis(700) && elapsed < Duration::from_millis(4000),
        "idle long poll with wait_ms=800 took {elapsed:?}"
    );
    // wait_ms=0 (the default) returns at once.
    let started = Instant::now();
    api.fetch("idle", &[]);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "no wait without wait_ms"
    );
}
