"""Stock Kafka clients (confluent-kafka, i.e. librdkafka) against a real `herald serve`.

Run: `python3 tests/kafka/test_confluent.py` (HERALD_BIN selects the binary; KAFKA_TEST
picks tests by name; KAFKA_CODEC forces the codec of the big scenario, which is otherwise
chosen at random and printed, so every codec gets its turn across runs).
"""

import os
import random
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

CODECS = ["gzip", "snappy", "lz4", "zstd"]
MESSAGES = int(os.environ.get("KAFKA_MESSAGES", "100000"))
KEYS = 100
PARTITIONS = 6
CONSUMERS = 3


def producer(bootstrap, **extra):
    config = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
              "linger.ms": 5, "batch.num.messages": 10000}
    config.update(extra)
    return Producer(config)


def produce_keyed(p, topic, first_seq, count):
    """Produces `count` messages over KEYS keys; value `key:seq` with per-key sequences."""
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(err)

    for i in range(first_seq, first_seq + count):
        key = f"key-{i % KEYS}"
        seq = i // KEYS
        p.produce(topic, key=key, value=f"{key}:{seq}:{'x' * 40}",
                  headers=[("app-header", f"h{i}".encode())], on_delivery=delivered)
        if i % 10000 == 0:
            p.poll(0)
    remaining = p.flush(60)
    assert remaining == 0, f"{remaining} messages not delivered"
    assert not errors, f"delivery errors: {errors[:5]}"


def create_topic(bootstrap, name, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for _, future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).items():
        future.result(30)


class GroupMember(threading.Thread):
    """One consumer of a group: records every message, commits on revoke and at the end."""

    def __init__(self, bootstrap, group, topic, stop):
        super().__init__(daemon=True)
        self.stop = stop
        self.seen = []  # (partition, offset, key, seq, headers)
        self.error = None
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000, "fetch.wait.max.ms": 200,
        })
        self.consumer.subscribe([topic], on_revoke=self._on_revoke)

    def _on_revoke(self, consumer, partitions):
        self._commit()

    def _commit(self):
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as e:  # nothing consumed yet: nothing to commit
            if "NO_OFFSET" not in str(e):
                raise

    def run(self):
        try:
            while not self.stop.is_set():
                for msg in self.consumer.consume(num_messages=1000, timeout=0.3):
                    if msg.error():
                        raise KafkaException(msg.error())
                    key, seq, _ = msg.value().decode().split(":")
                    assert key == msg.key().decode(), (key, msg.key())
                    self.seen.append((msg.partition(), msg.offset(), key, int(seq), msg.headers()))
            self._commit()
        except Exception as e:  # noqa: BLE001 - surfaced by the test
            self.error = e

    def close(self):
        self.consumer.close()


def consume_group(bootstrap, group, topic, expected, consumers, timeout_s=120):
    stop = threading.Event()
    members = [GroupMember(bootstrap, group, topic, stop) for _ in range(consumers)]
    for m in members:
        m.start()
    deadline = time.time() + timeout_s
    while time.time() < deadline and sum(len(m.seen) for m in members) < expected:
        assert all(m.error is None for m in members), [m.error for m in members]
        time.sleep(0.2)
    time.sleep(1.0)  # anything extra (a duplicate) would show up now
    stop.set()
    for m in members:
        m.join(30)
    for m in members:
        m.close()
    assert all(m.error is None for m in members), [m.error for m in members]
    return members


def check_exactly_once_in_order(members, expected_pairs):
    seen = [record for m in members for record in m.seen]
    pairs = [(key, seq) for _, _, key, seq, _ in seen]
    assert len(pairs) == len(set(pairs)), f"{len(pairs) - len(set(pairs))} duplicates"
    assert set(pairs) == expected_pairs, (
        f"missing {len(expected_pairs - set(pairs))}, unexpected {len(set(pairs) - expected_pairs)}")
    by_key = {}
    for partition, offset, key, seq, _ in sorted(seen, key=lambda r: (r[0], r[1])):
        by_key.setdefault(key, []).append((partition, seq))
    for key, entries in by_key.items():
        assert len({p for p, _ in entries}) == 1, f"{key} spread over partitions"
        seqs = [s for _, s in entries]
        assert seqs == sorted(seqs), f"{key} out of order"
    for m in members:  # each consumer saw each key in order too
        last = {}
        for _, _, key, seq, _ in m.seen:
            assert seq > last.get(key, -1), f"{key} went backwards in one consumer"
            last[key] = seq


def test_group_exactly_once_commit_restart_resume():
    codec = os.environ.get("KAFKA_CODEC") or random.choice(CODECS)
    print(f"  codec={codec} messages={MESSAGES}", flush=True)
    server = harness.Server()
    try:
        topic, group = "orders", "billing"
        create_topic(server.bootstrap, topic, PARTITIONS)
        started = time.time()
        produce_keyed(producer(server.bootstrap, **{"compression.type": codec}), topic, 0, MESSAGES)
        print(f"  produced {MESSAGES} in {time.time() - started:.1f}s", flush=True)
        started = time.time()
        members = consume_group(server.bootstrap, group, topic, MESSAGES, CONSUMERS)
        print(f"  consumed in {time.time() - started:.1f}s by {[len(m.seen) for m in members]}", flush=True)
        expected = {(f"key-{i % KEYS}", i // KEYS) for i in range(MESSAGES)}
        check_exactly_once_in_order(members, expected)
        assert sum(1 for m in members if m.seen) >= 2, "the group shared the work"
        headers = dict(members[0].seen[0][4])
        assert headers["app-header"].startswith(b"h"), headers
        assert headers["ce_type"] == b"kafka.record", headers
        described = server.get(f"/v1/groups/{group}")
        committed = {(o["partition"]): o["committed"] for o in described["offsets"] if o["topic"] == topic}
        ends = {(o["partition"]): o["end_offset"] for o in described["offsets"] if o["topic"] == topic}
        assert committed == ends and sum(ends.values()) == MESSAGES, described

        server.restart()
        more = 1000
        produce_keyed(producer(server.bootstrap, **{"compression.type": codec}), topic, MESSAGES, more)
        members = consume_group(server.bootstrap, group, topic, more, CONSUMERS)
        expected = {(f"key-{i % KEYS}", i // KEYS) for i in range(MESSAGES, MESSAGES + more)}
        check_exactly_once_in_order(members, expected)
    finally:
        server.close()


def test_every_codec_round_trips():
    server = harness.Server()
    try:
        for codec in CODECS:
            topic = f"codec-{codec}"
            create_topic(server.bootstrap, topic, 1)
            p = producer(server.bootstrap, **{"compression.type": codec})
            produce_keyed(p, topic, 0, 2000)
            c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": f"g-{codec}",
                          "enable.auto.commit": False})
            c.assign([TopicPartition(topic, 0, 0)])
            got = []
            deadline = time.time() + 30
            while len(got) < 2000 and time.time() < deadline:
                for msg in c.consume(num_messages=1000, timeout=0.5):
                    assert not msg.error(), msg.error()
                    got.append(msg.value().decode())
            c.close()
            assert got == [f"key-{i % KEYS}:{i // KEYS}:{'x' * 40}" for i in range(2000)], codec
    finally:
        server.close()


def test_http_and_kafka_see_the_same_topics_and_events():
    server = harness.Server()
    try:
        server.post("/v1/topics", {"name": "from-http", "partitions": 2})
        metadata = AdminClient({"bootstrap.servers": server.bootstrap}).list_topics(timeout=10)
        assert "from-http" in metadata.topics and len(metadata.topics["from-http"].partitions) == 2
        p = producer(server.bootstrap)
        event_id = str(uuid.uuid4())
        p.produce("from-http", key="cust-7", value=b'{"total": 42}', partition=1, headers=[
            ("ce_id", event_id.encode()), ("ce_source", b"/shop"), ("ce_type", b"order.created"),
            ("ce_specversion", b"1.0"), ("ce_subject", b"order-1"), ("ce_tenant", b"acme"),
            ("content-type", b"application/json"), ("trace", b"t-1")])
        assert p.flush(30) == 0
        events = server.get("/v1/topics/from-http/events?partition=1&offset=0")["events"]
        event = events[0]["event"]
        assert event["id"] == event_id and event["source"] == "/shop" and event["type"] == "order.created"
        assert event["subject"] == "order-1" and event["tenant"] == "acme" and event["partitionkey"] == "cust-7"
        assert event["data"] == {"total": 42} and events[0]["key"] == "cust-7"
        server.post("/v1/topics/from-http/events?partition=0", {
            "specversion": "1.0", "id": "h-1", "source": "/http", "type": "made.over.http",
            "partitionkey": "k-http", "data": {"via": "http"}})
        c = Consumer({"bootstrap.servers": server.bootstrap, "group.id": "cross"})
        c.assign([TopicPartition("from-http", 0, 0), TopicPartition("from-http", 1, 0)])
        got = {}
        deadline = time.time() + 20
        while len(got) < 2 and time.time() < deadline:
            for msg in c.consume(num_messages=10, timeout=0.5):
                assert not msg.error(), msg.error()
                got[msg.partition()] = msg
        c.close()
        from_kafka, from_http = got[1], got[0]
        assert from_kafka.value() == b'{"total": 42}' and from_kafka.key() == b"cust-7"
        headers = from_kafka.headers()
        assert ("trace", b"t-1") in headers and ("ce_id", event_id.encode()) in headers, headers
        assert ("content-type", b"application/json") in headers, headers
        assert from_http.key() == b"k-http" and from_http.value() == b'{"via":"http"}'
        assert ("ce_type", b"made.over.http") in from_http.headers()
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(harness.run([
        test_http_and_kafka_see_the_same_topics_and_events,
        test_every_codec_round_trips,
        test_group_exactly_once_commit_restart_resume,
    ]))
