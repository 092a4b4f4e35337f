//! Several Herald gateways on one JetStream act as one broker: topics created on one are
//! served by the others, publishes through any gateway land in one order per partition,
//! a killed gateway loses nothing it acknowledged, a consumer group spread over two
//! gateways splits the partitions and carries on when one gateway dies, delayed events are
//! delivered by whichever gateway holds the delivery lease, a schema registered on one
//! gateway is enforced by all, bus subscriptions are shared (any gateway serves a queue,
//! a leased message outlives its gateway); and Herald on a 3-node NATS cluster (replicas 3) loses no acknowledged event when a NATS node is killed
//! under load.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::nats::{gateway, two_gateways, NatsServer};
use common::{event, event_with_data, record_id, record_offset, wait_for, Api, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// Publishes one event; `Some((partition, offset))` only when the gateway acknowledged it.
fn try_publish(api: &Api, topic: &str, event: &Value) -> Option<(u32, u64)> {
    let builder = api
        .client()
        .post(api.url(&format!("/v1/topics/{topic}/events")))
        .header("content-type", "application/cloudevents+json")
        .timeout(Duration::from_secs(10))
        .body(event.to_string());
    let reply = api.try_send(builder, format!("publish to {topic}")).ok()?;
    if reply.status != 200 {
        return None;
    }
    let ack = &reply.body["events"][0];
    Some((
        u32::try_from(ack["partition"].as_u64()?).ok()?,
        ack["offset"].as_u64()?,
    ))
}

/// Every record of every partition, keyed by event id; panics on a duplicate or a gap.
fn read_everything(api: &Api, topic: &str, partitions: u32) -> HashMap<String, (u32, u64)> {
    let mut found = HashMap::new();
    for partition in 0..partitions {
        for (index, record) in api.fetch_all(topic, partition).iter().enumerate() {
            assert_eq!(record_offset(record), index as u64, "offsets dense from 0");
            let previous = found.insert(record_id(record).to_string(), (partition, index as u64));
            assert!(previous.is_none(), "duplicate {}", record_id(record));
        }
    }
    found
}

fn wait_topic_visible(api: &Api, topic: &str) {
    wait_for(&format!("topic {topic} visible"), WAIT, || {
        (api.get(&format!("/v1/topics/{topic}")).status == 200).then_some(())
    });
}

#[test]
fn topics_and_events_are_shared_by_every_gateway() {
    let (_nats, one, two) = two_gateways();
    let (a, b) = (one.api(), two.api());

    a.create_topic("orders", 3);
    wait_topic_visible(&b, "orders");
    assert_eq!(b.describe_topic("orders")["partitions"], 3);
    // One registry: the second gateway cannot create the same name.
    b.post_json("/v1/topics", &json!({"name": "orders", "partitions": 1}))
        .expect_error(409, "topic_exists");

    // Producers on both gateways at once, keyed so each key has one partition.
    let acks: Arc<Mutex<BTreeMap<String, (u32, u64)>>> = Arc::default();
    let producers: Vec<_> = [(a.clone(), "a"), (b.clone(), "b")]
        .into_iter()
        .map(|(api, name)| {
            let acks = Arc::clone(&acks);
            thread::spawn(move || {
                for i in 0..150 {
                    let id = format!("{name}-{i}");
                    let mut e = event(&id);
                    e["partitionkey"] = json!(format!("key-{}", i % 7));
                    let ack = try_publish(&api, "orders", &e).expect("publish acknowledged");
                    acks.lock().expect("acks").insert(id, ack);
                }
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer");
    }
    let acks = acks.lock().expect("acks").clone();
    assert_eq!(acks.len(), 300);

    // Both gateways serve the same log: same events at the same offsets.
    let seen_a = read_everything(&a, "orders", 3);
    let seen_b = read_everything(&b, "orders", 3);
    assert_eq!(seen_a, seen_b);
    for (id, position) in &acks {
        assert_eq!(
            seen_a.get(id),
            Some(position),
            "{id} where it was acknowledged"
        );
    }
    // Per-key order holds across gateways: within a partition, each producer's events
    // of one key appear in the order they were acknowledged.
    for producer in ["a", "b"] {
        for key in 0..7u64 {
            let offsets: Vec<u64> = (0..150u64)
                .filter(|i| i % 7 == key)
                .map(|i| acks[&format!("{producer}-{i}")].1)
                .collect();
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "order of {producer} key {key}"
            );
        }
    }

    // A delete on one gateway closes the topic everywhere.
    b.delete("/v1/topics/orders").expect_status(204);
    wait_for("topic gone on gateway one", WAIT, || {
        (a.get("/v1/topics/orders").status == 404).then_some(())
    });
}

#[test]
fn a_killed_gateway_loses_nothing_it_acknowledged() {
    let seed = common::seed();
    let (_nats, mut one, two) = two_gateways();
    one.api().create_topic("payments", 2);
    wait_topic_visible(&two.api(), "payments");

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<HashMap<String, (u32, u64)>>> = Arc::default();
    // One producer per gateway; the one on gateway one loses its gateway mid-run and
    // carries on through gateway two, like a client behind a load balancer.
    let producers: Vec<_> = [(one.api(), two.api(), "p1"), (two.api(), two.api(), "p2")]
        .into_iter()
        .map(|(first, fallback, name)| {
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            thread::spawn(move || {
                let mut api = first;
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let id = format!("{name}-{seed}-{i}");
                    match try_publish(&api, "payments", &event(&id)) {
                        Some(ack) => {
                            acked.lock().expect("acked").insert(id, ack);
                            i += 1;
                        }
                        None => api = fallback.clone(),
                    }
                }
            })
        })
        .collect();
    wait_for("some events acknowledged", WAIT, || {
        (acked.lock().expect("acked").len() >= 200).then_some(())
    });
    one.kill9();
    let before = acked.lock().expect("acked").len();
    wait_for("publishing goes on through gateway two", WAIT, || {
        (acked.lock().expect("acked").len() >= before + 200).then_some(())
    });
    stop.store(true, Ordering::Release);
    for p in producers {
        p.join().expect("producer");
    }

    let found = read_everything(&two.api(), "payments", 2);
    let acked = acked.lock().expect("acked");
    for (id, position) in acked.iter() {
        assert_eq!(found.get(id), Some(position), "acknowledged {id}");
    }
    // The restarted gateway serves the same log.
    one.restart();
    assert_eq!(read_everything(&one.api(), "payments", 2), found);
}

#[test]
fn a_nats_cluster_node_killed_under_load_loses_no_acknowledged_event() {
    let seed = common::seed();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cluster = NatsServer::start_cluster(dir.path());
    let urls: Vec<String> = cluster.iter().map(NatsServer::url).collect();
    let herald = gateway(&urls.join(","), &["--nats-replicas", "3"]);
    let api = herald.api();
    // The cluster elects its JetStream leader a moment after start.
    wait_for(
        "JetStream cluster ready for a replicated topic",
        WAIT,
        || {
            let reply = api.post_json("/v1/topics", &json!({"name": "ledger", "partitions": 2}));
            (reply.status == 201).then_some(())
        },
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<HashMap<String, (u32, u64)>>> = Arc::default();
    let producer = {
        let (stop, acked, api) = (Arc::clone(&stop), Arc::clone(&acked), api.clone());
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let id = format!("e-{seed}-{i}");
                i += 1;
                if let Some(ack) = try_publish(&api, "ledger", &event(&id)) {
                    acked.lock().expect("acked").insert(id, ack);
                }
            }
        })
    };
    wait_for("load running", WAIT, || {
        (acked.lock().expect("acked").len() >= 300).then_some(())
    });
    let victim = (seed % 3) as usize;
    eprintln!("killing NATS node {victim}");
    cluster[victim].kill9();
    let before = acked.lock().expect("acked").len();
    wait_for(
        "acknowledgements continue on the two remaining nodes",
        WAIT,
        || (acked.lock().expect("acked").len() >= before + 300).then_some(()),
    );
    stop.store(true, Ordering::Release);
    producer.join().expect("producer");

    // A stream whose leader was on the killed node answers again once its two remaining
    // replicas elected a new leader (a few seconds): until then reads get 503.
    for partition in 0..2 {
        wait_for(&format!("partition {partition} readable"), WAIT, || {
            let reply = api.get(&format!(
                "/v1/topics/ledger/events?partition={partition}&max=1"
            ));
            (reply.status == 200).then_some(())
        });
    }
    let found = read_everything(&api, "ledger", 2);
    let acked = acked.lock().expect("acked");
    for (id, position) in acked.iter() {
        assert_eq!(found.get(id), Some(position), "acknowledged {id}");
    }
    eprintln!("{} acknowledged events, all present", acked.len());
}

/// Joins `group` on `api` for `topic` and returns the member's events path.
fn join(api: &Api, group: &str, topic: &str) -> String {
    let joined = api.join_group(
        group,
        &json!({"topics": [topic], "session_timeout_ms": 3_000, "auto_offset_reset": "earliest"}),
    );
    let id = joined["member_id"].as_str().expect("member_id");
    format!("/v1/groups/{group}/members/{id}")
}

fn member_fetch(api: &Api, member: &str, max: u32) -> Vec<Value> {
    let reply = api
        .get_query(
            &format!("{member}/events"),
            &[("max", max.to_string()), ("wait_ms", "2000".into())],
        )
        .expect_status(200);
    reply.body["events"].as_array().expect("events").clone()
}

#[test]
fn a_group_resumes_on_another_gateway_from_the_offsets_committed_on_the_first() {
    let (_nats, mut one, two) = two_gateways();
    let (a, b) = (one.api(), two.api());
    a.create_topic("invoices", 1);
    wait_topic_visible(&b, "invoices");
    let events: Vec<Value> = (0..100).map(|i| event(&format!("inv-{i}"))).collect();
    a.publish("invoices", &events);

    // The member on gateway one reads 60 events and commits them, then its gateway dies.
    let member = join(&a, "billing", "invoices");
    let mut read = Vec::new();
    while read.len() < 60 {
        read.extend(member_fetch(&a, &member, (60 - read.len()) as u32));
    }
    assert_eq!(record_offset(&read[59]), 59);
    a.post_json(
        &format!("{member}/commit"),
        &json!({"offsets": [{"topic": "invoices", "partition": 0, "offset": 60}]}),
    )
    .expect_status(200);
    one.kill9();

    // Gateway two already knows the commit: describe shows it, and a member that joins
    // there starts at offset 60, not at the beginning.
    wait_for("commit visible on gateway two", WAIT, || {
        let described = b.get("/v1/groups/billing");
        (described.status == 200 && described.body["offsets"][0]["committed"] == 60).then_some(())
    });
    // Gateway one's member holds the partition until its session (3 s) lapses unseen.
    let member = join(&b, "billing", "invoices");
    let rest = wait_for("the partition moves to gateway two's member", WAIT, || {
        let events = member_fetch(&b, &member, 100);
        (!events.is_empty()).then_some(events)
    });
    assert_eq!(
        rest.first().map(record_offset),
        Some(60),
        "resumes at the commit"
    );
    assert_eq!(record_id(&rest[0]), "inv-60");
}

/// `member -> partitions` as one gateway sees the group (`None` while it does not know it).
fn assignments(api: &Api, group: &str) -> Option<BTreeMap<String, BTreeSet<u64>>> {
    let described = api.get(&format!("/v1/groups/{group}"));
    if described.status != 200 {
        return None;
    }
    let members = described.body["members"].as_array()?;
    Some(
        members
            .iter()
            .map(|m| {
                let partitions = m["assignments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["partition"].as_u64())
                    .collect();
                (
                    m["member_id"].as_str().unwrap_or("").to_string(),
                    partitions,
                )
            })
            .collect(),
    )
}

/// A member's fetch-and-commit loop until `stop`, or until its gateway stops answering.
/// Returns how many events it received.
fn consume(
    api: Api,
    member: String,
    delivered: Arc<Mutex<HashSet<String>>>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut received = 0;
        while !stop.load(Ordering::Acquire) {
            let fetch = api
                .client()
                .get(api.url(&format!("{member}/events?max=50&wait_ms=300")))
                .timeout(Duration::from_secs(5));
            let Ok(reply) = api.try_send(fetch, format!("fetch for {member}")) else {
                return received;
            };
            assert_eq!(reply.status, 200, "fetch for {member}: {}", reply.text);
            let events = reply.body["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                continue;
            }
            received += events.len();
            delivered
                .lock()
                .expect("delivered")
                .extend(events.iter().map(|e| record_id(e).to_string()));
            let commit = api
                .client()
                .post(api.url(&format!("{member}/commit")))
                .timeout(Duration::from_secs(5));
            if api
                .try_send(commit, format!("commit for {member}"))
                .is_err()
            {
                return received;
            }
        }
        received
    })
}

#[test]
fn a_group_spread_over_two_gateways_carries_on_when_one_dies() {
    let (_nats, mut one, two) = two_gateways();
    let (a, b) = (one.api(), two.api());
    a.create_topic("payments", 4);
    wait_topic_visible(&b, "payments");

    // One member per gateway: both gateways agree on one split of the four partitions.
    // (6 s sessions: re-announced every 2 s, so a loaded machine delaying a heartbeat by a
    // second or two does not expire a live member.)
    let session = json!({"topics": ["payments"], "session_timeout_ms": 6_000, "auto_offset_reset": "earliest"});
    let member_a = a.join_group("settle", &session)["member_id"]
        .as_str()
        .expect("member_id")
        .to_string();
    let member_b = b.join_group("settle", &session)["member_id"]
        .as_str()
        .expect("member_id")
        .to_string();
    let split = wait_for("both gateways see one split", WAIT, || {
        let (seen_a, seen_b) = (assignments(&a, "settle")?, assignments(&b, "settle")?);
        let complete = seen_a.len() == 2 && seen_a.values().all(|p| p.len() == 2);
        (complete && seen_a == seen_b).then_some(seen_a)
    });
    let owned: BTreeSet<u64> = split.values().flatten().copied().collect();
    assert_eq!(
        owned,
        (0..4).collect(),
        "every partition has one owner: {split:?}"
    );

    // Producers on gateway one; each member consumes (and commits) on its own gateway.
    let delivered = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let consumers = [
        consume(
            a.clone(),
            format!("/v1/groups/settle/members/{member_a}"),
            Arc::clone(&delivered),
            Arc::clone(&stop),
        ),
        consume(
            b.clone(),
            format!("/v1/groups/settle/members/{member_b}"),
            Arc::clone(&delivered),
            Arc::clone(&stop),
        ),
    ];
    let acked = Arc::new(Mutex::new(Vec::new()));
    let producer = {
        let (api, acked, stop) = (a.clone(), Arc::clone(&acked), Arc::clone(&stop));
        thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let mut e = event(&format!("pay-{i}"));
                e["partitionkey"] = json!(format!("account-{}", i % 13));
                match try_publish(&api, "payments", &e) {
                    Some(_) => acked.lock().expect("acked").push(format!("pay-{i}")),
                    None => return,
                }
            }
        })
    };
    wait_for("both members receive events", WAIT, || {
        let delivered = delivered.lock().expect("delivered");
        (acked.lock().expect("acked").len() >= 200 && delivered.len() >= 100).then_some(())
    });

    // Gateway one dies mid-run: its producer and member stop with it.
    one.kill9();
    producer.join().expect("producer");
    let [consumer_a, consumer_b] = consumers;
    let received_a = consumer_a.join().expect("consumer on gateway one");
    assert!(received_a > 0, "the member on gateway one took part");

    // Once gateway one's member misses its session, gateway two owns every partition, and
    // the group continues there: new events published to gateway two are delivered too.
    wait_for("gateway two's member owns every partition", WAIT, || {
        let seen = assignments(&b, "settle")?;
        (seen.len() == 1 && seen.get(&member_b)? == &(0..4).collect::<BTreeSet<u64>>())
            .then_some(())
    });
    let later: Vec<Value> = (0..40).map(|i| event(&format!("late-{i}"))).collect();
    b.publish("payments", &later);
    let mut expected: Vec<String> = acked.lock().expect("acked").clone();
    expected.extend((0..40).map(|i| format!("late-{i}")));
    wait_for(
        "every acknowledged event delivered at least once",
        WAIT,
        || {
            let delivered = delivered.lock().expect("delivered");
            expected
                .iter()
                .all(|id| delivered.contains(id))
                .then_some(())
        },
    );
    stop.store(true, Ordering::Release);
    let received_b = consumer_b.join().expect("consumer on gateway two");
    eprintln!(
        "{} events acknowledged through gateway one before it died, {} more through gateway two; \
         member on gateway one received {received_a}, member on gateway two {received_b}",
        expected.len() - 40,
        40
    );
}

#[test]
fn delayed_events_are_delivered_once_by_whichever_gateway_survives() {
    let (_nats, mut one, two) = two_gateways();
    let (a, b) = (one.api(), two.api());
    a.create_topic("reminders", 1);
    wait_topic_visible(&b, "reminders");
    let ids = |api: &Api| -> Vec<String> {
        api.fetch_all("reminders", 0)
            .iter()
            .map(|r| record_id(r).to_string())
            .collect()
    };

    // Whichever gateway holds the lease delivers what any gateway accepted.
    for (api, id) in [(&a, "via-one"), (&b, "via-two")] {
        api.post_json("/v1/topics/reminders/events?delay_ms=500", &event(id))
            .expect_status(200);
    }
    wait_for("both delayed events delivered", WAIT, || {
        (ids(&b).len() == 2).then_some(())
    });

    // Gateway one accepts more, then dies before they are due: gateway two (holding the
    // lease already, or taking it over once gateway one's lapses) delivers them.
    for i in 0..5 {
        a.post_json(
            "/v1/topics/reminders/events?delay_ms=2000",
            &event(&format!("late-{i}")),
        )
        .expect_status(200);
    }
    one.kill9();
    let delivered = wait_for("the dead gateway's delayed events delivered", WAIT, || {
        let seen = ids(&b);
        (seen.len() >= 7).then_some(seen)
    });
    let mut sorted = delivered.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        delivered.len(),
        "each exactly once: {delivered:?}"
    );
    for i in 0..5 {
        assert!(delivered.contains(&format!("late-{i}")), "{delivered:?}");
    }
}

#[test]
fn a_schema_registered_on_one_gateway_is_enforced_by_every_gateway() {
    let (_nats, one, two) = two_gateways();
    let (a, b) = (one.api(), two.api());
    a.create_topic("orders", 1);
    wait_topic_visible(&b, "orders");
    let order = |id: &str, amount: Value| {
        let mut e = event_with_data(id, json!({ "amount": amount }));
        e["type"] = json!("order.created");
        e
    };
    let v1 = json!({"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]});
    a.post_json("/v1/schemas/order.created", &v1)
        .expect_status(201);
    wait_for("gateway two enforces the schema", WAIT, || {
        let reply = b.post_json("/v1/topics/orders/events", &order("bad", json!("12")));
        (reply.status == 400).then_some(())
    });
    b.post_json("/v1/topics/orders/events", &order("good", json!(12)))
        .expect_status(200);

    // Registrations through both gateways land in one registry: versions 2 and 3, in
    // whichever order, and both gateways list the same three.
    let titled = |title: &str| json!({"title": title, "type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]});
    let (va, vb) = thread::scope(|s| {
        let ra = s.spawn(|| a.post_json("/v1/schemas/order.created", &titled("from one")));
        let rb = s.spawn(|| b.post_json("/v1/schemas/order.created", &titled("from two")));
        (ra.join().expect("a"), rb.join().expect("b"))
    });
    let mut versions: Vec<u64> = [va, vb]
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["version"].as_u64().expect("version")
        })
        .collect();
    versions.sort();
    assert_eq!(versions, vec![2, 3]);
    for api in [&a, &b] {
        wait_for("three versions listed", WAIT, || {
            let latest = api.get("/v1/schemas/order.created");
            (latest.status == 200 && latest.body["version"] == 3).then_some(())
        });
    }
}

fn pull(api: &Api, subscription: &str, max: u32, wait_ms: u64) -> Vec<Value> {
    let reply = api
        .post_json(
            &format!("/v1/subscriptions/{subscription}/pull"),
            &json!({"max": max, "wait_ms": wait_ms}),
        )
        .expect_status(200);
    reply.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ack(api: &Api, subscription: &str, messages: &[Value]) {
    let receipts: Vec<&Value> = messages.iter().map(|m| &m["receipt"]).collect();
    let reply = api
        .post_json(
            &format!("/v1/subscriptions/{subscription}/ack"),
            &json!({ "receipts": receipts }),
        )
        .expect_status(200);
    for result in reply.body["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        assert_eq!(result["outcome"], "acked", "{}", reply.text);
    }
}

#[test]
fn a_queue_subscription_is_served_by_every_gateway_and_outlives_one() {
    let (_nats, mut one, two) = two_gateways();
    let (a, b) = (one.api(), two.api());
    a.create_topic("jobs", 2);
    wait_topic_visible(&b, "jobs");
    let queue = json!({"name": "workers", "topic": "jobs", "target": {"type": "queue"},
        "visibility_timeout_ms": 2000, "max_deliveries": 5});
    a.post_json("/v1/subscriptions", &queue).expect_status(201);
    wait_for("the subscription on gateway two", WAIT, || {
        (b.get("/v1/subscriptions/workers").status == 200).then_some(())
    });
    // One definition for every gateway: the name is taken everywhere.
    b.post_json("/v1/subscriptions", &queue)
        .expect_error(409, "subscription_exists");
    // Events published through either gateway are queued once, though both dispatch;
    // pulls through both gateways split them, and acks go through the other gateway.
    let mut expected = BTreeSet::new();
    for i in 0..40 {
        let id = format!("job-{i}");
        let via = if i % 2 == 0 { &a } else { &b };
        via.publish("jobs", &[event(&id)]);
        expected.insert(id);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut pulled_via = [0usize; 2];
    wait_for("every job pulled", WAIT, || {
        for (index, (puller, acker)) in [(&a, &b), (&b, &a)].into_iter().enumerate() {
            let messages = pull(puller, "workers", 7, 200);
            pulled_via[index] += messages.len();
            seen.extend(
                messages
                    .iter()
                    .map(|m| m["event"]["id"].as_str().unwrap().to_string()),
            );
            if !messages.is_empty() {
                ack(acker, "workers", &messages);
            }
        }
        (seen.len() >= expected.len()).then_some(())
    });
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique, expected, "every job, nothing else");
    assert_eq!(seen.len(), expected.len(), "no job twice: {seen:?}");
    assert!(
        pulled_via.iter().all(|n| *n > 0),
        "both gateways served pulls: {pulled_via:?}"
    );
    // Every job is acknowledged: the queue's stream is emptied of them once they are 30 s
    // old (a trim round every 5 s).
    let trimmed = Duration::from_secs(90);
    wait_for(
        "the acknowledged jobs deleted from the queue",
        trimmed,
        || {
            let topic = b.get("/v1/topics/__sub.workers").expect_status(200).body;
            let stats = &topic["partition_stats"][0];
            (stats["start_offset"] == 40 && stats["end_offset"] == 40).then_some(())
        },
    );
    // A message leased through gateway one when it dies is handed out again by gateway
    // two once its visibility timeout passes; gateway two keeps queueing new events.
    a.publish("jobs", &[event("held")]);
    let held = wait_for("the held job", WAIT, || {
        let messages = pull(&a, "workers", 1, 500);
        (!messages.is_empty()).then_some(messages)
    });
    assert_eq!(held[0]["event"]["id"], "held");
    one.kill9();
    for i in 0..10 {
        b.publish("jobs", &[event(&format!("after-{i}"))]);
    }
    let mut after: Vec<(String, u64)> = Vec::new();
    wait_for("the jobs after gateway one died", WAIT, || {
        let messages = pull(&b, "workers", 20, 500);
        after.extend(messages.iter().map(|m| {
            (
                m["event"]["id"].as_str().unwrap().to_string(),
                m["delivery_count"].as_u64().unwrap(),
            )
        }));
        if !messages.is_empty() {
            ack(&b, "workers", &messages);
        }
        (after.len() >= 11).then_some(())
    });
    let ids: BTreeSet<&str> = after.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), 11, "{after:?}");
    assert!(ids.contains("held"), "{after:?}");
    let held_count = after.iter().find(|(id, _)| id == "held").map(|(_, c)| *c);
    assert_eq!(held_count, Some(2), "delivered a second time: {after:?}");
    // Deleted through the surviving gateway, the name is free again.
    b.delete("/v1/subscriptions/workers").expect_status(204);
    b.post_json("/v1/subscriptions", &queue).expect_status(201);
}

#[test]
fn subscriptions_created_or_deleted_on_one_gateway_change_on_every_gateway() {
    let (nats, one, two) = two_gateways();
    let (a, b) = (one.api(), two.api());
    a.create_topic("orders", 1);
    wait_topic_visible(&b, "orders");
    let forward = json!({"name": "audit", "topic": "orders", "target": {"type": "queue"}});
    b.post_json("/v1/subscriptions", &forward)
        .expect_status(201);
    wait_for("audit on gateway one", WAIT, || {
        (a.get("/v1/subscriptions/audit").status == 200).then_some(())
    });
    a.delete("/v1/subscriptions/audit").expect_status(204);
    wait_for("audit gone from gateway two", WAIT, || {
        (b.get("/v1/subscriptions/audit").status == 404).then_some(())
    });
    // A gateway started later finds the subscriptions that exist.
    b.post_json("/v1/subscriptions", &forward)
        .expect_status(201);
    let three = gateway(&nats.url(), &[]);
    three
        .api()
        .get("/v1/subscriptions/audit")
        .expect_status(200);
}

#[test]
fn a_subscription_kept_in_a_data_directory_is_shared_when_its_gateway_starts() {
    // A definition file as a single-node Herald writes it (subscriptions were not shared
    // on JetStream before): made by an embedded server, then put in a gateway's directory.
    let embedded = Server::start_with_args(&["--storage", "local"]);
    let local = embedded.api();
    local.create_topic("jobs", 1);
    local
        .post_json(
            "/v1/subscriptions",
            &json!({"name": "legacy", "topic": "jobs", "target": {"type": "queue"}}),
        )
        .expect_status(201);
    let file = embedded
        .data_dir()
        .join("subscriptions")
        .join("legacy.json");
    let definition = std::fs::read(&file).expect("the definition file");

    let nats = NatsServer::start_temp();
    let mut one = gateway(&nats.url(), &[]);
    one.api().create_topic("jobs", 1);
    one.terminate();
    let moved = one.data_dir().join("subscriptions").join("legacy.json");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::write(&moved, &definition).unwrap();
    one.restart();
    let two = gateway(&nats.url(), &[]);
    two.api().get("/v1/subscriptions/legacy").expect_status(200);
    assert!(
        !moved.exists(),
        "the file is gone once the definition is shared"
    );
    // Deleted through gateway two, it does not come back when gateway one restarts.
    two.api()
        .delete("/v1/subscriptions/legacy")
        .expect_status(204);
    one.terminate();
    one.restart();
    one.api()
        .get("/v1/subscriptions/legacy")
        .expect_error(404, "subscription_not_found");
}
