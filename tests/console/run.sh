#!/usr/bin/env bash
# Runs the console's browser tests against a herald binary it is given (it builds nothing):
#   tests/console/run.sh target/debug/herald
# Starts `herald serve` on free ports with a temporary data directory, runs
# console.test.mjs (headless Chromium via playwright-core; `npm ci` here first), stops
# the server and removes the directory. SCREENSHOT_DIR=docs/screenshots refreshes the
# README's screenshots; CHROMIUM_PATH overrides /usr/bin/chromium.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-${HERALD_BIN:-}}"
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "usage: $0 PATH_TO_HERALD_BINARY" >&2
  exit 2
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "playwright-core is missing: run 'npm ci' in $here" >&2
  exit 2
fi
if [ -n "${SCREENSHOT_DIR:-}" ]; then
  mkdir -p "$SCREENSHOT_DIR"
  SCREENSHOT_DIR="$(cd "$SCREENSHOT_DIR" && pwd)"
  export SCREENSHOT_DIR
fi

work="$(mktemp -d -t herald-console-XXXXXX)"
"$bin" serve --data-dir "$work/data" --http-addr 127.0.0.1:0 --no-kafka \
  >"$work/stdout" 2>"$work/stderr" &
pid=$!
# A second server with an auth file: the console must ask for a token and then work.
"$bin" auth --file "$work/auth.json" add-token console-admin --id console >"$work/token"
"$bin" auth --file "$work/auth.json" grant --principal console-admin --resource '*' \
  --pattern '*' --operations all
"$bin" serve --data-dir "$work/auth-data" --http-addr 127.0.0.1:0 --no-kafka \
  --auth-file "$work/auth.json" >"$work/auth-stdout" 2>"$work/auth-stderr" &
auth_pid=$!
stop() {
  for p in "$pid" "$auth_pid"; do
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p"
      wait "$p" || true
    fi
  done
  rm -rf "$work"
}
trap stop EXIT

# The server prints `herald listening http=HOST:PORT` once it serves.
line=""
for _ in $(seq 1 300); do
  line="$(grep -m1 '^herald listening' "$work/stdout" || true)"
  [ -n "$line" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "herald exited before listening:" >&2
    cat "$work/stderr" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$line" ]; then
  echo "herald did not print its listening line within 30 s" >&2
  exit 1
fi
addr="$(sed -n 's/.*http=\([^ ]*\).*/\1/p' <<<"$line")"
auth_line=""
for _ in $(seq 1 300); do
  auth_line="$(grep -m1 '^herald listening' "$work/auth-stdout" || true)"
  [ -n "$auth_line" ] && break
  sleep 0.1
done
if [ -z "$auth_line" ]; then
  echo "the herald with an auth file did not start:" >&2
  cat "$work/auth-stderr" >&2
  exit 1
fi
auth_addr="$(sed -n 's/.*http=\([^ ]*\).*/\1/p' <<<"$auth_line")"
echo "== console tests against http://$addr (data in $work/data)"

status=0
HERALD_URL="http://$addr" HERALD_AUTH_URL="http://$auth_addr" \
  HERALD_AUTH_TOKEN="$(cat "$work/token")" node --test --test-concurrency=1 "$here/console.test.mjs" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- herald stderr (tail) ---" >&2
  tail -n 60 "$work/stderr" >&2
fi
exit "$status"
