"""Runs a real `herald serve` for the Kafka client tests and a tiny test runner.

Owns: starting the server on free ports in a temporary data directory (the ports come
from its `herald listening http=... kafka=...` line), stopping it with SIGTERM,
restarting it on the same data directory, and running test functions with a closing
`N passed, N failed` line. Does not own: any knowledge of Herald's internals; tests
talk Kafka (and HTTP for cross-protocol checks) only.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STARTUP_TIMEOUT_S = 20


def herald_bin():
    path = os.environ.get("HERALD_BIN", os.path.join(ROOT, "target", "debug", "herald"))
    if not os.path.exists(path):
        raise RuntimeError(f"herald binary not found at {path}: build it first (cargo build -p herald)")
    return path


class Server:
    """A `herald serve` process with its own data directory."""

    def __init__(self, extra_args=()):
        self.root = tempfile.mkdtemp(prefix="herald-kafka-test-")
        self.data_dir = os.path.join(self.root, "data")
        self.extra_args = list(extra_args)
        self.proc = None
        self.stderr_lines = []
        self.start()

    def start(self):
        args = [herald_bin(), "serve", "--data-dir", self.data_dir,
                "--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0", *self.extra_args]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        env["NO_COLOR"] = "1"
        env.setdefault("RUST_LOG", "warn,herald_kafka=info")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        threading.Thread(target=self._drain_stderr, args=(self.proc,), daemon=True).start()
        deadline = time.time() + STARTUP_TIMEOUT_S
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("herald listening"):
                break
            if self.proc.poll() is not None:
                break
        fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
        if "kafka" not in fields:
            self.stop()
            raise RuntimeError(f"herald did not start: {line!r}\n{self.stderr()}")
        self.http = "http://" + fields["http"]
        self.bootstrap = fields["kafka"]

    def _drain_stderr(self, proc):
        for line in proc.stderr:
            self.stderr_lines.append(line)
            del self.stderr_lines[:-400]

    def stderr(self):
        return "".join(self.stderr_lines[-60:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode if self.proc else None
        self.proc = None
        return code

    def kill9(self):
        """Kills the process with SIGKILL (no shutdown: what a crash looks like)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self):
        code = self.stop()
        assert code == 0, f"herald exited with {code} on SIGTERM\n{self.stderr()}"
        self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def get(self, path):
        with urllib.request.urlopen(self.http + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path, body, headers=None):
        request = urllib.request.Request(self.http + path, data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json", **(headers or {})},
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """A private `nats-server -js` on a free 127.0.0.1 port (scripts/test installs it)."""

    def __init__(self):
        if shutil.which("nats-server") is None:
            raise RuntimeError("nats-server is not installed (scripts/test installs the Debian package)")
        self.root = tempfile.mkdtemp(prefix="herald-kafka-nats-")
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port),
             "-sd", os.path.join(self.root, "jetstream")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.time() + STARTUP_TIMEOUT_S
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        self.close()
        raise RuntimeError(f"nats-server did not start on port {self.port}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def run(tests):
    """Runs `tests` (functions), prints each outcome and `N passed, N failed`; exit code."""
    passed = failed = 0
    only = os.environ.get("KAFKA_TEST")
    for test in tests:
        if only and only not in test.__name__:
            continue
        started = time.time()
        try:
            test()
            passed += 1
            print(f"PASS {test.__name__} ({time.time() - started:.1f}s)", flush=True)
        except Exception:  # noqa: BLE001 - report every failure and go on
            failed += 1
            print(f"FAIL {test.__name__} ({time.time() - started:.1f}s)", flush=True)
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit("import this module")
