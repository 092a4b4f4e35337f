"""kcat (Debian's package, librdkafka 2.0) against a real `herald serve`: -L, -P, -C.

Run: `python3 tests/kafka/test_kcat.py` (needs `kcat` on PATH; HERALD_BIN as in harness).
"""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def kcat(*args, stdin=None):
    result = subprocess.run(["kcat", *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kcat {args} failed ({result.returncode}): {result.stderr}"
    return result.stdout


def test_produce_consume_and_metadata():
    assert shutil.which("kcat"), "kcat is not installed"
    server = harness.Server()
    try:
        b = server.bootstrap
        lines = [f"user-{i % 7}:event number {i}" for i in range(500)]
        kcat("-b", b, "-P", "-t", "clicks", "-K:", stdin="\n".join(lines) + "\n")
        out = kcat("-b", b, "-C", "-t", "clicks", "-o", "beginning", "-e", "-q", "-f", "%k:%s\n")
        assert out.splitlines() == lines, out[:500]
        metadata = kcat("-b", b, "-L")
        assert 'topic "clicks" with 1 partitions' in metadata, metadata
        assert "broker 0 at " + b in metadata, metadata
        as_json = json.loads(kcat("-b", b, "-L", "-J"))
        assert "clicks" in [t["topic"] for t in as_json["topics"]], as_json
        # Headers and keys survive; ce_* attributes come back as headers.
        kcat("-b", b, "-P", "-t", "clicks", "-K:", "-H", "trace=abc", stdin="k-h:with header\n")
        out = kcat("-b", b, "-C", "-t", "clicks", "-o", "-1", "-e", "-q", "-f", "%k|%s|%h\n")
        key, value, headers = out.strip().split("|")
        assert (key, value) == ("k-h", "with header"), out
        assert "trace=abc" in headers and "ce_type=kafka.record" in headers, headers
        # The same events over HTTP.
        events = server.get("/v1/topics/clicks/events?offset=0&max=2")["events"]
        assert events[0]["key"] == "user-0" and events[0]["event"]["type"] == "kafka.record", events[0]
    finally:
        server.close()


if __name__ == "__main__":
    sys.exit(harness.run([test_produce_consume_and_metadata]))
