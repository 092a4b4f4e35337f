//! Durability of the event store under SIGKILL and restart: writers append to several
//! streams with exact expected versions while the server is killed at a random moment.
//! After the restart every acknowledged append is there at its acknowledged versions
//! and `$all` positions, `$all` keeps its order (what was read before is a prefix of
//! what is read after), each stream is dense, every multi-event append is whole, and
//! the version numbering continues.
//!
//! Replay a failing run with `HERALD_TEST_SEED=<seed printed by the test>`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{Api, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const WRITERS: usize = 4;

/// One acknowledged append: stream, first version, ids, position of the last event.
#[derive(Debug, Clone)]
struct Acked {
    stream: String,
    first_version: u64,
    ids: Vec<String>,
    last_position: u64,
}

fn read_all(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let body = api
            .get(&format!("/v1/streams/$all?from={from}&max=10000"))
            .expect_status(200)
            .body;
        let events = body["events"].as_array().expect("events").clone();
        if events.is_empty() {
            return out;
        }
        from = body["next"].as_u64().expect("next");
        out.extend(events);
    }
}

fn summary(events: &[Value]) -> Vec<(String, u64, u64, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["stream"].as_str().expect("stream").to_string(),
                e["version"].as_u64().expect("version"),
                e["position"].as_u64().expect("position"),
                e["event"]["id"].as_str().expect("id").to_string(),
            )
        })
        .collect()
}

fn writer(api: Api, writer: usize, seed: u64, stop: Arc<AtomicBool>) -> Vec<Acked> {
    let mut rng = StdRng::seed_from_u64(seed);
    let stream = format!("cart-{writer}");
    let mut next_version = 0u64;
    let mut acked = Vec::new();
    let mut attempt = 0;
    while !stop.load(Ordering::Acquire) {
        attempt += 1;
        let count = rng.random_range(1..=4);
        let ids: Vec<String> = (0..count)
            .map(|i| format!("{stream}-{attempt}-{i}of{count}"))
            .collect();
        let expected = next_version
            .checked_sub(1)
            .map_or(json!("no_stream"), |v| json!(v));
        let body = json!({
            "expected_version": expected,
            "events": ids.iter().map(|id| common::event(id)).collect::<Vec<_>>(),
        });
        let request = api
            .client()
            .post(api.url(&format!("/v1/streams/{stream}")))
            .header("content-type", "application/json")
            .body(body.to_string());
        match api.try_send(request, format!("append {stream}")) {
            Ok(reply) if reply.status == 200 => {
                let last = reply.body["next_expected_version"]
                    .as_u64()
                    .expect("version");
                assert_eq!(last, next_version + count as u64 - 1, "{}", reply.text);
                acked.push(Acked {
                    stream: stream.clone(),
                    first_version: next_version,
                    ids,
                    last_position: reply.body["position"].as_u64().expect("position"),
                });
                next_version = last + 1;
            }
            Ok(reply) => panic!("{stream}: unexpected {}: {}", reply.status, reply.text),
            // The server died mid-request: this append's outcome is unknown.
            Err(_) => return acked,
        }
    }
    acked
}

#[test]
fn acknowledged_appends_and_all_order_survive_kill9_and_restart() {
    let seed = common::seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut server = Server::start_with_args(&["--no-kafka"]);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (api, stop) = (server.api(), Arc::clone(&stop));
            let writer_seed = seed.wrapping_add(w as u64);
            thread::spawn(move || writer(api, w, writer_seed, stop))
        })
        .collect();
    // Wait for some progress, then kill at a random moment.
    common::wait_for("appends", Duration::from_secs(30), || {
        let all = server.api().get("/v1/streams/$all?max=1000").body;
        (all["events"].as_array().map_or(0, Vec::len) >= 40).then_some(())
    });
    thread::sleep(Duration::from_millis(rng.random_range(0..200)));
    let before_kill = summary(&read_all(&server.api()));
    server.kill9();
    stop.store(true, Ordering::Release);
    let acked: Vec<Acked> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("writer"))
        .collect();
    eprintln!(
        "acknowledged appends: {}, events read before the kill: {}",
        acked.len(),
        before_kill.len()
    );

    server.restart();
    let api = server.api();
    let after = summary(&read_all(&api));
    assert!(
        after.len() >= before_kill.len() && after[..before_kill.len()] == before_kill[..],
        "$all read before the kill is a prefix of $all after the restart"
    );
    for append in &acked {
        for (i, id) in append.ids.iter().enumerate() {
            let version = append.first_version + i as u64;
            let found = after
                .iter()
                .find(|(s, v, _, _)| *s == append.stream && *v == version)
                .unwrap_or_else(|| panic!("acknowledged {}@{version} lost", append.stream));
            assert_eq!(
                &found.3, id,
                "{}@{version} holds the acknowledged event",
                append.stream
            );
        }
        let last = after
            .iter()
            .find(|(s, v, _, _)| {
                *s == append.stream && *v == append.first_version + append.ids.len() as u64 - 1
            })
            .expect("last event");
        assert_eq!(last.2, append.last_position, "acknowledged position kept");
    }
    // Streams are dense and each append is whole (atomic batches).
    for w in 0..WRITERS {
        let stream = format!("cart-{w}");
        let versions: Vec<u64> = after
            .iter()
            .filter(|e| e.0 == stream)
            .map(|e| e.1)
            .collect();
        assert_eq!(
            versions,
            (0..versions.len() as u64).collect::<Vec<_>>(),
            "{stream} dense"
        );
        let ids: Vec<&String> = after
            .iter()
            .filter(|e| e.0 == stream)
            .map(|e| &e.3)
            .collect();
        // ids are `<stream>-<attempt>-<i>of<count>`: every batch present is whole.
        let mut batches: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for id in ids {
            let (batch, part) = id.rsplit_once('-').expect("id shape");
            batches
                .entry(batch.to_string())
                .or_default()
                .push(part.to_string());
        }
        for (batch, parts) in batches {
            let count: usize = parts[0]
                .split_once("of")
                .expect("of")
                .1
                .parse()
                .expect("count");
            let expected: Vec<String> = (0..count).map(|i| format!("{i}of{count}")).collect();
            assert_eq!(parts, expected, "batch {batch} is whole and in order");
        }
        // Numbering continues after the restart.
        let expected = versions.last().map_or(json!("no_stream"), |v| json!(v));
        let reply = api.post_json(
            &format!("/v1/streams/{stream}"),
            &json!({"expected_version": expected, "events": [common::event(&format!("{stream}-after"))]}),
        );
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(
            reply.body["next_expected_version"].as_u64(),
            Some(versions.len() as u64)
        );
    }

    // A graceful restart keeps everything too.
    let before_term = summary(&read_all(&api));
    assert_eq!(server.terminate().code(), Some(0));
    server.restart();
    assert_eq!(
        summary(&read_all(&server.api())),
        before_term,
        "SIGTERM + restart"
    );
}
