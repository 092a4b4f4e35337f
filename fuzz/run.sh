#!/usr/bin/env bash
# Fuzzes the Kafka request decoder for a bounded time (default 300 s); not part of CI.
# Needs a nightly toolchain and cargo-fuzz (installed here if missing).
# Crashes land in fuzz/artifacts/kafka_request_decoder/; replay one with
#   cargo +nightly fuzz run kafka_request_decoder fuzz/artifacts/kafka_request_decoder/<file>
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-300}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
mkdir -p corpus/kafka_request_decoder
# Memory really used is capped by -rss_limit_mb; claimed array lengths of 1 GiB and more
# are reserved lazily by herald_kafka::LazyLargeAllocator (as in the herald binary).
cargo +nightly fuzz run kafka_request_decoder corpus/kafka_request_decoder -- \
  -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
