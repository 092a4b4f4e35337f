//! Delayed delivery: events published with `delay_ms` / `deliver_at` appear in their topic
//! no earlier than asked, exactly once, also when the server is killed in between.

mod common;

use std::time::{Duration, Instant};

use common::{event, record_id, wait_for, Server};
use serde_json::{json, Value};

fn fetch_ids(api: &common::Api, topic: &str) -> Vec<String> {
    api.fetch_all(topic, 0)
        .iter()
        .map(|r| record_id(r).to_string())
        .collect()
}

#[test]
fn delayed_events_appear_when_due_and_not_before() {
    let server = Server::start();
    let api = server.api();
    api.create_topic("reminders", 1);
    let published_at = chrono::Utc::now().timestamp_millis();
    let reply = api
        .post_json("/v1/topics/reminders/events?delay_ms=1500", &event("r-1"))
        .expect_status(200);
    let scheduled = reply.body["events"][0]["scheduled_for"]
        .as_str()
        .expect("scheduled_for")
        .to_string();
    let due = chrono::DateTime::parse_from_rfc3339(&scheduled)
        .expect("rfc3339")
        .timestamp_millis();
    assert!(due >= published_at + 1500, "{scheduled}");
    api.post_json("/v1/topics/reminders/events", &event("now"))
        .expect_status(200);
    assert_eq!(
        fetch_ids(&api, "reminders"),
        vec!["now"],
        "not visible before its time"
    );

    let started = Instant::now();
    let records = wait_for("the delayed event", Duration::from_secs(10), || {
        let records = api.fetch_all("reminders", 0);
        (records.len() == 2).then_some(records)
    });
    assert!(started.elapsed() < Duration::from_secs(8));
    let appended =
        chrono::DateTime::parse_from_rfc3339(records[1]["timestamp"].as_str().expect("timestamp"))
            .expect("rfc3339")
            .timestamp_millis();
    assert!(appended >= due, "appended at {appended}, due at {due}");
    assert_eq!(record_id(&records[1]), "r-1");
    assert!(
        records[1]["event"].get("heralddelaytopic").is_none(),
        "internal marks are removed"
    );

    // Bad delays are clear errors.
    api.post_json("/v1/topics/reminders/events?delay_ms=-5", &event("x"))
        .expect_error(400, "invalid_argument");
    api.post_json(
        "/v1/topics/reminders/events?deliver_at=tomorrow",
        &event("x"),
    )
    .expect_error(400, "invalid_argument");
    // Internal topics stay out of the normal listing.
    let names = api.topic_names();
    assert_eq!(names, vec!["reminders".to_string()]);
}

#[test]
fn delayed_events_survive_kill9_and_are_delivered_once() {
    let mut server = Server::start();
    let api = server.api();
    api.create_topic("later", 1);
    let deliver_at = chrono::Utc::now() + chrono::Duration::milliseconds(2500);
    let at = deliver_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let batch: Vec<Value> = (0..5).map(|i| event(&format!("l-{i}"))).collect();
    api.post_json(
        &format!(
            "/v1/topics/later/events?deliver_at={}",
            at.replace('+', "%2B")
        ),
        &json!(batch),
    )
    .expect_status(200);
    server.kill9();
    server.restart();
    let api = server.api();
    let ids = wait_for(
        "5 delayed events after restart",
        Duration::from_secs(15),
        || {
            let ids = fetch_ids(&api, "later");
            (ids.len() >= 5).then_some(ids)
        },
    );
    // Give a duplicate delivery a chance to show up, then check exactly once.
    std::thread::sleep(Duration::from_millis(300));
    server.kill9();
    server.restart();
    std::thread::sleep(Duration::from_millis(300));
    let after = fetch_ids(&server.api(), "later");
    assert_eq!(ids, (0..5).map(|i| format!("l-{i}")).collect::<Vec<_>>());
    assert_eq!(after, ids, "delivered exactly once across restarts");
}

#[test]
fn internal_topics_are_read_only_over_http() {
    let server = Server::start();
    let api = server.api();
    api.post_json("/v1/topics/__herald.delayed/events", &event("x"))
        .expect_error(400, "invalid_argument");
    api.delete("/v1/topics/__herald.delayed")
        .expect_error(400, "invalid_argument");
    api.post_json("/v1/topics", &json!({"name": "__mine"}))
        .expect_error(400, "invalid_argument");
    let listed = api.get("/v1/topics?internal=true").expect_status(200);
    let names: Vec<&str> = listed.body["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"__herald.delayed"), "{names:?}");
}
