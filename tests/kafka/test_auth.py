"""SASL and ACLs on the Kafka listener, with the stock confluent-kafka (librdkafka) client.

A server runs with an auth file written by `herald auth`: `admin` may do everything,
`alice` may produce/consume `orders.*` and use groups `g-*`, `eve` has no rights.
Checks: SASL/PLAIN and SASL/SCRAM-SHA-256 logins work; a wrong password and a client
without SASL are refused; produce/consume/group/metadata outside the grants get Kafka's
authorization errors; nothing granted is affected.
"""

import os
import subprocess
import sys
import tempfile
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import harness

PASSWORDS = {"admin": "admin-" + uuid.uuid4().hex, "alice": "alice-" + uuid.uuid4().hex,
             "eve": "eve-" + uuid.uuid4().hex}


def auth(file, *args, env=None):
    return subprocess.run([harness.herald_bin(), "auth", "--file", file, *args], check=True,
                          capture_output=True, text=True, env=env).stdout.strip()


def make_auth_file():
    path = os.path.join(tempfile.mkdtemp(prefix="herald-auth-"), "auth.json")
    for user, password in PASSWORDS.items():
        auth(path, "add-user", user, "--password-env", "PW", env={**os.environ, "PW": password})
    auth(path, "grant", "--principal", "admin", "--resource", "*", "--pattern", "*", "--operations", "all")
    auth(path, "grant", "--principal", "alice", "--resource", "topic", "--pattern", "orders.*",
         "--operations", "produce,consume")
    auth(path, "grant", "--principal", "alice", "--resource", "group", "--pattern", "g-*",
         "--operations", "consume")
    return path


def sasl(server, user, mechanism="SCRAM-SHA-256", password=None, **extra):
    return {"bootstrap.servers": server.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user,
            "sasl.password": password if password is not None else PASSWORDS[user], **extra}


def produce(config, topic, count, timeout_ms=8000):
    errors = []
    producer = Producer({**config, "message.timeout.ms": timeout_ms})
    for i in range(count):
        producer.produce(topic, key=f"k{i % 7}", value=f"v{i}",
                         on_delivery=lambda err, _msg: errors.append(err) if err else None)
    remaining = producer.flush(timeout_ms / 1000 + 5)
    return errors, remaining


def consume(config, topic, count, deadline_s=30):
    consumer = Consumer({**config, "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    values, errors = [], []
    deadline = time.time() + deadline_s
    try:
        while len(values) < count and time.time() < deadline and not errors:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                errors.append(message.error())
                continue
            values.append(message.value().decode())
        if values:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values, errors


def with_server(test):
    def run():
        server = harness.Server(["--auth-file", make_auth_file()])
        try:
            test(server)
        finally:
            server.close()
    run.__name__ = test.__name__
    return run


@with_server
def test_plain_and_scram_logins_produce_and_consume(server):
    admin = AdminClient(sasl(server, "admin", "PLAIN"))
    for future in admin.create_topics([NewTopic("orders.eu", 2, 1)]).values():
        future.result(15)
    errors, remaining = produce(sasl(server, "alice", "PLAIN"), "orders.eu", 200)
    assert not errors and remaining == 0, (errors[:3], remaining)
    values, errors = consume(sasl(server, "alice", "SCRAM-SHA-256", **{"group.id": "g-1"}), "orders.eu", 200)
    assert not errors, errors[:3]
    assert sorted(values) == sorted(f"v{i}" for i in range(200)), len(values)


@with_server
def test_wrong_password_and_missing_sasl_are_refused(server):
    for mechanism in ("PLAIN", "SCRAM-SHA-256"):
        seen = []
        config = sasl(server, "alice", mechanism, password="not-the-password",
                      error_cb=lambda e: seen.append(e), log_level=0)
        errors, remaining = produce(config, "orders.eu", 1, timeout_ms=2000)
        assert errors or remaining, "a wrong password must not deliver"
        assert any(e.code() == KafkaError._AUTHENTICATION for e in seen), (mechanism, seen)
    # A client that skips SASL is disconnected: metadata never arrives.
    plain = AdminClient({"bootstrap.servers": server.bootstrap})
    try:
        plain.list_topics(timeout=3)
        raise AssertionError("metadata without SASL must fail")
    except KafkaException:
        pass
    assert PASSWORDS["alice"] not in server.stderr()


@with_server
def test_acls_deny_what_was_not_granted(server):
    admin = AdminClient(sasl(server, "admin"))
    for future in admin.create_topics([NewTopic("orders.us", 1, 1), NewTopic("payments", 1, 1)]).values():
        future.result(15)
    # Produce outside the grant: TOPIC_AUTHORIZATION_FAILED for every message.
    errors, _ = produce(sasl(server, "alice"), "payments", 3)
    assert errors and all(e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED for e in errors), errors
    # Creating a topic needs `create`.
    alice_admin = AdminClient(sasl(server, "alice"))
    failure = alice_admin.create_topics([NewTopic("orders.new", 1, 1)])["orders.new"].exception(15)
    assert failure is not None and failure.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, failure
    # Metadata shows only what a principal may see.
    assert set(alice_admin.list_topics(timeout=10).topics) == {"orders.us"}
    assert set(AdminClient(sasl(server, "eve")).list_topics(timeout=10).topics) == set()
    assert {"orders.us", "payments"} <= set(admin.list_topics(timeout=10).topics)
    # A group outside g-* is refused.
    errors, _ = produce(sasl(server, "admin"), "orders.us", 5)
    assert not errors
    _, errors = consume(sasl(server, "alice", **{"group.id": "other"}), "orders.us", 5, deadline_s=15)
    assert errors and errors[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED, errors
    # eve may not read orders.us even in an allowed-looking group.
    _, errors = consume(sasl(server, "eve", **{"group.id": "g-2"}), "orders.us", 5, deadline_s=15)
    assert errors, "eve must be refused"
    # And nothing alice may do was affected.
    values, errors = consume(sasl(server, "alice", **{"group.id": "g-3"}), "orders.us", 5)
    assert not errors and len(values) == 5, (values, errors)


def self_signed_cert(directory):
    """A throw-away certificate for 127.0.0.1 (openssl, installed by scripts/test)."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def test_sasl_over_tls():
    directory = tempfile.mkdtemp(prefix="herald-tls-")
    cert, key = self_signed_cert(directory)
    server = harness.Server(["--auth-file", make_auth_file(), "--tls-cert", cert, "--tls-key", key])
    try:
        tls = {"security.protocol": "SASL_SSL", "ssl.ca.location": cert}
        alice = {**sasl(server, "alice"), **tls}
        admin = AdminClient({**sasl(server, "admin"), **tls})
        for future in admin.create_topics([NewTopic("orders.tls", 1, 1)]).values():
            future.result(15)
        errors, remaining = produce(alice, "orders.tls", 50)
        assert not errors and remaining == 0, (errors[:3], remaining)
        values, errors = consume({**alice, "group.id": "g-tls"}, "orders.tls", 50)
        assert not errors and len(values) == 50, (len(values), errors[:3])
        # SASL over plaintext to the TLS port gets nowhere.
        plain = AdminClient({**sasl(server, "admin"), "log_level": 0})
        try:
            plain.list_topics(timeout=3)
            raise AssertionError("plaintext to the TLS listener must fail")
        except KafkaException:
            pass
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(harness.run([
        test_sasl_over_tls,
        test_plain_and_scram_logins_produce_and_consume,
        test_wrong_password_and_missing_sasl_are_refused,
        test_acls_deny_what_was_not_granted,
    ]))
