//! Consumer groups: members share a topic's partitions, commit, leave (their partitions
//! move), committed offsets survive a restart, a rejoining member resumes from them,
//! and a member that stops heartbeating loses its partitions after its session timeout.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::thread;
use std::time::{Duration, Instant};

use common::{event, record_offset, record_partition, Api, Reply, Server};
use serde_json::{json, Value};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 6;

/// A group member, driven by the test.
struct Member {
    group: String,
    id: String,
}

impl Member {
    fn join(api: &Api, group: &str, session_timeout_ms: u64) -> (Member, Value) {
        let body = json!({
            "topics": [TOPIC],
            "session_timeout_ms": session_timeout_ms,
            "auto_offset_reset": "earliest",
        });
        let joined = api.join_group(group, &body);
        let id = joined["member_id"]
            .as_str()
            .unwrap_or_else(|| panic!("join: no member_id in {joined}"))
            .to_string();
        assert!(
            joined["generation"].is_u64(),
            "join: generation in {joined}"
        );
        assert!(
            joined["assignments"].is_array(),
            "join: assignments in {joined}"
        );
        (
            Member {
                group: group.to_string(),
                id,
            },
            joined,
        )
    }

    fn path(&self, suffix: &str) -> String {
        format!("/v1/groups/{}/members/{}{suffix}", self.group, self.id)
    }

    fn fetch(&self, api: &Api, max: u32, wait_ms: u64) -> Reply {
        api.get_query(
            &self.path("/events"),
            &[("max", max.to_string()), ("wait_ms", wait_ms.to_string())],
        )
    }

    fn heartbeat(&self, api: &Api) -> Reply {
        api.post_json(&self.path("/heartbeat"), &json!({}))
    }

    fn commit(&self, api: &Api, offsets: &[(u32, u64)]) -> Reply {
        let offsets: Vec<Value> = offsets
            .iter()
            .map(|(partition, offset)| json!({"topic": TOPIC, "partition": partition, "offset": offset}))
            .collect();
        api.post_json(&self.path("/commit"), &json!({ "offsets": offsets }))
    }

    fn leave(&self, api: &Api) {
        api.delete(&self.path("")).expect_status(204);
    }
}

/// The partitions of `TOPIC` in an `assignments` array.
fn partitions_of(assignments: &Value) -> BTreeSet<u32> {
    assignments
        .as_array()
        .unwrap_or_else(|| panic!("assignments is not an array: {assignments}"))
        .iter()
        .filter(|a| a["topic"] == TOPIC)
        .map(|a| u32::try_from(a["partition"].as_u64().expect("partition")).expect("u32"))
        .collect()
}

/// Per member id, its partitions, from `GET /v1/groups/{group}`.
fn group_assignments(api: &Api, group: &str) -> BTreeMap<String, BTreeSet<u32>> {
    let described = api.describe_group(group);
    described["members"]
        .as_array()
        .unwrap_or_else(|| panic!("group without members array: {described}"))
        .iter()
        .map(|m| {
            let id = m["member_id"].as_str().expect("member_id").to_string();
            (id, partitions_of(&m["assignments"]))
        })
        .collect()
}

/// True when `assignments` has exactly `members` members, disjoint, covering all
/// partitions, as evenly as possible.
fn balanced(assignments: &BTreeMap<String, BTreeSet<u32>>, members: usize) -> bool {
    if assignments.len() != members {
        return false;
    }
    let total: usize = assignments.values().map(BTreeSet::len).sum();
    let union: BTreeSet<u32> = assignments.values().flatten().copied().collect();
    let most = assignments.values().map(BTreeSet::len).max().unwrap_or(0);
    let least = assignments.values().map(BTreeSet::len).min().unwrap_or(0);
    total == PARTITIONS as usize && union.len() == PARTITIONS as usize && most - least <= 1
}

/// Per partition, the committed offset from `GET /v1/groups/{group}` (None: never).
fn committed_offsets(api: &Api, group: &str) -> BTreeMap<u32, Option<u64>> {
    let described = api.describe_group(group);
    described["offsets"]
        .as_array()
        .unwrap_or_else(|| panic!("group without offsets array: {described}"))
        .iter()
        .filter(|o| o["topic"] == TOPIC)
        .map(|o| {
            let partition =
                u32::try_from(o["partition"].as_u64().expect("partition")).expect("u32");
            (partition, o["committed"].as_u64())
        })
        .collect()
}

fn publish_round_robin(api: &Api, prefix: &str, per_partition: u64) {
    for partition in 0..PARTITIONS {
        let events: Vec<Value> = (0..per_partition)
            .map(|i| event(&format!("{prefix}-{partition}-{i}")))
            .collect();
        api.post_raw(
            &format!("/v1/topics/{TOPIC}/events?partition={partition}"),
            Some("application/cloudevents-batch+json"),
            Value::Array(events).to_string().into_bytes(),
            &[],
        )
        .expect_status(200);
    }
}

/// Keeps every member alive (heartbeat) until the group is balanced over `members`.
fn wait_balanced(api: &Api, group: &str, members: &[&Member]) -> BTreeMap<String, BTreeSet<u32>> {
    common::wait_for("a balanced assignment", Duration::from_secs(10), || {
        for member in members {
            member.heartbeat(api).expect_status(200);
        }
        let assignments = group_assignments(api, group);
        balanced(&assignments, members.len()).then_some(assignments)
    })
}

#[test]
fn members_share_partitions_commit_and_resume_after_restart() {
    let mut server = Server::start();
    let api = server.api();
    api.create_topic(TOPIC, PARTITIONS);
    let per_partition = 100u64;
    publish_round_robin(&api, "first", per_partition);

    let mut members = Vec::new();
    let mut generations = Vec::new();
    for _ in 0..3 {
        let (member, joined) = Member::join(&api, "g", 10_000);
        generations.push(joined["generation"].as_u64().expect("generation"));
        members.push(member);
    }
    assert!(
        generations.windows(2).all(|w| w[0] < w[1]),
        "each join bumps the generation: {generations:?}"
    );
    let three = wait_balanced(&api, "g", &members.iter().collect::<Vec<_>>());
    for member in &members {
        assert_eq!(
            three[&member.id].len(),
            2,
            "6 partitions over 3 members: {three:?}"
        );
    }

    let mut delivered: HashSet<(u32, u64)> = HashSet::new();
    let mut committed: BTreeMap<u32, u64> = BTreeMap::new();
    let mut alive = vec![true; members.len()];
    let total = per_partition * u64::from(PARTITIONS);
    let deadline = Instant::now() + Duration::from_secs(30);
    let everything_committed = |committed: &BTreeMap<u32, u64>| {
        (0..PARTITIONS).all(|p| committed.get(&p) == Some(&per_partition))
    };
    while !everything_committed(&committed) {
        assert!(
            Instant::now() < deadline,
            "consumption stalled: committed {committed:?}, delivered {}",
            delivered.len()
        );
        if alive[1] && delivered.len() as u64 >= total / 2 {
            // One member leaves mid-way: its partitions move to the other two.
            members[1].leave(&api);
            alive[1] = false;
            let two = wait_balanced(&api, "g", &[&members[0], &members[2]]);
            assert!(!two.contains_key(&members[1].id), "{two:?}");
        }
        for (index, member) in members.iter().enumerate() {
            if !alive[index] {
                continue;
            }
            let reply = member.fetch(&api, 25, 0);
            if reply.status == 409 {
                reply.expect_error(409, "rebalance_in_progress");
                continue;
            }
            let page = reply.expect_status(200).body;
            let owned = partitions_of(&page["assignments"]);
            let mut last_of_partition: BTreeMap<u32, u64> = BTreeMap::new();
            for record in page["events"].as_array().expect("events") {
                let partition = record_partition(record);
                let offset = record_offset(record);
                assert!(
                    owned.contains(&partition),
                    "member {index} got partition {partition} it does not own ({owned:?})"
                );
                delivered.insert((partition, offset));
                let last = last_of_partition.entry(partition).or_insert(offset);
                assert!(
                    offset >= *last,
                    "offsets within a partition increase: {page}"
                );
                *last = offset;
            }
            if last_of_partition.is_empty() {
                continue;
            }
            let offsets: Vec<(u32, u64)> =
                last_of_partition.iter().map(|(p, o)| (*p, o + 1)).collect();
            let reply = member.commit(&api, &offsets);
            match reply.status {
                200 => {
                    for (partition, offset) in offsets {
                        let entry = committed.entry(partition).or_insert(0);
                        *entry = (*entry).max(offset);
                    }
                }
                // Lost the partition to a rebalance: its new owner re-reads from the commit.
                409 => {
                    let code = reply.body["error"]["code"].as_str().unwrap_or("");
                    assert!(
                        code == "not_assigned" || code == "rebalance_in_progress",
                        "{}",
                        reply.text
                    );
                }
                _ => panic!("commit: unexpected {} {}", reply.status, reply.text),
            }
        }
    }
    for partition in 0..PARTITIONS {
        for offset in 0..per_partition {
            assert!(
                delivered.contains(&(partition, offset)),
                "({partition}, {offset}) never delivered"
            );
        }
    }
    let described = api.describe_group("g");
    for entry in described["offsets"].as_array().expect("offsets") {
        assert_eq!(entry["committed"], per_partition, "{described}");
        assert_eq!(entry["end_offset"], per_partition, "{described}");
        assert_eq!(entry["lag"], 0, "{described}");
    }
    let listed = api.get("/v1/groups").expect_status(200).body;
    let names: Vec<&str> = listed["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(names.contains(&"g"), "{listed}");

    members[0].leave(&api);
    members[2].leave(&api);
    // Commits are durable once acknowledged: even a SIGKILL keeps them.
    server.kill9();
    server.restart();
    let api = server.api();
    let after = committed_offsets(&api, "g");
    let expected: BTreeMap<u32, Option<u64>> =
        (0..PARTITIONS).map(|p| (p, Some(per_partition))).collect();
    assert_eq!(after, expected, "committed offsets after restart");

    // A new member resumes from the committed offsets: only the new events arrive.
    publish_round_robin(&api, "second", 10);
    let (member, _) = Member::join(&api, "g", 10_000);
    let mut received: BTreeSet<(u32, u64)> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while received.len() < 60 {
        assert!(
            Instant::now() < deadline,
            "rejoined member got only {received:?}"
        );
        let page = member.fetch(&api, 100, 200).expect_status(200).body;
        for record in page["events"].as_array().expect("events") {
            let position = (record_partition(record), record_offset(record));
            assert!(
                position.1 >= per_partition,
                "committed event {position:?} delivered again: {record}"
            );
            assert!(
                received.insert(position),
                "{position:?} delivered twice to one member"
            );
            let id = common::record_id(record);
            assert!(id.starts_with("second-"), "{record}");
        }
    }
    let page = member.fetch(&api, 100, 300).expect_status(200).body;
    assert_eq!(page["events"], json!([]), "nothing more: {page}");
    // An empty commit commits the member's current positions.
    member.commit_current(&api);
    let expected: BTreeMap<u32, Option<u64>> = (0..PARTITIONS)
        .map(|p| (p, Some(per_partition + 10)))
        .collect();
    assert_eq!(committed_offsets(&api, "g"), expected);

    // Reset and delete are refused while the group has members, allowed once it is empty.
    api.post_json(
        "/v1/groups/g/reset",
        &json!({"topic": TOPIC, "to": "earliest"}),
    )
    .expect_error(409, "group_not_empty");
    api.delete("/v1/groups/g")
        .expect_error(409, "group_not_empty");
    member.leave(&api);
    api.post_json(
        "/v1/groups/g/reset",
        &json!({"topic": TOPIC, "to": {"offset": 7}}),
    )
    .expect_status(200);
    let expected: BTreeMap<u32, Option<u64>> = (0..PARTITIONS).map(|p| (p, Some(7))).collect();
    assert_eq!(committed_offsets(&api, "g"), expected);
    api.delete("/v1/groups/g").expect_status(204);
    api.get("/v1/groups/g").expect_error(404, "group_not_found");
}

impl Member {
    fn commit_current(&self, api: &Api) {
        let reply = api.post_raw(
            &self.path("/commit"),
            Some("application/json"),
            b"{}".to_vec(),
            &[],
        );
        reply.expect_status(200);
    }
}

#[test]
fn silent_member_loses_partitions_after_session_timeout() {
    let server = Server::start();
    let api = server.api();
    api.create_topic(TOPIC, PARTITIONS);
    publish_round_robin(&api, "e", 5);

    let (silent, _) = Member::join(&api, "s", 1_000);
    let (active, _) = Member::join(&api, "s", 10_000);
    // While both are alive each holds half; waiting for that heartbeats both.
    let split = wait_balanced(&api, "s", &[&silent, &active]);
    let silent_last_contact = Instant::now();
    // Committing a partition the member does not own is refused.
    let foreign = *split[&active.id]
        .iter()
        .next()
        .expect("active owns a partition");
    silent
        .commit(&api, &[(foreign, 1)])
        .expect_error(409, "not_assigned");
    let silent_last_contact = silent_last_contact.max(Instant::now());

    let everything: BTreeSet<u32> = (0..PARTITIONS).collect();
    let taken_over_at = common::wait_for(
        "the silent member to time out",
        Duration::from_secs(10),
        || {
            let beat = active.heartbeat(&api).expect_status(200).body;
            if partitions_of(&beat["assignments"]) == everything {
                return Some(Instant::now());
            }
            thread::sleep(Duration::from_millis(100));
            None
        },
    );
    let silence = taken_over_at - silent_last_contact;
    assert!(
        silence >= Duration::from_millis(900),
        "member removed after {silence:?} of silence; its session timeout is 1000 ms"
    );
    let members = group_assignments(&api, "s");
    assert_eq!(
        members.keys().collect::<Vec<_>>(),
        vec![&active.id],
        "{members:?}"
    );
    silent
        .fetch(&api, 10, 0)
        .expect_error(404, "member_not_found");

    // The survivor reads everything.
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received < 30 {
        assert!(
            Instant::now() < deadline,
            "survivor got {received} of 30 events"
        );
        let page = active.fetch(&api, 100, 200).expect_status(200).body;
        received += page["events"].as_array().expect("events").len();
    }
}

#[test]
fn member_long_poll_wakes_on_any_assigned_partition() {
    let server = Server::start();
    let api = server.api();
    api.create_topic(TOPIC, PARTITIONS);
    let (member, joined) = Member::join(&api, "lp", 10_000);
    assert_eq!(
        partitions_of(&joined["assignments"]).len(),
        PARTITIONS as usize,
        "{joined}"
    );
    // Nothing to read yet.
    let page = member.fetch(&api, 10, 0).expect_status(200).body;
    assert_eq!(page["events"], json!([]), "{page}");

    for partition in [4u32, 1] {
        let poller = api.clone();
        let path = member.path("/events");
        let started = Instant::now();
        let handle = thread::spawn(move || {
            let reply =
                poller.get_query(&path, &[("max", "10".into()), ("wait_ms", "5000".into())]);
            (reply.expect_status(200).body, Instant::now())
        });
        thread::sleep(Duration::from_millis(300));
        let published_at = Instant::now();
        api.post_raw(
            &format!("/v1/topics/{TOPIC}/events?partition={partition}"),
            Some("application/cloudevents+json"),
            event(&format!("wake-{partition}")).to_string().into_bytes(),
            &[],
        )
        .expect_status(200);
        let (page, returned_at) = handle.join().expect("poller");
        let ids: Vec<&str> = page["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(common::record_id)
            .collect();
        assert_eq!(ids, [format!("wake-{partition}")], "{page}");
        let after_publish = returned_at.saturating_duration_since(published_at);
        assert!(
            after_publish < Duration::from_millis(2000)
                && returned_at - started < Duration::from_millis(3000),
            "member long poll returned {after_publish:?} after a publish to partition {partition}"
        );
    }
}

#[test]
fn latest_reset_skips_existing_events() {
    let server = Server::start();
    let api = server.api();
    api.create_topic(TOPIC, PARTITIONS);
    publish_round_robin(&api, "old", 3);
    let joined = api.join_group(
        "late",
        &json!({"topics": [TOPIC], "auto_offset_reset": "latest"}),
    );
    let member = Member {
        group: "late".into(),
        id: joined["member_id"].as_str().expect("member_id").to_string(),
    };
    let page = member.fetch(&api, 100, 0).expect_status(200).body;
    assert_eq!(page["events"], json!([]), "latest: nothing old: {page}");
    publish_round_robin(&api, "new", 1);
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids.len() < PARTITIONS as usize {
        assert!(Instant::now() < deadline, "got only {ids:?}");
        let page = member.fetch(&api, 100, 200).expect_status(200).body;
        for record in page["events"].as_array().expect("events") {
            ids.push(common::record_id(record).to_string());
        }
    }
    assert!(ids.iter().all(|id| id.starts_with("new-")), "{ids:?}");
    api.get("/v1/groups/late/members/no-such-member/events")
        .expect_error(404, "member_not_found");
    api.post_json(
        "/v1/groups/late/members/no-such-member/heartbeat",
        &json!({}),
    )
    .expect_error(404, "member_not_found");
    api.get("/v1/groups/no-such-group")
        .expect_error(404, "group_not_found");
}
