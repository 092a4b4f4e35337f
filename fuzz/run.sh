#!/usr/bin/env bash
# Fuzzes Herald's decoders for a bounded time each (default 300 s per target); not part of CI.
#   fuzz/run.sh [seconds] [target...]
# With a nightly toolchain and cargo-fuzz it uses `cargo +nightly fuzz run` (AddressSanitizer).
# Without them it builds the same libFuzzer targets on the stable toolchain with
# SanitizerCoverage instrumentation (the flags cargo-fuzz passes for `--sanitizer none`):
# coverage-guided, but without ASan, which safe Rust needs least.
# Crashes land in fuzz/artifacts/<target>/; replay one by running the target binary on it:
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-300}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^herald-fuzz$')
fi
triple="$(rustc -vV | sed -n 's/^host: //p')"
# FUZZ_MODE=stable forces the stable build even where nightly is installed.
if [ "${FUZZ_MODE:-}" != stable ] && cargo +nightly --version >/dev/null 2>&1 \
    && cargo +nightly fuzz --version >/dev/null 2>&1; then
  mode=nightly
else
  mode=stable
  export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
  cargo build --release --target "$triple" --bins
fi
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  # Memory really used is capped by -rss_limit_mb; claimed array lengths of 1 GiB and more
  # are reserved lazily by herald_kafka::LazyLargeAllocator (as in the herald binary).
  args=(-max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048
        -artifact_prefix="artifacts/$target/" -print_final_stats=1)
  echo "== $target ($mode, ${seconds}s)"
  if [ "$mode" = nightly ]; then
    cargo +nightly fuzz run "$target" "corpus/$target" -- "${args[@]}"
  else
    "target/$triple/release/$target" "corpus/$target" "${args[@]}"
  fi
done
