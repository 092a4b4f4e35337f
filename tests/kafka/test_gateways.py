"""Stock Kafka clients (confluent-kafka) against two Herald gateways on one JetStream.

The gateways are two nodes of one Kafka cluster: Metadata lists both, any of them takes
produce and fetch, and a consumer group has one coordinator among them (FindCoordinator).
Killing the coordinator's gateway with SIGKILL moves the group to the other gateway: the
members rejoin there, every acknowledged message is consumed at least once, and commits
land on the survivor.

Run: `python3 tests/kafka/test_gateways.py` (HERALD_BIN selects the binary; nats-server
must be installed: scripts/test installs it).
"""

import os
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_confluent import KEYS, create_topic, produce_keyed, producer  # noqa: E402

PARTITIONS = 6
BATCH = 5000
# librdkafka logs every refused connection to the killed gateway: keep only critical ones.
QUIET = 2


def wait_until(condition, timeout_s, what):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class TolerantMember(threading.Thread):
    """A group member that rides out a gateway's death: transient errors are recorded,
    not raised; it commits what it consumed when partitions are revoked and at the end."""

    def __init__(self, bootstrap, group, topic, stop):
        super().__init__(daemon=True)
        self.stop = stop
        self.seen = set()  # (key, seq)
        self.transient = []
        self.error = None
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500, "fetch.wait.max.ms": 200,
            "error_cb": lambda err: self.transient.append(str(err)),
            "log_level": QUIET,
        })
        self.consumer.subscribe([topic], on_revoke=lambda c, p: self.commit())

    def commit(self):
        try:
            self.consumer.commit(asynchronous=False)
            return True
        except KafkaException as e:
            if "NO_OFFSET" in str(e):  # nothing consumed since the last commit
                return True
            self.transient.append(f"commit: {e}")
            return False

    def run(self):
        try:
            while not self.stop.is_set():
                for msg in self.consumer.consume(num_messages=1000, timeout=0.3):
                    if msg.error():
                        if msg.error().fatal():
                            raise KafkaException(msg.error())
                        self.transient.append(str(msg.error()))
                        continue
                    key, seq, _ = msg.value().decode().split(":")
                    self.seen.add((key, int(seq)))
        except Exception as e:  # noqa: BLE001 - surfaced by the test
            self.error = e


def coordinator_port(bootstrap, group):
    """The Kafka port of the group's coordinator, as the cluster reports it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(20)
    return description.coordinator.port


def test_a_group_over_two_gateways_carries_on_when_its_coordinator_dies():
    nats = harness.NatsServer()
    gateways = []
    try:
        args = ["--storage", "jetstream", "--nats-url", nats.url]
        gateways = [harness.Server(args), harness.Server(args)]
        for gateway in gateways:
            wait_until(lambda g=gateway: len(AdminClient({"bootstrap.servers": g.bootstrap})
                                             .list_topics(timeout=10).brokers) == 2,
                       20, f"two brokers in the metadata of {gateway.bootstrap}")
        topic, group = "orders", "billing"
        create_topic(gateways[0].bootstrap, topic, PARTITIONS)
        produce_keyed(producer(gateways[0].bootstrap), topic, 0, BATCH)

        stop = threading.Event()
        # One member bootstraps from each gateway: both must find the same coordinator.
        members = [TolerantMember(g.bootstrap, group, topic, stop) for g in gateways]
        for m in members:
            m.start()
        wait_until(lambda: all(m.seen for m in members) and
                   len(set().union(*(m.seen for m in members))) >= BATCH,
                   60, "both members consuming the first batch")
        port = coordinator_port(gateways[0].bootstrap, group)
        assert coordinator_port(gateways[1].bootstrap, group) == port, "one coordinator"
        ports = [int(g.bootstrap.rsplit(":", 1)[1]) for g in gateways]
        assert port in ports, (port, ports)
        doomed = gateways[ports.index(port)]
        survivor = gateways[1 - ports.index(port)]
        print(f"  coordinator {doomed.bootstrap}, survivor {survivor.bootstrap}", flush=True)

        # Acknowledged by the coordinator's gateway, which then dies mid-consumption.
        produce_keyed(producer(doomed.bootstrap, log_level=QUIET), topic, BATCH, BATCH)
        doomed.kill9()
        produce_keyed(producer(survivor.bootstrap, log_level=QUIET), topic, 2 * BATCH, BATCH)

        expected = {(f"key-{i % KEYS}", i // KEYS) for i in range(3 * BATCH)}
        wait_until(lambda: expected <= set().union(*(m.seen for m in members)), 120,
                   "every acknowledged message consumed after the coordinator died")
        assert all(m.error is None for m in members), [m.error for m in members]
        assert coordinator_port(survivor.bootstrap, group) != port, "the group moved"

        stop.set()
        for m in members:
            m.join(30)
        for m in members:
            wait_until(m.commit, 30, "a final commit on the new coordinator")
            m.consumer.close()
        described = survivor.get(f"/v1/groups/{group}")
        committed = {o["partition"]: o["committed"] for o in described["offsets"] if o["topic"] == topic}
        ends = {o["partition"]: o["end_offset"] for o in described["offsets"] if o["topic"] == topic}
        assert committed == ends and sum(ends.values()) == 3 * BATCH, described
    finally:
        for gateway in gateways:
            gateway.close()
        nats.close()


if __name__ == "__main__":
    sys.exit(harness.run([
        test_a_group_over_two_gateways_carries_on_when_its_coordinator_dies,
    ]))
