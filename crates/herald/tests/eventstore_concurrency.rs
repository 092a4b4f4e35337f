//! Optimistic concurrency over HTTP: 8 writers race on one stream, each appending with
//! the version it last saw. Exactly one writer wins each version (every other gets a
//! 409 carrying the current version), and the stream ends dense: versions 0..N with no
//! gap, each event written exactly once.
//!
//! Replay a failing run with `HERALD_TEST_SEED=<seed printed by the test>`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::thread;

use common::{Api, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const WRITERS: usize = 8;
const WINS_PER_WRITER: usize = 12;
const STREAM: &str = "account-7";

fn append(api: &Api, stream: &str, expected: &Value, events: &[Value]) -> common::Reply {
    api.post_json(
        &format!("/v1/streams/{stream}"),
        &json!({"expected_version": expected, "events": events}),
    )
}

#[test]
fn eight_writers_never_both_win_a_version() {
    let seed = common::seed();
    let server = Server::start();
    let mut handles = Vec::new();
    for writer in 0..WRITERS {
        let api = server.api();
        let writer_seed = seed.wrapping_add(writer as u64);
        handles.push(thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(writer_seed);
            let mut expected = json!("no_stream");
            let mut wins: Vec<(u64, Vec<String>)> = Vec::new();
            let mut conflicts = 0;
            let mut attempt = 0;
            while wins.len() < WINS_PER_WRITER {
                attempt += 1;
                let count = rng.random_range(1..=3);
                let ids: Vec<String> = (0..count)
                    .map(|i| format!("w{writer}-a{attempt}-{i}"))
                    .collect();
                let events: Vec<Value> = ids.iter().map(|id| common::event(id)).collect();
                let reply = append(&api, STREAM, &expected, &events);
                match reply.status {
                    200 => {
                        let last = reply.body["next_expected_version"]
                            .as_u64()
                            .expect("version");
                        wins.push((last + 1 - count as u64, ids));
                        expected = json!(last);
                    }
                    409 => {
                        conflicts += 1;
                        let current = &reply.body["current_version"];
                        assert!(
                            current.is_u64(),
                            "a conflict on an existing stream names its version: {}",
                            reply.text
                        );
                        assert_eq!(reply.body["error"]["code"], "wrong_expected_version");
                        expected = current.clone();
                    }
                    other => panic!("writer {writer}: unexpected {other}: {}", reply.text),
                }
            }
            (wins, conflicts)
        }));
    }
    // first version of each winning append -> ids written.
    let mut won: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut total_conflicts = 0;
    for handle in handles {
        let (wins, conflicts) = handle.join().expect("writer thread");
        total_conflicts += conflicts;
        for (first_version, ids) in wins {
            assert!(
                won.insert(first_version, ids).is_none(),
                "two writers won version {first_version}"
            );
        }
    }
    eprintln!("appends won: {}, conflicts: {total_conflicts}", won.len());

    let body = server
        .api()
        .get(&format!("/v1/streams/{STREAM}?max=10000"))
        .expect_status(200)
        .body;
    let events = body["events"].as_array().expect("events");
    let mut expected_ids = Vec::new();
    let mut next_version = 0;
    for (first_version, ids) in &won {
        assert_eq!(
            *first_version, next_version,
            "winning appends tile the versions"
        );
        next_version += ids.len() as u64;
        expected_ids.extend(ids.iter().cloned());
    }
    let versions: Vec<u64> = events
        .iter()
        .map(|e| e["version"].as_u64().expect("v"))
        .collect();
    assert_eq!(versions, (0..next_version).collect::<Vec<_>>(), "no gaps");
    let ids: Vec<String> = events
        .iter()
        .map(|e| e["event"]["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(
        ids, expected_ids,
        "exactly the winners' events, in version order"
    );
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no event twice");
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().expect("p"))
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions increase with versions"
    );
}
