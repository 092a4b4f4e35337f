"""Kafka-protocol produce throughput against Herald with librdkafka (confluent-kafka).

1 KiB messages, acks=all, batched (linger + 1 MB batches), idempotence on by default.
Starts its own `herald serve` (release binary by default) in a temporary data directory
unless --bootstrap points at a running server. Prints one JSON line with the result.

    python3 bench/kafka/produce_bench.py --messages 500000 --partitions 3
"""

import argparse
import json
import os
import platform
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "kafka"))
import harness  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", help="a running server (default: start one)")
    parser.add_argument("--herald-bin", default=os.path.join(ROOT, "target", "release", "herald"))
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--message-bytes", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--compression", default="none")
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--no-idempotence", action="store_true")
    args = parser.parse_args()

    server = None
    bootstrap = args.bootstrap
    if not bootstrap:
        os.environ["HERALD_BIN"] = args.herald_bin
        server = harness.Server()
        bootstrap = server.bootstrap
    try:
        topic = f"bench-{int(time.time())}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for _, f in admin.create_topics([NewTopic(topic, num_partitions=args.partitions, replication_factor=1)]).items():
            f.result(30)
        producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": not args.no_idempotence,
            "linger.ms": args.linger_ms, "batch.size": 1_000_000, "batch.num.messages": 10_000,
            "compression.type": args.compression, "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        })
        payload = os.urandom(args.message_bytes // 2).hex().encode()[: args.message_bytes]
        failures = []

        def delivered(err, _msg):
            if err is not None:
                failures.append(err)

        started = time.perf_counter()
        for i in range(args.messages):
            while True:
                try:
                    producer.produce(topic, key=str(i % 1000).encode(), value=payload, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.01)
            if i % 1000 == 0:
                producer.poll(0)
        left = producer.flush(120)
        elapsed = time.perf_counter() - started
        assert left == 0 and not failures, (left, failures[:3])
        result = {
            "messages": args.messages, "message_bytes": args.message_bytes, "partitions": args.partitions,
            "acks": "all", "idempotence": not args.no_idempotence, "compression": args.compression,
            "linger_ms": args.linger_ms, "seconds": round(elapsed, 3),
            "messages_per_second": round(args.messages / elapsed),
            "mb_per_second": round(args.messages * args.message_bytes / elapsed / 1e6, 1),
            "client": "confluent-kafka", "librdkafka": __import__("confluent_kafka").libversion()[0],
            "python": platform.python_version(),
        }
        if server:
            with open(f"/proc/{server.proc.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            result["server_cpu_seconds"] = round((int(fields[11]) + int(fields[12])) / ticks, 2)
        result["load_average_1m"] = os.getloadavg()[0]
        print(json.dumps(result), flush=True)
    finally:
        if server:
            server.close()


if __name__ == "__main__":
    main()
